"""device: auto picks CUDA, then Apple MPS, then the CPU; num_workers: auto follows the core count."""

from __future__ import annotations

import pytest
import torch

from spectral_training.training import ConfigError, TrainConfig
from spectral_training.training import device as device_module
from spectral_training.training.device import resolve_device, resolve_num_workers


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"),
    [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")],
)
def test_auto_device_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(device_module, "mps_available", lambda: mps)
    assert resolve_device("auto").type == expected


def test_an_explicit_device_this_machine_lacks_is_an_error_naming_it(monkeypatch):
    monkeypatch.setattr(device_module, "mps_available", lambda: False)
    with pytest.raises(ConfigError, match="'mps' but this machine has cpu"):
        resolve_device("mps")
    with pytest.raises(ConfigError, match="not supported"):
        resolve_device("xla")
    assert resolve_device("cpu") == torch.device("cpu")


def test_train_config_carries_the_device_setting():
    assert TrainConfig().device == "auto"
    assert TrainConfig.from_dict({"device": "cpu"}).device == "cpu"
    with pytest.raises(ConfigError, match="'device'"):
        TrainConfig.from_dict({"device": 0})


@pytest.mark.parametrize(("cores", "workers"), [(1, 0), (2, 0), (4, 2), (16, 8)])
def test_auto_workers_follow_the_core_count(cores, workers):
    assert resolve_num_workers("auto", cores=cores) == workers


def test_num_workers_rejects_anything_but_auto_or_a_count():
    assert resolve_num_workers(3) == 3
    for bad in (-1, "four", True, 1.5):
        with pytest.raises(ConfigError, match="num_workers"):
            resolve_num_workers(bad)


def test_make_loader_takes_auto_workers(monkeypatch):
    from spectral_training.training import make_loader

    monkeypatch.setattr(device_module, "cpu_cores", lambda: 2)
    loader = make_loader([{"cube": torch.zeros(1)}] * 4, batch_size=2, shuffle=False, num_workers="auto")
    assert loader.num_workers == 0
