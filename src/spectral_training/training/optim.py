"""Optimizer, learning-rate schedule and EMA, all built by timm from a TrainConfig.

The schedule is expressed in optimizer steps (one step = one accumulation window), so warmup and
decay are exact whatever the epoch length, and a resumed run lands on the same lr.
"""

from __future__ import annotations

import logging
import math

import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.scheduler.scheduler import Scheduler
from timm.utils import ModelEmaV3
from torch import nn

from spectral_training.training.config import TrainConfig

logger = logging.getLogger("spectral_training.training")

_BASE_LR_KEY = "engine_base_lr"  # per param group lr before the rollback factor, when no scheduler


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """timm optimizer with weight-decay groups (1-d params and `model.no_weight_decay()` excluded)
    and, when `config.layer_decay` is set, layer-wise lr scales (stored as group['lr_scale'])."""
    kwargs = dict(config.optimizer_kwargs)
    if "adam" in config.optimizer.lower() or "lamb" in config.optimizer.lower():
        kwargs.setdefault("betas", tuple(config.betas))
    return create_optimizer_v2(
        model,
        opt=config.optimizer,
        lr=config.lr,
        weight_decay=config.weight_decay,
        layer_decay=config.layer_decay,
        **kwargs,
    )


def warmup_steps(config: TrainConfig, steps_per_epoch: int) -> int:
    """Warmup length in steps: `warmup_steps` when set, else warmup_epochs x steps per epoch."""
    if config.warmup_steps is not None:
        return config.warmup_steps
    return int(round(config.warmup_epochs * steps_per_epoch))


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int) -> Scheduler | None:
    """timm scheduler stepped per optimizer step (`step_update(step)`), or None for scheduler='none'.

    timm is told the run has `epochs x steps_per_epoch` "epochs" of one update each, which makes
    every length (warmup included) an exact step count. `max_steps` does not shorten it.
    """
    total_steps = config.epochs * steps_per_epoch
    warmup = min(warmup_steps(config, steps_per_epoch), max(total_steps - 1, 0))
    sched, warmup_lr, min_lr = config.scheduler, config.warmup_lr, config.min_lr
    if sched == "onecycle":  # OneCycleLR's defaults: start at lr/25, end at lr/(25 x 1e4)
        sched, warmup = "cosine", int(round(config.onecycle_pct_start * total_steps))
        warmup_lr, min_lr = config.lr / 25.0, config.lr / 25.0 / 1e4
    decay_steps = max(1, int(round(config.decay_epochs * steps_per_epoch)))
    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched=sched,
        # with a prefix warmup the cosine runs over the steps after it, so it ends on the last step
        num_epochs=total_steps - warmup if config.scheduler == "onecycle" else total_steps,
        decay_epochs=decay_steps,
        decay_milestones=list(range(decay_steps, max(total_steps, decay_steps) + 1, decay_steps)),
        decay_rate=config.decay_rate,
        warmup_epochs=warmup,
        warmup_lr=warmup_lr,
        warmup_prefix=config.scheduler == "onecycle",  # the cosine starts at the peak, after the warmup
        min_lr=min_lr,
        step_on_epochs=False,
        updates_per_epoch=1,
        noise_seed=config.seed,
    )
    return scheduler


class LearningRateControl:
    """Sets each param group's lr for a step: the schedule's value times the rollback factor.

    A rollback multiplies `factor` by `config.rollback_lr_factor`; the factor is saved in the
    checkpoint so a resumed run keeps the lowered lr.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, scheduler: Scheduler | None) -> None:
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.factor = 1.0
        for group in optimizer.param_groups:
            # timm's scheduler has already moved "lr" to the warmup value and kept the base in "initial_lr".
            base_lr = group.get("initial_lr", group["lr"])
            group.setdefault(_BASE_LR_KEY, base_lr * group.get("lr_scale", 1.0))

    def apply(self, step: int) -> None:
        """Set the lr for the update that follows `step` completed steps."""
        if self.scheduler is not None:
            self.scheduler.step_update(step)
            for group in self.optimizer.param_groups:
                group["lr"] *= self.factor
        else:
            for group in self.optimizer.param_groups:
                group["lr"] = group[_BASE_LR_KEY] * self.factor

    def current_lr(self) -> float:
        """The largest lr over param groups (with layer decay, the top layers' lr)."""
        return max(group["lr"] for group in self.optimizer.param_groups)


def build_ema(model: nn.Module, config: TrainConfig) -> ModelEmaV3 | None:
    """timm ModelEmaV3 of `model` (the unwrapped module, on its device), or None when ema is off."""
    if not config.ema:
        return None
    return ModelEmaV3(model, decay=config.ema_decay, use_warmup=config.ema_warmup)


def steps_per_epoch(batches_per_epoch: int, accumulation_steps: int) -> int:
    """Optimizer steps in an epoch; a final window shorter than accumulation_steps still steps."""
    return max(1, math.ceil(batches_per_epoch / accumulation_steps))
