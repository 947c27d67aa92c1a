"""Project commands added to `kedro`: `kedro params` prints a run's resolved parameters."""

from __future__ import annotations

from pathlib import Path

import click
import yaml
from kedro.framework.cli.project import run  # noqa: F401  (kedro looks up `run` in this module)
from kedro.framework.cli.utils import _split_params
from kedro.framework.project import pipelines
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project


@click.group(name="spectral_training")
def cli() -> None:
    """Spectral Training project commands."""


def _top_level_params(pipeline_name: str | None, params: dict) -> dict:
    if pipeline_name is None:
        return params
    if pipeline_name not in pipelines:
        raise click.BadParameter(f"unknown pipeline '{pipeline_name}'; known: {', '.join(sorted(pipelines))}")
    used = {name.split(":", 1)[1].split(".")[0] for name in pipelines[pipeline_name].inputs() if name.startswith("params:")}
    return {key: value for key, value in params.items() if key in used or key == "dataset"}


@cli.command("params")
@click.option("--pipeline", "-p", "pipeline_name", default=None, help="Only the parameters this pipeline reads.")
@click.option("--params", "runtime_params", default="", callback=_split_params,
              help="The same overrides `kedro run --params` takes, e.g. mae.model.variant=small.")
@click.option("--env", "-e", default=None, help="Configuration environment, as for `kedro run`.")
def show_params(pipeline_name: str | None, runtime_params: dict, env: str | None) -> None:
    """Print the fully resolved parameters of a run, without running it."""
    project = Path.cwd()
    bootstrap_project(project)
    with KedroSession.create(project_path=project, env=env, runtime_params=runtime_params) as session:
        params = session.load_context().params
    shown = _top_level_params(pipeline_name, params)
    if pipeline_name is not None:
        shown.update(_resolved_family(pipelines[pipeline_name], params))
    click.echo(yaml.safe_dump(shown, sort_keys=False, default_flow_style=False))


def _resolved_family(pipeline, params: dict) -> dict:
    """``{"resolved_family": {<family>: the block a run would train with}}`` for a training pipeline."""
    from spectral_training import families
    from spectral_training.pipelines.family_stage import stage_of

    stage = stage_of(pipeline)
    if stage is None:
        return {}
    name = stage.family or params.get("family")
    resolved = families.resolve(name, params.get(stage.block), *(params.get(d) for d in stage.defaults),
                                pipeline=stage.pipeline)
    return {"resolved_family": resolved}


@cli.command("diagnostics")
@click.option("--params", "runtime_params", default="", callback=_split_params,
              help="e.g. dataset=indian_pines (the same overrides `kedro run --params` takes).")
@click.option("--env", "-e", default=None, help="Configuration environment, as for `kedro run`.")
def diagnostics(runtime_params: dict, env: str | None) -> None:
    """Print the environment and the health of a dataset's store, stats, transform report and checkpoint."""
    from spectral_training.diagnostics import collect, format_report

    project = Path.cwd()
    bootstrap_project(project)
    with KedroSession.create(project_path=project, env=env, runtime_params=runtime_params) as session:
        context = session.load_context()
        catalog = context.catalog

        def load(name: str):
            try:
                return catalog.load(name) if catalog.exists(name) else None
            except Exception as err:  # a damaged artifact is a finding, not a crash
                click.echo(f"could not load {name}: {err}", err=True)
                return None

        from spectral_training.pipelines.family_stage import STAGES

        others = {stage.pipeline: load(stage.model) for stage in STAGES if stage.model != "mae_model"}
        report = collect(load("cube_store"), load("sample_index"), load("band_stats"), load("transform_report"),
                         load("mae_model"), models=others)
    click.echo(f"dataset: {context.params.get('dataset')}")
    click.echo(format_report(report))
