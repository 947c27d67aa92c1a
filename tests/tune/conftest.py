"""Make `tune_data.py` (and the families' `family_data.py`) importable from this folder's tests."""

import sys
from pathlib import Path

for _folder in (Path(__file__).parent, Path(__file__).parents[1] / "families"):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))


import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models train in one thread; more only wait on each other on a busy machine (seconds per epoch)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
