"""Transform validation: prove, before any training step, that data and model fit together.

Checks, in order (a failed check stops the ones that depend on it):

1. ``shape``: the train and eval transforms turn a stored tile into exactly the size the model
   expects (a resize to 448 feeding a 224 model is caught here, naming both parameters), and the
   data's band count is the one the *built model* takes (read from the model: its ``num_bands`` or
   ``in_chans``, else its first 2-D convolution; the family's declared count only when the model
   says nothing), so a model built for other bands than the store's is caught before training.
2. ``finite``: a batch is finite after normalisation and the transforms.
3. ``zero_std_bands``: bands whose train std is 0 are flagged (a warning: they carry no signal).
4. ``forward_backward``: one batch goes through the family's ``forward_fn`` (the one ``fit``
   uses) and backward to a finite loss and finite gradients.
5. ``loss_decreases``: a few optimizer steps on that batch lower its loss.

The batch is collated like the training loader's (a dict: cube, label, sample_id, index...).
The model is a fresh build from ``model_builder``, never the one that training will use.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch.utils.data import Dataset, default_collate

from spectral_training.cubes.transforms import Compose, TransformError
from spectral_training.training.guards import ContractError
from spectral_training.training.rng import isolated_rng
from spectral_training.training.step import ForwardFn, default_forward, loss_from_output

log = logging.getLogger(__name__)


def _check(name: str, passed: bool, detail: str, **extra) -> dict:
    return {"name": name, "passed": bool(passed), "detail": detail, **extra}


def check_shapes(tile_size: int, store_bands: int, train_t: Compose, eval_t: Compose,
                 model_image_size: int, model_bands: int, image_size_param: str = "model.image_size") -> list[dict]:
    """Output size of both transforms vs the model's input size, and store vs model band count.

    `image_size_param` is the parameter that sets `model_image_size` (e.g. "vit.model.image_size"),
    named in the messages so the fix can be found in the right parameter file.
    """
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
        f"the data has {store_bands} bands, the model takes {model_bands}"
        + ("" if store_bands == model_bands else
           ": build the model for the data's band count (or map the bands, e.g. finetune.model.band_mapping)"),
        data_bands=store_bands, model_bands=model_bands,
    ))
    return checks


def model_input_bands(model: torch.nn.Module, *, image_layout: bool = True) -> tuple[int | None, str]:
    """The band count a built model takes, and where it was read: its ``num_bands`` / ``in_chans`` /
    ``in_channels`` attribute, else (for (C, H, W) inputs) the input channels of its first Conv2d.
    (None, ...) when the model does not say."""
    for attribute in ("num_bands", "in_chans", "in_channels"):
        value = getattr(model, attribute, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value, f"model.{attribute}"
    if image_layout:
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Conv2d):
                return int(module.in_channels), f"its first convolution {name}"
    return None, "not stated by the model"


def _batch(dataset: Dataset, batch_size: int) -> dict[str, Any]:
    """The first `batch_size` items collated as the training loader does (torch's default_collate),
    so forward_fn sees the same dict (cube, label, sample_id, index...) it gets in training."""
    return default_collate([dataset[i] for i in range(min(batch_size, len(dataset)))])


def _cube(batch: Any) -> torch.Tensor:
    if not isinstance(batch, Mapping) or not isinstance(batch.get("cube"), torch.Tensor):
        keys = f" with keys {sorted(batch)}" if isinstance(batch, Mapping) else ""
        raise ContractError(f"dataset items must be dicts with a 'cube' tensor, got a batch of "
                            f"{type(batch).__name__}{keys}")
    return batch["cube"]


def validate_setup(
    train_set: Dataset,
    val_set: Dataset,
    train_t: Compose,
    eval_t: Compose,
    *,
    tile_size: int,
    store_bands: int,
    model_builder: Callable[[], torch.nn.Module],
    model_image_size: int,
    model_bands: int | None,
    band_names: list[str],
    forward_fn: ForwardFn = default_forward,
    image_size_param: str = "model.image_size",
    batch_size: int = 4,
    steps: int = 5,
    lr: float = 1e-3,
    seed: int = 0,
) -> dict:
    """Run every check; returns the report (``passed`` is True only if all required checks pass).

    Args:
        train_set, val_set: datasets whose items are dicts with a "cube" tensor (the training
            loader's items); the first `batch_size` of each make the test batches.
        train_t, eval_t: their transforms, checked against `model_image_size`.
        store_bands: the data's band count.
        model_builder: builds a fresh model (never the one training will use); the band check reads
            the band count it takes from the built model (see `model_input_bands`).
        model_bands: the family's declared band count, used only when the model does not say.
        forward_fn: the family's `forward_fn(model, batch) -> {"loss": ...}`, the same one given
            to `fit`, so the checks run the code training runs (labels, masks, mixup...).
        image_size_param: the parameter that sets `model_image_size`, named in shape messages
            (e.g. "vit.model.image_size").
        seed: the global torch RNG is re-seeded with it before every forward, so random masks,
            mixup and dropout are the same at every step and the losses compare. The caller's
            RNG states are restored afterwards.
    """
    with isolated_rng(seed):
        torch.manual_seed(seed)
        try:
            model = model_builder()
        except Exception as err:  # the report must say what broke, not crash the pipeline
            report = {"checks": [_check("model", False, f"building the model raised {type(err).__name__}: {err}")],
                      "zero_std_bands": [], "input_shape": None}
            return _finish(report)
    built_bands, source = model_input_bands(model, image_layout=_sample_is_image(train_set))
    checks = check_shapes(tile_size, store_bands, train_t, eval_t, model_image_size,
                          built_bands if built_bands is not None else model_bands, image_size_param)
    checks[-1]["model_bands_from"] = source if built_bands is not None else "the family's parameters"
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
    with isolated_rng(seed):
        _run_batch_checks(report, train_set, val_set, model, forward_fn, batch_size, steps, lr, seed)
    return _finish(report)


def _sample_is_image(dataset: Dataset) -> bool:
    """Whether samples are (C, H, W) cubes (a series' first convolution may take dates x bands)."""
    try:
        item = dataset[0] if len(dataset) else None
    except Exception:  # the batch checks report unreadable samples
        return False
    cube = item.get("cube") if isinstance(item, Mapping) else None
    return isinstance(cube, torch.Tensor) and cube.ndim == 3


def _run_batch_checks(report: dict, train_set: Dataset, val_set: Dataset, model: torch.nn.Module,
                      forward_fn: ForwardFn, batch_size: int, steps: int, lr: float, seed: int) -> None:
    """finite, forward_backward and loss_decreases, appended to report["checks"]; stops at the first failure."""
    checks = report["checks"]
    batch = _batch(train_set, batch_size)
    eval_batch = _batch(val_set, batch_size) if len(val_set) else None
    cube = _cube(batch)
    report["input_shape"] = list(cube.shape)
    finite = bool(torch.isfinite(cube).all()) and (eval_batch is None or bool(torch.isfinite(_cube(eval_batch)).all()))
    checks.append(_check("finite", finite, "values are finite after normalisation and transforms" if finite
                         else "non-finite values after normalisation: check band_stats (std) and the store"))
    if not finite:
        return

    model.train()
    try:
        torch.manual_seed(seed)
        loss, _ = loss_from_output(forward_fn(model, batch))
        loss.backward()
    except Exception as err:  # the report must say what broke, not crash the pipeline
        checks.append(_check("forward_backward", False, f"forward/backward raised {type(err).__name__}: {err}"))
        return
    loss_value = loss.item()
    grads_finite = all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    ok = math.isfinite(loss_value) and grads_finite
    checks.append(_check("forward_backward", ok,
                         f"loss {loss_value:.4g}, gradients {'finite' if grads_finite else 'NOT finite'}",
                         loss=loss_value))
    if not ok:
        return

    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps + 1):
        optimizer.zero_grad(set_to_none=True)
        torch.manual_seed(seed)  # the same masks / mixup / dropout every step, so the losses compare
        step_loss, _ = loss_from_output(forward_fn(model, batch))
        losses.append(step_loss.item())
        step_loss.backward()
        optimizer.step()
    decreased = losses[-1] < losses[0]
    checks.append(_check("loss_decreases", decreased,
                         f"loss on one batch {losses[0]:.4g} -> {losses[-1]:.4g} after {steps} AdamW steps (lr {lr})",
                         losses=losses))


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
