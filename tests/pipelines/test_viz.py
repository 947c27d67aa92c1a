"""`kedro viz build` writes a static site that draws the default pipeline (`mae_pretrain`).

The build is checked twice: through the JSON it serves (`build/api/main`), which says what the
page will draw, and through the page itself, opened in headless Chromium from a local HTTP server
(a `file://` page cannot fetch its own `api/` JSON). Chromium comes from Debian's `chromium`
package, installed by `make browser` (never by a test). Without it the browser tests fail when
SPECTRAL_REQUIRE_BROWSER=1 (set by `make test` and so by `.ci/run`) and skip, saying why, otherwise.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest
import yaml
from project_copy import make_kedro_project

pytestmark = pytest.mark.e2e

PROJECT_ROOT = Path(__file__).resolve().parents[2]

# Flags that let Chromium run headless as root on a machine with a closed network.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)

# The default pipeline, as `kedro registry list` names its parts.
TASK_NODES = (
    "scan_raw_files",
    "append_tiles",
    "index_and_report",
    "compute_band_stats",
    "resolve_mae_params",
    "validate_transforms",
    "train_mae",
    "evaluate_reconstruction",
)
NAMESPACES = ("data_preparation", "transform_validation", "mae")
LAYERS = ("raw", "intermediate", "primary", "models", "reporting")  # upstream to downstream
PARAMETERS = ("params:ingestion", "params:mae", "params:training_defaults", "params:validation")


def _pretty(name: str) -> str:
    """The label kedro-viz draws when its "Pretty name" setting is on (12.5 starts with it off)."""
    return name.replace("_", " ").title()


def _tail(text: str, chars: int = 1500) -> str:
    return text.strip()[-chars:]


REQUIRE_BROWSER = "SPECTRAL_REQUIRE_BROWSER"  # set to 1 by `make test` / .ci/run: no browser is a failure


def _no_browser(reason: str) -> None:
    """Fail when the run requires the browser (CI, `make test`), else skip with the reason and the fix."""
    message = f"{reason}; install it with `make browser` (Debian's chromium package)"
    if os.environ.get(REQUIRE_BROWSER) == "1":
        pytest.fail(f"{message}. {REQUIRE_BROWSER}=1 says this run must check the page in a browser")
    pytest.skip(f"{message} (or set {REQUIRE_BROWSER}=1 to make this a failure)")


@pytest.fixture(scope="module")
def chromium() -> str:
    """Path to a working headless Chromium. Tests never install it: `make browser` does, as an explicit
    set-up step that `.ci/run` calls before `make test`."""
    found = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if found is None:
        _no_browser("Chromium is not installed")
    try:
        version = subprocess.run([found, *CHROMIUM_FLAGS, "--version"], stdin=subprocess.DEVNULL,
                                 capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        _no_browser(f"Chromium at {found} does not start: {error}")
    if version.returncode != 0:
        _no_browser(f"Chromium at {found} does not start (exit {version.returncode}): {_tail(version.stderr, 600)}")
    return found


@pytest.fixture(scope="module")
def viz_build(tmp_path_factory) -> Path:
    """`kedro viz build` in a throwaway copy of the project, made as `kedro_project` makes it.

    Module-scoped (the build takes 15-30 s), so it cannot use the function-scoped `kedro_project`.
    """
    project = make_kedro_project(tmp_path_factory.mktemp("viz") / "project")
    root = project.root
    done = project.kedro("viz", "build", timeout=300)
    assert done.returncode == 0, _tail(done.stdout, 3000) + _tail(done.stderr, 3000)
    build = root / "build"
    assert (build / "index.html").is_file() and (build / "api" / "main").is_file(), sorted(
        p.name for p in build.iterdir())
    return build


@pytest.fixture(scope="module")
def site(viz_build) -> str:
    """The build served over HTTP on 127.0.0.1 (a free port) from a thread; yields its base URL."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(viz_build)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _chromium(chromium: str, *args: str, timeout: int = 90) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        return subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)


def _main(viz_build: Path) -> dict:
    return json.loads((viz_build / "api" / "main").read_text())


def test_viz_build_lists_the_default_pipelines_nodes_in_their_namespaces(viz_build):
    main = _main(viz_build)
    assert main["selected_pipeline"] == "__default__"
    nodes = {node["name"]: node for node in main["nodes"]}
    for name in TASK_NODES:
        assert name in nodes and nodes[name]["type"] == "task", f"task node {name} missing from api/main"
        assert "__default__" in nodes[name]["pipelines"]
    assert nodes["scan_raw_files"]["modular_pipelines"] == ["data_preparation"]
    assert nodes["validate_transforms"]["modular_pipelines"] == ["transform_validation"]
    assert nodes["train_mae"]["modular_pipelines"] == ["mae"]
    for namespace in NAMESPACES:
        assert nodes[namespace]["type"] == "modularPipeline"
        assert namespace in main["modular_pipelines"]
    for name in PARAMETERS:
        assert nodes[name]["type"] == "parameters", f"{name} is not drawn as a parameters node"
    pipelines = {p["id"] for p in main["pipelines"]}
    assert {"mae_pretrain", "ingestion", "mae_training", "mae_evaluation", "__default__"} <= pipelines
    assert (viz_build / "api" / "pipelines" / "mae_pretrain").is_file()


def test_viz_build_gives_every_catalog_entry_its_layer(viz_build):
    catalog = yaml.safe_load((PROJECT_ROOT / "conf" / "base" / "catalog.yml").read_text())
    declared = {name: entry["metadata"]["kedro-viz"]["layer"] for name, entry in catalog.items()
                if not name.startswith("_") and "layer" in (entry.get("metadata") or {}).get("kedro-viz", {})}
    nodes = {node["name"]: node for node in _main(viz_build)["nodes"] if node["type"] == "data"}
    assert nodes, "api/main lists no datasets"
    assert {name: node["layer"] for name, node in nodes.items()} == {name: declared.get(name) for name in nodes}
    assert set(LAYERS) <= {node["layer"] for node in nodes.values()}


def test_viz_build_draws_the_layers_in_order(viz_build):
    # kedro-viz drops every layer band (with a warning) when the catalog's layers form a cycle.
    layers = _main(viz_build)["layers"]
    assert set(LAYERS) <= set(layers), (
        f"api/main lists layers {layers}: kedro-viz turns layers off when they form a cycle, that is when a "
        "dataset of a later layer feeds a node that writes an earlier one (see `kedro viz build`'s warning)")
    assert [layer for layer in layers if layer in LAYERS] == list(LAYERS)


@pytest.fixture(scope="module")
def page(chromium, site, tmp_path_factory) -> dict:
    """The default pipeline's page after Chromium ran its scripts: the DOM and a screenshot."""
    url = f"{site}/?pid=__default__&expandAllPipelines=true&types=nodes,datasets,parameters"
    out = tmp_path_factory.mktemp("page")
    dom = _chromium(chromium, "--virtual-time-budget=15000", "--window-size=1600,1000", "--dump-dom", url)
    assert dom.returncode == 0, _tail(dom.stderr)
    (out / "kedro-viz.html").write_text(dom.stdout)
    screenshot = out / "kedro-viz.png"
    shot = _chromium(chromium, "--virtual-time-budget=15000", "--window-size=1600,1000",
                     f"--screenshot={screenshot}", url)
    assert shot.returncode == 0 and screenshot.is_file(), _tail(shot.stderr)
    return {"html": dom.stdout, "screenshot": screenshot}


def test_the_built_page_draws_every_node_of_the_default_pipeline_in_chromium(page, viz_build):
    html, screenshot = page["html"], page["screenshot"]
    assert screenshot.stat().st_size > 20_000, f"blank screenshot: {screenshot}"
    drawn = re.findall(r'class="pipeline-node__text"[^>]*>([^<]+)<', html)
    assert drawn, f"no flowchart node drawn (see {screenshot})"
    expected = [node for node in _main(viz_build)["nodes"]
                if node["type"] != "modularPipeline" and "__default__" in node["pipelines"]]
    missing = [node["name"] for node in expected if node["name"] not in drawn and _pretty(node["name"]) not in drawn]
    assert not missing, f"not drawn: {missing} (see {screenshot})"
    kinds = {kind: len(re.findall(rf'class="pipeline-node pipeline-node--{kind}\b', html))
             for kind in ("task", "data", "parameters")}
    wanted = {kind: sum(node["type"] == kind for node in expected) for kind in kinds}
    assert kinds == wanted, f"drawn {kinds}, api/main has {wanted} (see {screenshot})"
    for namespace in NAMESPACES:  # the sidebar's tree groups the nodes by namespace
        assert f'data-test="node-list-tree-item--row--{namespace}"' in html, f"{namespace} not in the node list"


def test_the_built_page_draws_the_layer_bands_in_chromium(page):
    names = re.findall(r'class="pipeline-layer-name[^"]*"[^>]*>([^<]+)<', page["html"])
    drawn = [name.strip().lower() for name in names]
    assert [name for name in drawn if name in LAYERS] == list(LAYERS), (
        f"layer bands drawn: {drawn} (see {page['screenshot']})")
