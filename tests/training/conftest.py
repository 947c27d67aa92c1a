"""Fixtures for the training engine tests: the tiny problem and a subprocess script runner."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest
import torch

TINY_PROBLEM_PATH = Path(__file__).with_name("tiny_problem.py")
_MODULE_NAME = "spectral_training_tests_tiny_problem"  # unique: tests are not packages


def _load_tiny_problem() -> ModuleType:
    if _MODULE_NAME in sys.modules:
        return sys.modules[_MODULE_NAME]
    spec = importlib.util.spec_from_file_location(_MODULE_NAME, TINY_PROBLEM_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[_MODULE_NAME] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tiny() -> ModuleType:
    """The tiny_problem module (dataset, model, config and train helpers)."""
    return _load_tiny_problem()


@pytest.fixture(autouse=True)
def _single_thread():
    # Bit-identical comparisons with subprocess runs need the same kernels; one thread also
    # keeps the shared CI cores free.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


SCRIPT_HEADER = f"""
import importlib.util, os, signal, sys, time
from pathlib import Path
import torch
torch.set_num_threads(1)
spec = importlib.util.spec_from_file_location({_MODULE_NAME!r}, {str(TINY_PROBLEM_PATH)!r})
tiny = importlib.util.module_from_spec(spec)
sys.modules[{_MODULE_NAME!r}] = tiny
spec.loader.exec_module(tiny)
from spectral_training.training import TrainingCallback
"""


def write_script(directory: Path, name: str, body: str) -> Path:
    """Write a training script (SCRIPT_HEADER + dedented body) to directory/name."""
    path = directory / name
    path.write_text(SCRIPT_HEADER + textwrap.dedent(body))
    return path


def start_script(path: Path, *args: str) -> subprocess.Popen:
    """Start a script with the project's interpreter; stdout+stderr captured together."""
    environment = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, str(path), *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=environment)


@pytest.fixture
def script_tools():
    """(write_script, start_script) for subprocess tests."""
    return write_script, start_script
