"""A study in its own process, for the test that kills it: `python study_worker.py <folder> <tune settings JSON>`.

<folder> holds the tiny store (cubes.h5), its index (sample_index.parquet) and band stats (band_stats.json).
"""

import json
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1] / "families")]

import pandas as pd  # noqa: E402
import torch  # noqa: E402
from tune_data import tiny_plan  # noqa: E402

from spectral_training import tuning  # noqa: E402
from spectral_training.cubes.store import CubeStore  # noqa: E402

if __name__ == "__main__":
    torch.set_num_threads(1)  # as the tests' own process (tests/tune/conftest.py)
    folder, settings = Path(sys.argv[1]), json.loads(sys.argv[2])
    data = (CubeStore(folder / "cubes.h5"), pd.read_parquet(folder / "sample_index.parquet"),
            json.loads((folder / "band_stats.json").read_text()))
    tuning.run_study(tiny_plan(folder, **settings), *data, folder / "models")
