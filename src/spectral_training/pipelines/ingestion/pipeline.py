"""ingestion: scan, validate and tile a raw folder into the dataset's HDF5 cube store."""

from kedro.pipeline import Pipeline, node

from .nodes import append_tiles, index_and_report, scan_raw_files


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        node(scan_raw_files, inputs=["raw_cubes", "params:dataset", "params:ingestion"], outputs="ingestion_plan",
             name="scan_raw_files"),
        node(append_tiles, inputs=["ingestion_plan", "params:ingestion"], outputs="cube_store", name="append_tiles"),
        node(index_and_report, inputs=["cube_store", "ingestion_plan", "params:ingestion"],
             outputs=["sample_index", "ingestion_report"], name="index_and_report"),
    ])
