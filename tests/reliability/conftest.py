"""The fault-injection suite shares the engine tests' tiny problem and subprocess helpers
(tests/training/conftest.py): the same fixtures, loaded from there by path."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_NAME = "spectral_training_tests_training_conftest"
if _NAME not in sys.modules:
    _spec = importlib.util.spec_from_file_location(_NAME, Path(__file__).resolve().parents[1] / "training" / "conftest.py")
    sys.modules[_NAME] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules[_NAME])
_training = sys.modules[_NAME]

tiny = _training.tiny
script_tools = _training.script_tools
_single_thread = _training._single_thread  # autouse: one thread, for bit-identical comparisons
write_script = _training.write_script
start_script = _training.start_script

