"""train.compile: the training forward runs through torch.compile, checkpoints stay plain."""

from __future__ import annotations

import pytest
import torch

from spectral_training.training import TrainConfig
from spectral_training.training.config import ConfigError


def test_compiled_training_learns_and_writes_plain_checkpoints(tiny, tmp_path, monkeypatch):
    compiled = []
    real_compile = torch.compile

    def spy(module, **kwargs):  # the real torch.compile, recorded
        compiled.append((type(module).__name__, kwargs))
        return real_compile(module, **kwargs)

    monkeypatch.setattr(torch, "compile", spy)
    # aot_eager: dynamo traces and AOTAutograd splits forward and backward, as with inductor,
    # without spending a minute on generated C++ code.
    model, result = tiny.train(tmp_path, epochs=3, augment=False, compile=True, compile_backend="aot_eager")

    assert compiled == [("TinyAutoencoder", {"backend": "aot_eager", "mode": None})]
    assert result.stopped_reason == "completed"
    assert result.history[-1]["train_loss"] < 0.95 * result.history[0]["train_loss"]
    state = torch.load(tmp_path / "last.pt", weights_only=False)["model"]
    assert set(state) == set(model.state_dict())  # no "_orig_mod." prefix: a plain model loads it
    assert not any(key.startswith("_orig_mod") for key in state)


def test_compiled_and_eager_training_reach_the_same_weights(tiny, tmp_path):
    eager_model, _ = tiny.train(tmp_path / "eager", epochs=1, augment=False)
    compiled_model, _ = tiny.train(tmp_path / "compiled", epochs=1, augment=False, compile=True,
                                   compile_backend="aot_eager")
    for name, value in eager_model.state_dict().items():
        torch.testing.assert_close(compiled_model.state_dict()[name], value, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("value", [True, False, "default", "max-autotune", "reduce-overhead"])
def test_compile_accepts_booleans_and_torch_modes(value):
    assert TrainConfig.from_dict({"compile": value}).compile == value


def test_an_unknown_compile_mode_names_the_setting_and_the_choices():
    with pytest.raises(ConfigError, match=r"'compile' = 'fast'.*max-autotune"):
        TrainConfig.from_dict({"compile": "fast"})


def test_inductor_on_a_cpu_without_a_cpp_compiler_is_a_clear_error(tiny, tmp_path, monkeypatch):
    from spectral_training.training import compilation

    monkeypatch.setattr(compilation.shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match=r"C\+\+ compiler.*train.compile=false"):
        tiny.train(tmp_path, epochs=1, compile=True)
