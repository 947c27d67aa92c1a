"""The committed Airflow DAG of `mae_pretrain` (airflow_dags/), written by kedro-airflow.

apache-airflow is not a dependency of the project: the DAG is checked as Python source (it parses and
compiles), against the pipeline (every node in exactly one task, every task after the tasks whose
outputs it reads, those outputs saved by the catalog rather than held in memory), and against what
`kedro airflow create` writes now from conf/base/airflow.yml, so it cannot go stale (that check shares
the project copy of tests/reliability/test_reruns.py, where it runs beside a `kedro run`).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml
from project_copy import PROJECT_ROOT

DAG_FILE = PROJECT_ROOT / "airflow_dags" / "spectral_training_mae_pretrain_dag.py"


def _tasks(source: str) -> tuple[dict[str, list[str]], set[tuple[str, str]]]:
    """``{task id: node names}`` and the ``(upstream, downstream)`` task edges of a generated DAG."""
    tree = ast.parse(source)
    tasks: dict[str, list[str]] = {}
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef):
            continue
        [task_id] = [d.keywords[0].value.value for d in function.decorator_list
                     if isinstance(d, ast.Call) and getattr(d.func, "id", None) == "task"] or [None]
        if task_id is None:
            continue
        [call] = [c for c in ast.walk(function) if isinstance(c, ast.Call) and getattr(c.func, "id", None) == "_run_kedro_node"]
        [keyword] = [k for k in call.keywords if k.arg == "node_names"]
        tasks[task_id] = [element.value for element in keyword.value.elts]
    edges = set(re.findall(r'tasks\["([^"]+)"\] >> tasks\["([^"]+)"\]', source))
    return tasks, edges


def test_the_dag_is_valid_python_that_runs_every_node_of_mae_pretrain_in_dependency_order():
    """Promise: the committed DAG compiles, runs every node of `mae_pretrain` once, each task after the
    tasks it reads from, and tasks only hand each other datasets that the catalog saves to disk."""
    from spectral_training.pipeline_registry import register_pipelines

    source = DAG_FILE.read_text()
    compile(source, str(DAG_FILE), "exec")
    tasks, edges = _tasks(source)
    pipeline = register_pipelines()["mae_pretrain"]
    task_of = {node: task for task, nodes in tasks.items() for node in nodes}
    named = [node for nodes in tasks.values() for node in nodes]
    assert sorted(named) == sorted(n.name for n in pipeline.nodes), "every node of mae_pretrain, each once"
    catalog = {}
    for path in (PROJECT_ROOT / "conf" / "base").glob("catalog*.yml"):
        catalog.update(yaml.safe_load(path.read_text()) or {})
    producer = {output: node.name for node in pipeline.nodes for output in node.outputs}
    for node in pipeline.nodes:
        for dataset in node.inputs:
            if dataset in producer and task_of[producer[dataset]] != task_of[node.name]:
                assert (task_of[producer[dataset]], task_of[node.name]) in edges, (dataset, node.name)
                assert dataset in catalog, f"{dataset} crosses tasks but is not saved by the catalog"
    schedule = yaml.safe_load((PROJECT_ROOT / "conf" / "base" / "airflow.yml").read_text())["mae_pretrain"]
    assert f'schedule="{schedule["schedule"]}"' in source and f"max_active_runs={schedule['max_active_runs']}" in source

