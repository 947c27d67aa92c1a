"""TrainConfig: built from plain dicts, with errors that name the source, the field and the fix."""

from __future__ import annotations

import pytest
import torch

from spectral_training.training import ConfigError, TrainConfig


def test_from_dict_takes_yaml_values_and_keeps_defaults():
    config = TrainConfig.from_dict({"epochs": 3, "lr": 1, "betas": [0.9, 0.95], "layer_decay": 0.75})
    assert config.epochs == 3
    assert config.lr == 1.0 and isinstance(config.lr, float)
    assert config.betas == (0.9, 0.95)
    assert config.scheduler == "cosine" and config.amp == "auto" and config.resume == "auto"


def test_unknown_key_is_refused_with_a_suggestion_and_the_source():
    with pytest.raises(ConfigError, match=r"^params\.yml: unknown training setting\(s\) 'epoch' \(did you mean 'epochs'\?\)"):
        TrainConfig.from_dict({"epoch": 3}, source="params.yml")


@pytest.mark.parametrize(
    "settings, field",
    [
        ({"epochs": 0}, "epochs"),
        ({"epochs": 2.5}, "epochs"),
        ({"amp": "fp8"}, "amp"),
        ({"resume": "yes"}, "resume"),
        ({"scheduler": "plateau"}, "scheduler"),
        ({"betas": [0.9]}, "betas"),
        ({"accumulation_steps": True}, "accumulation_steps"),
        ({"rollback_lr_factor": 2.0}, "rollback_lr_factor"),
        ({"mode": "maximum"}, "mode"),
        ({"monitor": ""}, "monitor"),
    ],
)
def test_wrong_values_name_the_field(settings, field):
    with pytest.raises(ConfigError, match=f"'{field}'"):
        TrainConfig.from_dict(settings)


def test_mode_must_be_min_or_max_and_the_message_says_which_is_which():
    with pytest.raises(ConfigError, match=r"^run\.yml: setting 'mode' = 'maximum'; expected 'min' .*or 'max'"):
        TrainConfig.from_dict({"mode": "maximum"}, source="run.yml")


def test_monitor_takes_the_tracking_spelling_and_is_resume_safe():
    from spectral_training.training.config import RESUME_SAFE_FIELDS

    config = TrainConfig.from_dict({"monitor": "val/macro_f1", "mode": "max"})
    assert (config.monitor, config.mode) == ("val_macro_f1", "max")
    assert (TrainConfig().monitor, TrainConfig().mode) == ("val_loss", "min")
    assert {"monitor", "mode"} <= RESUME_SAFE_FIELDS


def test_to_dict_is_plain_and_round_trips():
    config = TrainConfig(epochs=4, betas=(0.8, 0.9), optimizer_kwargs={"eps": 1e-6})
    plain = config.to_dict()
    assert plain["betas"] == [0.8, 0.9]
    assert TrainConfig.from_dict(plain) == config
    # a config dict must survive a weights_only checkpoint round trip
    torch.save(plain, buffer := __import__("io").BytesIO())
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True) == plain


def test_amp_off_read_by_yaml_as_false_means_off():
    assert TrainConfig.from_dict({"amp": False}).amp == "off"


def test_process_settings_are_checked():
    """nproc_per_node / nnodes must be >= 1, and several nodes need a rendezvous endpoint."""
    assert TrainConfig.from_dict({"nproc_per_node": 4}).nproc_per_node == 4
    with pytest.raises(ConfigError, match="nproc_per_node"):
        TrainConfig.from_dict({"nproc_per_node": 0})
    with pytest.raises(ConfigError, match="rdzv_endpoint.*host:port"):
        TrainConfig.from_dict({"nnodes": 2})
    assert TrainConfig.from_dict({"nnodes": 2, "rdzv_endpoint": "node01:29500"}).nnodes == 2
