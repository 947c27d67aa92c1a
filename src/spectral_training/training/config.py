"""Training settings: one dataclass, built from the plain dict a parameter file gives.

`TrainConfig.from_dict(params, source="mae.train")`
rejects unknown keys (with a "did you mean" hint) and wrong types, naming the source and the
field, so a typo in a YAML file fails before a single batch is loaded.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

AmpMode = Literal["auto", "bf16", "fp16", "off"]
ResumeMode = Literal["auto"] | bool

AMP_MODES = ("auto", "bf16", "fp16", "off")
# torch.compile modes; `compile: true` is "default"
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# Schedulers timm's create_scheduler_v2 can drive per optimizer step. "plateau" is left out: it
# steps per epoch on a metric, which does not fit a step-level engine.
# "onecycle" is OneCycleLR's lr shape built from timm's cosine: warmup from lr/25 over
# `onecycle_pct_start` of the run, then cosine down to lr/1e4 (no momentum cycling).
SCHEDULERS = ("cosine", "tanh", "step", "multistep", "poly", "wsd", "rsqrt", "constant", "onecycle", "none")

MONITOR_MODES = ("min", "max")
ON_NEW_DATA = ("continue", "fresh")

# Settings that may change between a run and its resumption without breaking exact resume:
# they only decide when to stop, log or save, never what a step computes.
RESUME_SAFE_FIELDS = frozenset(
    {
        "epochs",
        "max_steps",
        "progress",
        "log_every_steps",
        "resume",
        "on_new_data",
        "checkpoint_every_steps",
        "patience",
        "min_delta",
        "monitor",
        "mode",
        "max_bad_steps",
        "max_rollbacks",
        "max_consecutive_failed_batches",
        "rdzv_endpoint",
        "rdzv_backend",
    }
)


class ConfigError(ValueError):
    """A training setting is unknown, of the wrong type or out of range."""


@dataclass
class TrainConfig:
    """Every knob of the training engine, with defaults that suit a small ViT/CNN run.

    Counting conventions: an *epoch* is one pass over the train loader (or over the first
    `overfit_batches` batches); a *step* is one optimizer-step attempt, i.e. one window of
    `accumulation_steps` batches, counted even when a guard skips the update.
    """

    # --- schedule length
    epochs: int = 100
    max_steps: int | None = None  # stop after this many steps; does NOT shorten the lr schedule
    # --- optimizer (timm.optim.create_optimizer_v2)
    optimizer: str = "adamw"
    lr: float = 1e-3  # peak lr, reached after warmup
    min_lr: float = 1e-6  # floor of the decay
    weight_decay: float = 0.05  # 1-d params (bias, norm) are excluded by timm
    layer_decay: float | None = None  # e.g. 0.75 for ViT fine-tuning; None = off
    betas: tuple[float, float] = (0.9, 0.999)
    optimizer_kwargs: dict[str, Any] = field(default_factory=dict)  # extra timm kwargs (eps, momentum)
    # --- lr schedule (timm.scheduler.create_scheduler_v2, updated every step)
    scheduler: str = "cosine"
    warmup_epochs: float = 5.0
    warmup_steps: int | None = None  # when set, overrides warmup_epochs
    warmup_lr: float = 1e-6  # lr at step 0 of warmup
    decay_epochs: float = 30.0  # step: multiply the lr by decay_rate every decay_epochs (multistep: at each multiple)
    decay_rate: float = 0.1
    onecycle_pct_start: float = 0.3  # onecycle: share of the run spent warming up
    # --- step mechanics
    accumulation_steps: int = 1
    clip_grad_norm: float | None = 1.0  # None = no clipping (the norm is still checked for NaN/Inf)
    amp: AmpMode = "auto"  # auto: bf16 autocast where the CPU has it natively (else fp32), fp16 + GradScaler on CUDA
    device: str = "auto"  # auto: CUDA, then Apple MPS, then CPU (training/device.py); or cpu | cuda | cuda:N | mps
    # torch.compile of the training forward (training/compilation.py): false | true (mode "default")
    # | one of COMPILE_MODES. The first step compiles (about 1.5 min for the MAE tiny on 2 CPU cores).
    compile: bool | str = False
    compile_backend: str = "inductor"  # or e.g. aot_eager / eager, to debug a compile problem
    # --- EMA of the weights (timm.utils.ModelEmaV3)
    ema: bool = False
    ema_decay: float = 0.9998
    ema_warmup: bool = True  # ramp the decay up from 0 so short runs get a useful EMA
    # --- guards
    max_bad_steps: int = 5  # consecutive NaN/Inf steps before a rollback
    rollback_lr_factor: float = 0.5  # lr multiplier applied at each rollback
    max_rollbacks: int = 3  # the next bad streak after this many rollbacks stops the run
    max_consecutive_failed_batches: int = 10  # batches raising in a row before giving up
    # --- best.pt and early stopping follow one history key
    monitor: str = "val_loss"  # e.g. "val_macro_f1" (or "val/macro_f1"); see fit(val_metrics=...)
    mode: str = "min"  # "min": lower is better (losses), "max": higher is better (accuracy, F1)
    patience: int | None = None  # epochs without improvement; None = off
    min_delta: float = 0.0  # an improvement must beat the best by more than this (monitor's units)
    # --- checkpoints and resume
    checkpoint_every_steps: int | None = 500  # plus one at every epoch end; None/0 = epoch ends only
    resume: ResumeMode = "auto"  # auto: resume when run_dir/last.pt exists
    # A rerun on grown data (a new run folder): start from the same configuration's last
    # checkpoint ("continue") or from fresh weights ("fresh"); read by families/runs.py.
    on_new_data: str = "continue"
    seed: int = 42
    deterministic: bool = False  # torch.use_deterministic_algorithms for the duration of fit
    # --- debugging and output
    overfit_batches: int = 0  # N > 0: train and validate on the first N batches only
    log_every_steps: int = 50
    progress: bool = True  # tqdm bars (only on a TTY)
    # --- distributed
    find_unused_parameters: bool = False  # passed to DistributedDataParallel
    # Processes of a data-parallel run (training/launch.py starts them through torchrun).
    # loader.batch_size stays the global batch: each process loads batch_size / processes.
    nproc_per_node: int = 1  # processes on this machine (one per GPU on CUDA)
    nnodes: int = 1  # machines; > 1 needs rdzv_endpoint, and the other nodes join (README)
    rdzv_endpoint: str | None = None  # host:port of the c10d rendezvous, e.g. "node01:29500"
    rdzv_backend: str = "c10d"

    def __post_init__(self) -> None:
        self._validate(source="TrainConfig")

    # ------------------------------------------------------------------ building
    @classmethod
    def from_dict(cls, params: Mapping[str, Any] | None, *, source: str = "training parameters") -> "TrainConfig":
        """Build a config from a plain dict (a parameters block of a YAML file).

        Args:
            params: keys are field names of TrainConfig; missing keys take the defaults.
            source: where the dict came from, quoted in error messages.
        Returns:
            A validated TrainConfig.
        Raises:
            ConfigError: for an unknown key (with the closest known names), a wrong type or a
                value out of range.
        """
        params = dict(params or {})
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = [key for key in params if key not in known]
        if unknown:
            hints = []
            for key in unknown:
                close = difflib.get_close_matches(str(key), known, n=1)
                hints.append(f"'{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
            raise ConfigError(
                f"{source}: unknown training setting(s) {', '.join(hints)}. "
                f"Known settings: {', '.join(known)}."
            )
        if "betas" in params and isinstance(params["betas"], list):
            params["betas"] = tuple(params["betas"])  # YAML has no tuples
        instance = cls.__new__(cls)
        for f in dataclasses.fields(cls):
            if f.name in params:
                value = params[f.name]
            elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                value = f.default_factory()  # type: ignore[misc]
            else:
                value = f.default
            setattr(instance, f.name, value)
        instance._validate(source=source)
        return instance

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (lists instead of tuples) that survives torch.load(weights_only=True) and JSON."""
        out = dataclasses.asdict(self)
        out["betas"] = list(self.betas)
        return out

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with some fields changed (validated like from_dict)."""
        return TrainConfig.from_dict({**dataclasses.asdict(self), **changes}, source="TrainConfig.replace")

    # ------------------------------------------------------------------ checks
    def _validate(self, source: str) -> None:
        def fail(name: str, expected: str) -> None:
            raise ConfigError(f"{source}: setting '{name}' = {getattr(self, name)!r}; expected {expected}.")

        def is_int(value: Any) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        def is_number(value: Any) -> bool:
            return (is_int(value) or isinstance(value, float)) and math.isfinite(value)

        def check_int(name: str, minimum: int, optional: bool = False) -> None:
            value = getattr(self, name)
            if optional and value is None:
                return
            if not is_int(value) or value < minimum:
                fail(name, f"an integer >= {minimum}" + (" or null" if optional else ""))

        def check_number(name: str, minimum: float, optional: bool = False, strict: bool = False) -> None:
            value = getattr(self, name)
            if optional and value is None:
                return
            if not is_number(value) or value < minimum or (strict and value == minimum):
                relation = ">" if strict else ">="
                fail(name, f"a number {relation} {minimum}" + (" or null" if optional else ""))
            setattr(self, name, float(value))

        check_int("epochs", 1)
        check_int("max_steps", 1, optional=True)
        if not isinstance(self.optimizer, str) or not self.optimizer:
            fail("optimizer", "a timm optimizer name such as 'adamw'")
        check_number("lr", 0.0, strict=True)
        check_number("min_lr", 0.0)
        check_number("weight_decay", 0.0)
        check_number("layer_decay", 0.0, optional=True, strict=True)
        if (
            not isinstance(self.betas, (tuple, list))
            or len(self.betas) != 2
            or not all(is_number(b) and 0.0 <= b < 1.0 for b in self.betas)
        ):
            fail("betas", "two numbers in [0, 1), e.g. [0.9, 0.999]")
        self.betas = (float(self.betas[0]), float(self.betas[1]))
        if not isinstance(self.optimizer_kwargs, Mapping):
            fail("optimizer_kwargs", "a mapping of extra timm optimizer arguments")
        self.optimizer_kwargs = dict(self.optimizer_kwargs)
        if self.scheduler not in SCHEDULERS:
            fail("scheduler", f"one of {', '.join(SCHEDULERS)}")
        check_number("warmup_epochs", 0.0)
        check_int("warmup_steps", 0, optional=True)
        check_number("warmup_lr", 0.0)
        check_number("decay_epochs", 0.0, strict=True)
        check_number("decay_rate", 0.0, strict=True)
        check_number("onecycle_pct_start", 0.0)
        if self.onecycle_pct_start >= 1.0:
            fail("onecycle_pct_start", "a number in [0, 1), e.g. 0.3")
        check_int("accumulation_steps", 1)
        check_number("clip_grad_norm", 0.0, optional=True, strict=True)
        if self.amp is False:  # YAML (and --params amp=off) read a bare `off` as false
            self.amp = "off"
        if self.amp not in AMP_MODES:
            fail("amp", f"one of {', '.join(AMP_MODES)}")
        if self.compile not in (True, False) and self.compile not in COMPILE_MODES:
            fail("compile", f"true, false or a torch.compile mode: {', '.join(COMPILE_MODES)}")
        if not isinstance(self.compile_backend, str) or not self.compile_backend.strip():
            fail("compile_backend", "the name of a torch.compile backend, e.g. inductor (the default) or aot_eager")
        if not isinstance(self.device, str) or not self.device.strip():
            fail("device", "'auto' (CUDA, then MPS, then CPU) or a device such as 'cpu', 'cuda:0', 'mps'")
        for name in ("ema", "ema_warmup", "progress", "deterministic", "find_unused_parameters"):
            if not isinstance(getattr(self, name), bool):
                fail(name, "true or false")
        check_number("ema_decay", 0.0)
        if self.ema_decay >= 1.0:
            fail("ema_decay", "a number in [0, 1), e.g. 0.9998")
        check_int("max_bad_steps", 1)
        check_number("rollback_lr_factor", 0.0, strict=True)
        if self.rollback_lr_factor > 1.0:
            fail("rollback_lr_factor", "a number in (0, 1]")
        check_int("max_rollbacks", 0)
        check_int("max_consecutive_failed_batches", 1)
        if not isinstance(self.monitor, str) or not self.monitor.strip():
            fail("monitor", "a history key such as 'val_loss' or 'val_macro_f1'")
        # Families name metrics as trackers do ("val/macro_f1"); history keys use "_".
        self.monitor = self.monitor.strip().replace("/", "_")
        if self.mode not in MONITOR_MODES:
            fail("mode", "'min' (lower is better, e.g. a loss) or 'max' (higher is better, e.g. accuracy)")
        check_int("patience", 1, optional=True)
        check_number("min_delta", 0.0)
        check_int("checkpoint_every_steps", 0, optional=True)
        if self.resume not in ("auto", True, False) or (self.resume != "auto" and not isinstance(self.resume, bool)):
            fail("resume", "'auto', true or false")
        if self.on_new_data not in ON_NEW_DATA:
            fail("on_new_data", "'continue' (fine-tune from the last run of this configuration) or 'fresh'")
        check_int("nproc_per_node", 1)
        check_int("nnodes", 1)
        if self.nnodes > 1 and (not isinstance(self.rdzv_endpoint, str) or ":" not in self.rdzv_endpoint):
            fail("rdzv_endpoint", "host:port of the rendezvous (e.g. 'node01:29500') when nnodes > 1")
        if not isinstance(self.rdzv_backend, str) or not self.rdzv_backend:
            fail("rdzv_backend", "a torch.distributed rendezvous backend, e.g. 'c10d'")
        check_int("seed", 0)
        check_int("overfit_batches", 0)
        check_int("log_every_steps", 1)
