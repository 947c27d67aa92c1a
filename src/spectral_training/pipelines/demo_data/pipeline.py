"""demo_data: writes the bundled Indian Pines scene into data/01_raw/indian_pines/ and the
synthetic Sentinel-2-like series into data/01_raw/sits_demo/."""

from kedro.pipeline import Pipeline, node

from .nodes import write_demo_files, write_sits_demo_files


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        node(write_demo_files, inputs="params:demo_data", outputs="demo_raw_cubes", name="write_demo_files"),
        node(write_sits_demo_files, inputs="params:demo_data", outputs="demo_raw_series", name="write_sits_demo_files"),
    ])
