"""demo_data: writes the bundled Indian Pines scene into data/01_raw/indian_pines/."""

from kedro.pipeline import Pipeline, node

from .nodes import write_demo_files


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        node(write_demo_files, inputs="params:demo_data", outputs="demo_raw_cubes", name="write_demo_files"),
    ])
