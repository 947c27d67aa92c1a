"""One optimizer step: a window of `accumulation_steps` batches, forward to update.

    for each batch of the window:
        forward under autocast -> output["loss"] cast to fp32 -> (scaled) backward
        (a batch that raises is recorded and dooms the window; the rest of the window is
         consumed from the loader but not computed)
    no gradient at all -> skipped (before the GradScaler sees it) and recorded as a bad step
    unscale (fp16) -> gradient norm -> NaN/Inf guard -> clip -> optimizer step -> EMA update
    zero grads

The model contract lives here too: `forward_fn(model, batch)` returns a dict with a scalar
"loss" tensor and optionally "loss_parts"; `default_forward` is `model(batch["cube"])`.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

import torch
from timm.scheduler.scheduler import Scheduler
from timm.utils import ModelEmaV3
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from spectral_training.training import distributed
from spectral_training.training.amp import AmpSettings, resolve_amp
from spectral_training.training.compilation import compile_for_training
from spectral_training.training.config import TrainConfig
from spectral_training.training.data import batch_sample_ids, batch_size_of
from spectral_training.training.guards import ContractError, GuardState
from spectral_training.training.optim import LearningRateControl, build_ema, build_optimizer, build_scheduler
from spectral_training.training.signals import StopRequest
from spectral_training.training.state import Progress

logger = logging.getLogger("spectral_training.training")

ForwardFn = Callable[[nn.Module, Any], Mapping[str, Any]]


def default_forward(model: nn.Module, batch: Any) -> Mapping[str, Any]:
    """model(batch["cube"]): the contract for families that need no labels."""
    if not isinstance(batch, Mapping) or "cube" not in batch:
        raise ContractError(
            f"batches must be dicts with a 'cube' tensor, got {type(batch).__name__}"
            + (f" with keys {sorted(batch)}" if isinstance(batch, Mapping) else "")
            + "; pass forward_fn=... to fit for another layout"
        )
    return model(batch["cube"])


def move_to_device(batch: Any, device: torch.device) -> Any:
    """Tensors of a (nested) batch moved to `device`; other values untouched."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {key: move_to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)) and any(isinstance(v, torch.Tensor) for v in batch):
        return type(batch)(move_to_device(v, device) for v in batch)
    return batch


def loss_from_output(output: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Check the model contract; returns the fp32 loss and the detached fp32 loss parts."""
    if not isinstance(output, Mapping) or "loss" not in output:
        raise ContractError(
            f"the model (or forward_fn) must return a dict with a 'loss' tensor, got {type(output).__name__}"
            + (f" with keys {sorted(output)}" if isinstance(output, Mapping) else "")
        )
    loss = output["loss"]
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise ContractError(f"output['loss'] must be a scalar tensor, got {shape}; reduce it (e.g. .mean())")
    parts = {}
    for name, value in (output.get("loss_parts") or {}).items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            parts[str(name)] = value.detach().float().reshape(())
        elif isinstance(value, (int, float)):
            parts[str(name)] = torch.tensor(float(value), device=loss.device)
    # The loss is reduced in fp32 whatever autocast did inside the model.
    return loss.float().reshape(()), parts


@dataclass
class Learner:
    """The objects a step changes and a checkpoint saves, built once per `fit` call."""

    model: nn.Module  # the unwrapped module: what checkpoints and EMA see
    train_module: nn.Module  # the module forward runs on: `model`, or its DDP wrapper, compiled with train.compile
    optimizer: torch.optim.Optimizer
    scheduler: Scheduler | None
    lr: LearningRateControl
    scaler: torch.amp.GradScaler | None
    ema: ModelEmaV3 | None
    amp: AmpSettings
    device: torch.device


def build_learner(model: nn.Module, config: TrainConfig, device: torch.device, steps: int) -> Learner:
    """Model on its device (DDP-wrapped when distributed), optimizer, schedule, scaler and EMA."""
    model = model.to(device)
    amp = resolve_amp(config.amp, device)
    scaler = amp.make_grad_scaler()
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config, steps)
    lr = LearningRateControl(optimizer, scheduler)
    ema = build_ema(model, config)  # before DDP wraps the model: EMA copies the plain module
    train_module: nn.Module = model
    if distributed.is_distributed():
        device_ids = [device.index] if device.type == "cuda" else None
        train_module = DistributedDataParallel(model, device_ids=device_ids,
                                               find_unused_parameters=config.find_unused_parameters)
    train_module = compile_for_training(train_module, config, device)  # DDP first: compile sees its hooks
    return Learner(model=model, train_module=train_module, optimizer=optimizer, scheduler=scheduler, lr=lr,
                   scaler=scaler, ema=ema, amp=amp, device=device)


@dataclass
class WindowOutcome:
    kind: str  # "ok", "bad" (NaN/Inf or no gradient, skipped), "overflow" (fp16 scaler skipped), "failed" (a batch raised)
    loss: float
    grad_norm: float
    sample_ids: list[str]
    failed_batches: int
    parts: dict[str, float]

    def metrics(self, *, lr: float, epoch: int, loss_scale: float | None) -> dict[str, float]:
        """What on_step_end receives (see TrainingCallback.on_step_end)."""
        metrics = {
            "train_loss": self.loss,
            "lr": lr,
            "grad_norm": self.grad_norm,
            "epoch": float(epoch),
            "bad_step": 1.0 if self.kind == "bad" else 0.0,
            "failed_batches": float(self.failed_batches),
        }
        if loss_scale is not None:
            metrics["loss_scale"] = loss_scale
        for name, value in self.parts.items():
            metrics[f"train_{name}"] = value
        return metrics


def record_failed_batch(guard: GuardState, progress: Progress, sample_ids: list[str], batch_in_epoch: int,
                        error: BaseException | None) -> None:
    guard.record_failed_batch(step=progress.global_step + 1, epoch=progress.epoch, batch_in_epoch=batch_in_epoch,
                              sample_ids=sample_ids, error=error)
    progress.epoch_failed_batches += 1


class TrainStep:
    """Runs accumulation windows on a Learner; counters go to the Progress and GuardState given."""

    def __init__(self, learner: Learner, forward_fn: ForwardFn, clip_grad_norm: float | None) -> None:
        self.learner = learner
        self.forward_fn = forward_fn
        self.clip_grad_norm = clip_grad_norm
        self.parameters = [p for p in learner.model.parameters() if p.requires_grad]
        # torch.compile wraps the DDP module (attributes such as no_sync fall through to it)
        self.is_ddp = isinstance(getattr(learner.train_module, "_orig_mod", learner.train_module), DistributedDataParallel)

    def run(self, batches: Iterator[Any], window: int, progress: Progress, guard: GuardState,
            stop: StopRequest) -> tuple[WindowOutcome, int, bool]:
        """Run one accumulation window; returns (outcome, batches consumed, stop flag of any rank)."""
        learner, is_ddp = self.learner, self.is_ddp
        device = learner.device
        loss_sum = torch.zeros((), device=device)
        sample_count = 0.0
        part_sums: dict[str, torch.Tensor] = {}
        window_ids: list[str] = []
        failed_batches = 0
        doomed = False
        consumed = 0
        for index in range(window):
            batch = next(batches, None)
            if batch is None:
                break
            consumed += 1
            ids = batch_sample_ids(batch)
            window_ids.extend(ids)
            if doomed:  # the window is skipped anyway: keep the data order, spare the compute
                continue
            # DDP syncs gradients only on the window's last backward.
            sync = learner.train_module.no_sync() if is_ddp and index < window - 1 else contextlib.nullcontext()
            error: BaseException | None = None
            with sync:
                try:
                    batch = move_to_device(batch, device)
                    with learner.amp.autocast():
                        output = self.forward_fn(learner.train_module, batch)
                    loss, parts = loss_from_output(output)
                except ContractError:
                    raise
                except Exception as caught:
                    error = caught
                # Ranks must agree before backward, or the healthy ones would wait forever in
                # DDP's gradient all-reduce for the rank that skipped.
                if distributed.any_rank(error is not None) if is_ddp else error is not None:
                    # every rank counts it (error=None where this rank's batch was fine)
                    record_failed_batch(guard, progress, ids, progress.batch_in_epoch + index, error)
                    failed_batches += 1
                    doomed = True
                    continue
                try:
                    scaled = loss / window
                    (learner.scaler.scale(scaled) if learner.scaler is not None else scaled).backward()
                except Exception as caught:  # cannot be synced across ranks; rare (e.g. OOM in backward)
                    record_failed_batch(guard, progress, ids, progress.batch_in_epoch + index, caught)
                    failed_batches += 1
                    doomed = True
                    continue
            size = float(batch_size_of(batch))
            loss_sum += loss.detach() * size
            sample_count += size
            for name, value in parts.items():
                part_sums[name] = part_sums.get(name, torch.zeros((), device=device)) + value * size
            guard.record_successful_batch()
            progress.epoch_good_batches += 1

        if consumed == 0:
            return WindowOutcome("failed", float("nan"), float("nan"), [], 0, {}), 0, False
        if doomed:
            learner.optimizer.zero_grad(set_to_none=True)
            stop_seen = distributed.any_rank(stop.requested) if is_ddp else stop.requested
            return WindowOutcome("failed", float("nan"), float("nan"), window_ids, failed_batches, {}), consumed, stop_seen
        outcome, stop_seen = self._update(loss_sum, sample_count, part_sums, window_ids, progress, guard, stop)
        return outcome, consumed, stop_seen

    def _update(self, loss_sum: torch.Tensor, sample_count: float, part_sums: dict[str, torch.Tensor],
                window_ids: list[str], progress: Progress, guard: GuardState,
                stop: StopRequest) -> tuple[WindowOutcome, bool]:
        """Guards, clipping, the optimizer step and the EMA update of a window whose batches all ran;
        returns the outcome and the stop flag of any rank."""
        learner = self.learner
        scaler, optimizer = learner.scaler, learner.optimizer
        # A window whose loss reached none of the optimizer's parameters (every patch masked out of
        # the loss, only a frozen part used, ...) leaves every .grad None. GradScaler then records no
        # inf check in unscale_ and its step()/update() raise "No inf checks were recorded for this
        # optimizer", so such a window is skipped before the scaler sees it, like a non-finite one.
        # Under DDP the gradients are all-reduced, so every rank sees the same None/not-None pattern.
        has_grad = any(p.grad is not None for group in optimizer.param_groups for p in group["params"])
        if scaler is not None and has_grad:
            scaler.unscale_(optimizer)
        grads = [p.grad for p in self.parameters if p.grad is not None]
        grad_norm = (torch.nn.utils.get_total_norm(grads, 2.0, error_if_nonfinite=False)
                     if grads else torch.zeros((), device=learner.device))
        names = sorted(part_sums)
        # One host sync per step: loss, its finiteness, grad norm and loss parts in one transfer.
        local = torch.stack(
            [loss_sum.float(), (~torch.isfinite(loss_sum)).float(), grad_norm.float().to(loss_sum.device)]
            + [part_sums[n].float() for n in names]
        ).tolist()
        loss_total, nonfinite_loss, grad_norm_value = local[0], local[1], local[2]
        part_totals = local[3:]
        stop_seen = stop.requested
        if self.is_ddp:  # grads are already all-reduced, so grad_norm agrees across ranks
            reduced = distributed.all_reduce_sum(
                [loss_total, sample_count, nonfinite_loss, float(stop.requested)] + part_totals)
            loss_total, sample_count, nonfinite_loss = reduced[0], reduced[1], reduced[2]
            stop_seen = reduced[3] > 0
            part_totals = reduced[4:]
        mean_loss = loss_total / sample_count if sample_count else float("nan")
        parts_mean = {n: part_totals[i] / sample_count for i, n in enumerate(names)} if sample_count else {}
        loss_ok = nonfinite_loss == 0 and math.isfinite(mean_loss)
        grad_ok = math.isfinite(grad_norm_value)

        if not has_grad or not loss_ok or (not grad_ok and scaler is None):
            if scaler is not None and has_grad:
                scaler.update()  # unscale_ was called; update() closes the iteration
            guard.record_bad_step(
                step=progress.global_step + 1, epoch=progress.epoch, batch_in_epoch=progress.batch_in_epoch,
                sample_ids=window_ids, loss=mean_loss, grad_norm=grad_norm_value,
                reason=None if has_grad else "no parameter received a gradient",
            )
            progress.epoch_bad_steps += 1
            kind = "bad"
        elif not grad_ok:
            # fp16 overflow: the GradScaler skips this update and lowers its scale; that is its
            # normal way of finding the scale, not a sign of divergence.
            scaler.step(optimizer)  # type: ignore[union-attr]
            scaler.update()  # type: ignore[union-attr]
            logger.debug("step %d: fp16 gradient overflow; GradScaler skipped the update", progress.global_step + 1)
            kind = "overflow"
        else:
            if self.clip_grad_norm is not None:
                torch.nn.utils.clip_grads_with_norm_(self.parameters, self.clip_grad_norm, grad_norm)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            progress.optimizer_updates += 1
            if learner.ema is not None:
                learner.ema.update(learner.model, step=progress.optimizer_updates)
            guard.record_good_step()
            kind = "ok"
        if kind != "bad":
            progress.epoch_loss_sum += loss_total
            progress.epoch_sample_count += sample_count
            for i, name in enumerate(names):
                progress.epoch_part_sums[name] = progress.epoch_part_sums.get(name, 0.0) + part_totals[i]
        optimizer.zero_grad(set_to_none=True)
        return WindowOutcome(kind, mean_loss, grad_norm_value, window_ids, 0, parts_mean), stop_seen
