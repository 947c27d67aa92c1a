"""Transform validation: prove, before any training step, that data and model fit together.

Checks, in order (a failed check stops the ones that depend on it):

1. ``shape``: the train and eval transforms turn a stored tile into exactly the size the model
   expects (a resize to 448 feeding a 224 model is caught here, naming both parameters), and the
   store's band count is the model's.
2. ``finite``: a batch is finite after normalisation and the transforms.
3. ``zero_std_bands``: bands whose train std is 0 are flagged (a warning: they carry no signal).
4. ``forward_backward``: one batch goes forward and backward to a finite loss and finite gradients.
5. ``loss_decreases``: a few optimizer steps on that batch lower its loss.

The model is trained on a copy-free fresh build, never the one that training will use.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import torch

from spectral_training.cubes.dataset import NormalisedTileDataset
from spectral_training.cubes.transforms import Compose, TransformError

log = logging.getLogger(__name__)


def _check(name: str, passed: bool, detail: str, **extra) -> dict:
    return {"name": name, "passed": bool(passed), "detail": detail, **extra}


def check_shapes(tile_size: int, store_bands: int, train_t: Compose, eval_t: Compose,
                 model_image_size: int, model_bands: int, image_size_param: str = "model.image_size") -> list[dict]:
    checks = []
    for label, transform in (("transforms.train", train_t), ("transforms.eval", eval_t)):
        try:
            out = transform.out_size(tile_size)
        except TransformError as err:
            checks.append(_check(f"shape:{label}", False, f"{err} (tiles in the store are {tile_size} px)"))
            continue
        if out != model_image_size:
            culprit = next((n for n in reversed(transform.names) if any(k in n for k in ("resize", "crop"))), None)
            cause = f"{culprit} makes it {out} px" if culprit else f"no resize/crop: it stays at the tile size {tile_size} px"
            checks.append(_check(
                f"shape:{label}", False,
                f"{label} outputs {out} x {out} px ({cause}) but {image_size_param} is {model_image_size}: "
                f"make the last resize/crop of {label} equal {image_size_param}, or change {image_size_param}",
                output_size=out, expected_size=model_image_size,
            ))
        else:
            checks.append(_check(f"shape:{label}", True, f"{label} outputs {out} px = {image_size_param}",
                                 output_size=out, expected_size=model_image_size))
    checks.append(_check(
        "shape:bands", store_bands == model_bands,
        f"store has {store_bands} bands, model expects {model_bands}"
        + ("" if store_bands == model_bands else ": the model must be built for the store's band count"),
    ))
    return checks


def _batch(dataset: NormalisedTileDataset, batch_size: int) -> torch.Tensor:
    n = min(batch_size, len(dataset))
    return torch.stack([dataset[i]["cube"] for i in range(n)])


def validate_setup(
    train_set: NormalisedTileDataset,
    val_set: NormalisedTileDataset,
    train_t: Compose,
    eval_t: Compose,
    *,
    tile_size: int,
    store_bands: int,
    model_builder: Callable[[], torch.nn.Module],
    model_image_size: int,
    model_bands: int,
    band_names: list[str],
    batch_size: int = 4,
    steps: int = 5,
    lr: float = 1e-3,
    seed: int = 0,
) -> dict:
    """Run every check; returns the report (``passed`` is True only if all required checks pass)."""
    checks = check_shapes(tile_size, store_bands, train_t, eval_t, model_image_size, model_bands)
    report: dict = {"checks": checks, "zero_std_bands": [], "input_shape": None}
    zero = [band_names[i] if i < len(band_names) else i for i in train_t.normalise.zero_std_bands]
    report["zero_std_bands"] = zero
    checks.append(_check("zero_std_bands", True,
                         f"{len(zero)} band(s) with zero std on the train split (no signal; normalised by 1): {zero}"
                         if zero else "every band varies on the train split", warning=bool(zero)))
    if len(train_set) == 0:
        checks.append(_check("data", False, "the train split is empty: check ingestion.splits and the ingestion report"))
        return _finish(report)
    if not all(c["passed"] for c in checks):
        checks.append(_check("forward_backward", False, "not run: fix the shape checks first", skipped=True))
        return _finish(report)

    torch.manual_seed(seed)
    batch = _batch(train_set, batch_size)
    eval_batch = _batch(val_set, batch_size) if len(val_set) else None
    report["input_shape"] = list(batch.shape)
    finite = bool(torch.isfinite(batch).all()) and (eval_batch is None or bool(torch.isfinite(eval_batch).all()))
    checks.append(_check("finite", finite, "values are finite after normalisation and transforms" if finite
                         else "non-finite values after normalisation: check band_stats (std) and the store"))
    if not finite:
        return _finish(report)

    model = model_builder()
    model.train()
    try:
        out = model(batch)
        loss = out["loss"].float()
        loss.backward()
    except Exception as err:  # the report must say what broke, not crash the pipeline
        checks.append(_check("forward_backward", False, f"forward/backward raised {type(err).__name__}: {err}"))
        return _finish(report)
    grads_finite = all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    ok = math.isfinite(loss.item()) and grads_finite
    checks.append(_check("forward_backward", ok,
                         f"loss {loss.item():.4g}, gradients {'finite' if grads_finite else 'NOT finite'}",
                         loss=loss.item()))
    if not ok:
        return _finish(report)

    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps + 1):
        optimizer.zero_grad(set_to_none=True)
        gen.manual_seed(seed)  # the same mask every step, so the losses compare
        step_out = _forward_fixed(model, batch, gen)
        losses.append(float(step_out["loss"].detach().float()))
        step_out["loss"].float().backward()
        optimizer.step()
    decreased = losses[-1] < losses[0]
    checks.append(_check("loss_decreases", decreased,
                         f"loss on one batch {losses[0]:.4g} -> {losses[-1]:.4g} after {steps} AdamW steps (lr {lr})",
                         losses=losses))
    return _finish(report)


def _forward_fixed(model: torch.nn.Module, batch: torch.Tensor, generator: torch.Generator) -> dict:
    try:
        return model(batch, generator=generator)
    except TypeError:  # models without a generator argument
        return model(batch)


def _finish(report: dict) -> dict:
    report["passed"] = all(c["passed"] for c in report["checks"])
    report["failed"] = [c["detail"] for c in report["checks"] if not c["passed"]]
    return report


class ValidationFailed(RuntimeError):
    """Training refused because transform validation failed."""


def require_passed(report: dict, skip_validation: bool, dataset: str) -> None:
    """Raise unless the transform report passed; ``skip_validation`` overrides, loudly."""
    if report.get("passed"):
        return
    reasons = "; ".join(report.get("failed", [])) or "no report"
    if skip_validation:
        log.warning("!!! TRANSFORM VALIDATION FAILED AND skip_validation=true: TRAINING ANYWAY !!! (%s)", reasons)
        return
    raise ValidationFailed(
        f"transform validation failed for dataset '{dataset}', so training does not start: {reasons}. "
        f"See data/08_reporting/{dataset}/transform_report.json. Fix the parameters, or pass "
        f"--params skip_validation=true to train anyway."
    )
