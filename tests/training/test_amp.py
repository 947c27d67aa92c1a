"""Mixed precision on CPU: bf16 autocast works; fp16 is mapped to bf16 with a warning, never run."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from torch import nn

from spectral_training.training import TrainingCallback, fit, resolve_amp


class Bf16LossModel(nn.Module):
    """Returns its loss in whatever dtype autocast produced (bf16 here), to check the fp32 cast."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(64, 64)
        self.loss_dtypes: list[torch.dtype] = []

    def forward(self, cube):
        flat = cube.flatten(1)
        output = self.layer(flat)  # bf16 under CPU autocast
        loss = ((output.float() - flat) ** 2).mean().to(output.dtype)
        self.loss_dtypes.append(loss.dtype)
        return {"loss": loss}


def test_bf16_autocast_on_cpu_trains_to_a_finite_fp32_loss(tiny, tmp_path):
    model = Bf16LossModel()
    losses = []

    class Losses(TrainingCallback):
        def on_step_end(self, step, metrics):
            losses.append(metrics["train_loss"])

    train_loader, val_loader = tiny.build_loaders(train_count=16)
    result = fit(model, train_loader, val_loader, tiny.tiny_config(epochs=1, amp="bf16"), run_dir=tmp_path,
                 callbacks=[Losses()])

    assert set(model.loss_dtypes) == {torch.bfloat16}  # autocast really was on
    assert result.stopped_reason == "completed" and result.bad_steps == 0
    assert all(isinstance(value, float) and math.isfinite(value) for value in losses)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay fp32


def test_fp16_on_cpu_is_mapped_to_bf16_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="spectral_training.training"):
        settings = resolve_amp("fp16", torch.device("cpu"))
    assert settings.dtype == torch.bfloat16 and not settings.use_grad_scaler
    assert "mapped to bf16" in caplog.text
    assert resolve_amp("off", torch.device("cpu")).dtype is None


def test_grad_scaler_path_skips_overflow_without_counting_a_bad_step(tiny, tmp_path, monkeypatch):
    # The fp16 + GradScaler path runs on CUDA only; torch's GradScaler also works on CPU, so the
    # engine's scaler logic (unscale, overflow skip, scale back-off, checkpointed state) is
    # exercised here without autocast.
    import spectral_training.training.step as step_module
    from spectral_training.training import AmpSettings

    monkeypatch.setattr(step_module, "resolve_amp", lambda mode, device: AmpSettings("cpu", None, True))
    calls = {"count": 0}

    def forward(model, batch):
        output = model(batch["cube"])
        if model.training:
            calls["count"] += 1
            if calls["count"] == 3:  # finite loss whose scaled gradients overflow fp32
                return {"loss": output["loss"] * 1e36}
        return output

    model = tiny.build_model()
    scales = []

    class Scales(TrainingCallback):
        def on_step_end(self, step, metrics):
            scales.append(metrics["loss_scale"])

    train_loader, val_loader = tiny.build_loaders(train_count=16)
    result = fit(model, train_loader, val_loader, tiny.tiny_config(epochs=1), run_dir=tmp_path,
                 forward_fn=forward, callbacks=[Scales()])

    assert result.stopped_reason == "completed" and result.bad_steps == 0
    assert scales[2] == scales[1] / 2  # the scaler backed off instead of the guard firing
    checkpoint = torch.load(result.last_checkpoint, weights_only=True)
    assert checkpoint["scaler"]["scale"] == scales[-1]


def test_auto_precision_on_a_cpu_without_native_bf16_is_fp32(monkeypatch, caplog):
    from spectral_training.training import amp

    monkeypatch.setattr(amp, "cpu_has_native_bf16", lambda: (False, "CPU capability AVX2 without AVX512-BF16 or AMX"))
    monkeypatch.setattr(amp, "bf16_matmul_speedup", lambda: 1 / 400)  # the emulated AVX2 kind
    with caplog.at_level(logging.INFO, logger="spectral_training.training"):
        settings = resolve_amp("auto", torch.device("cpu"))
    assert settings.dtype is None and settings.describe() == "fp32"
    assert "fp32" in caplog.text and "AVX2" in caplog.text and "400x slower" in caplog.text


def test_explicit_bf16_on_a_cpu_without_native_bf16_runs_and_warns_the_measured_slowdown(monkeypatch, caplog):
    from spectral_training.training import amp

    monkeypatch.setattr(amp, "cpu_has_native_bf16", lambda: (False, "CPU capability AVX2 without AVX512-BF16 or AMX"))
    monkeypatch.setattr(amp, "bf16_matmul_speedup", lambda: 1 / 400)
    with caplog.at_level(logging.WARNING, logger="spectral_training.training"):
        forced = resolve_amp("bf16", torch.device("cpu"))
    assert forced.dtype is torch.bfloat16 and "measured 400x slower than fp32" in caplog.text


def test_auto_precision_without_reported_bf16_follows_the_timed_probe(monkeypatch):
    from spectral_training.training import amp

    monkeypatch.setattr(amp, "cpu_has_native_bf16", lambda: (False, "CPU capability DEFAULT"))
    monkeypatch.setattr(amp, "bf16_matmul_speedup", lambda: 1.8)
    assert resolve_amp("auto", torch.device("cpu")).dtype is torch.bfloat16


def test_auto_precision_on_a_cpu_with_native_bf16_is_bf16(monkeypatch):
    from spectral_training.training import amp

    monkeypatch.setattr(amp, "cpu_has_native_bf16", lambda: (True, "CPU capability AVX512 with avx512_bf16"))
    monkeypatch.setattr(amp, "bf16_matmul_speedup", lambda: pytest.fail("native bf16 needs no probe"))
    assert resolve_amp("auto", torch.device("cpu")).dtype is torch.bfloat16


def test_the_bf16_probe_runs_once_per_process(monkeypatch):
    from spectral_training.training import amp

    calls = []
    real = amp._best_matmul_seconds
    monkeypatch.setattr(amp, "_best_matmul_seconds", lambda *a, **k: calls.append(a) or real(*a, **k))
    amp.bf16_matmul_speedup.cache_clear()
    first = amp.bf16_matmul_speedup()
    assert amp.bf16_matmul_speedup() == first and len(calls) == 2  # one fp32 and one bf16 timing
    amp.bf16_matmul_speedup.cache_clear()


def test_auto_precision_on_apple_mps_is_fp32():
    assert resolve_amp("auto", torch.device("mps")).dtype is None
    assert resolve_amp("bf16", torch.device("mps")).dtype is torch.bfloat16


def test_auto_precision_is_fp32_where_the_instruction_set_is_capped_to_avx2(tmp_path):
    """The AVX2 kind of machine as the kernels see it: ATEN_CPU_CAPABILITY and ONEDNN_MAX_CPU_ISA
    cap torch and oneDNN at AVX2 on any x86 CPU, so bf16 is emulated whatever the hardware has."""
    import os
    import subprocess
    import sys

    script = (
        "import logging, torch\n"
        "from spectral_training.training.amp import resolve_amp\n"
        "logging.basicConfig(level=logging.INFO, format='%(message)s')\n"
        "print('DTYPE', resolve_amp('auto', torch.device('cpu')).dtype)\n"
    )
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "DTYPE None" in done.stdout  # fp32
    assert "amp auto on the CPU: fp32" in done.stderr and "slower than fp32" in done.stderr
