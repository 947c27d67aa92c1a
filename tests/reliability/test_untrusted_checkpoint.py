"""A checkpoint file is data, never code."""

from __future__ import annotations

import os

import pytest
import torch

from spectral_training.training import CheckpointError, load_checkpoint


class _RunsCode:
    """Unpickling this calls os.system: what a malicious .pt file carries."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_a_checkpoint_carrying_pickled_code_is_refused_and_the_code_never_runs(tmp_path):
    """Promise: loading an untrusted checkpoint whose pickle would run code (torch.load with
    weights_only=True) fails with a CheckpointError naming the file and the refused object, and the
    code does not run."""
    marker = tmp_path / "code_ran"
    path = tmp_path / "last.pt"
    torch.save({"format_version": 1, "model": {}, "payload": _RunsCode(f"touch {marker}")}, path)

    refused = r"last\.pt: refused: it holds pickled Python objects.*posix\.system.*It was not loaded"
    with pytest.raises(CheckpointError, match=refused):
        load_checkpoint(path)
    assert not marker.exists()
