"""Two small CNNs for few-band small patches, registered in timm's model registry.

``satellite_cnn`` (multi-class land cover) and ``flood_cnn`` (binary water / flood, two logits for
cross-entropy) take cubes of 4-13 bands and 16-64 px; they are fully convolutional up to a global
average pool, so any size of at least ``2 ** num_pools`` px works. Importing this module registers
both, so the ordinary timm factory builds them::

    import spectral_training.models.small_cnns  # noqa: F401  (registers the names)
    model = timm.create_model("satellite_cnn", num_classes=10, in_chans=13)   # ~0.19 M params
    model = timm.create_model("flood_cnn", in_chans=4)                        # 2 logits, ~0.024 M

They carry the timm model interface (``pretrained_cfg``, ``group_matcher``, ``no_weight_decay``,
``get_classifier``, ``reset_classifier``, ``forward_features``, ``forward_head``) so timm's
optimizer factory with layer decay, ``timm.data.resolve_data_config`` and Grad-CAM (target layer
``model.stages[-1]``, the last conv block) treat them like any timm CNN. There are no pretrained
weights: the cfg's ``mean``/``std`` are 0/1 per band because our cubes arrive normalised by the
train-split band statistics.

Layout (``satellite_cnn``, 13 bands, 64 px)::

    stem      conv3x3-BN-ReLU 13->32, maxpool  (B, 32, 32, 32)
    stages.0  conv3x3-BN-ReLU 32->64, maxpool  (B, 64, 16, 16)
    stages.1  conv3x3-BN-ReLU 64->96, maxpool  (B, 96, 8, 8)
    stages.2  conv3x3-BN-ReLU 96->128          (B, 128, 8, 8)   <- forward_features
    head      global avg pool, dropout, linear (B, num_classes)
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, is_model, model_entrypoint, register_model
from torch import nn

__all__ = ["ConvBlock", "SmallCNN", "satellite_cnn", "flood_cnn"]


class ConvBlock(nn.Module):
    """conv3x3 -> BatchNorm -> ReLU, then an optional 2x2 max pool: ``(B, Cin, H, W) -> (B, Cout, H', W')``."""

    def __init__(self, in_chans: int, out_chans: int, pool: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chans, out_chans, kernel_size=3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_chans)
        self.act = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.act(self.bn(self.conv(x))))


class SmallCNN(nn.Module):
    """A plain conv-BN-ReLU stack with a global-average-pool linear head.

    Args:
        widths: output channels of the stem and of each following stage, e.g. ``(32, 64, 96, 128)``.
        num_pools: how many of the first blocks end with a 2x2 max pool (the input needs at least
            ``2 ** num_pools`` px per side).
        num_classes: logits of the head; 0 leaves the head out (``forward`` returns pooled features).
        in_chans: bands of the input cube.
        drop_rate: dropout before the linear head.
        global_pool: ``"avg"`` (timm's name); the only pooling offered.
    """

    def __init__(
        self,
        widths: Sequence[int] = (32, 64, 96, 128),
        num_pools: int = 3,
        num_classes: int = 10,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        global_pool: str = "avg",
    ) -> None:
        super().__init__()
        if len(widths) < 2:
            raise ValueError(f"widths={tuple(widths)}: give at least two widths (stem and one stage).")
        if global_pool != "avg":
            raise ValueError(f"global_pool={global_pool!r}: SmallCNN only offers 'avg'.")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.num_features = self.head_hidden_size = widths[-1]
        self.min_input_size = 2**num_pools

        self.stem = ConvBlock(in_chans, widths[0], pool=num_pools > 0)
        self.stages = nn.Sequential(
            *[ConvBlock(widths[i - 1], widths[i], pool=i < num_pools) for i in range(1, len(widths))]
        )
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.head_drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)

    # --- timm model interface -------------------------------------------------------------------
    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Layer groups for layer-wise lr decay: stem = 0, stage i = i + 1, head last."""
        return {"stem": r"^stem", "blocks": r"^stages\.(\d+)"}

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameter names kept out of weight decay (1-D params are already excluded by timm)."""
        return set()

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Accepted for interface parity; the network is too small for checkpointing to matter."""

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the head with a freshly initialised one of ``num_classes`` logits (0 = none)."""
        if global_pool not in (None, "avg"):
            raise ValueError(f"global_pool={global_pool!r}: SmallCNN only offers 'avg'.")
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            nn.init.normal_(self.fc.weight, std=0.01)
            nn.init.zeros_(self.fc.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, H, W) -> (B, num_features, H / 2**num_pools, W / 2**num_pools)``."""
        h, w = x.shape[-2:]
        if min(h, w) < self.min_input_size:
            raise ValueError(
                f"input of {h}x{w} px is too small for {type(self).__name__}: it pools "
                f"{self.min_input_size.bit_length() - 1} times, so give at least "
                f"{self.min_input_size}x{self.min_input_size} px (upsample or use larger tiles)."
            )
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """``(B, C, h, w) -> (B, num_classes)``, or ``(B, C)`` pooled features when ``pre_logits``."""
        x = self.head_drop(self.global_pool(x).flatten(1))  # (B, C)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _cfg(num_classes: int, bands: int, size: int, description: str) -> dict[str, Any]:
    """A pretrained_cfg without weights: describes the intended input (bands, px) only."""
    return {
        "url": "",
        "num_classes": num_classes,
        "input_size": (bands, size, size),
        "pool_size": None,
        "fixed_input_size": False,
        "interpolation": "bilinear",
        "crop_pct": 1.0,
        "crop_mode": "center",
        "mean": (0.0,) * bands,
        "std": (1.0,) * bands,
        "first_conv": "stem.conv",
        "classifier": "fc",
        "license": "apache-2.0",
        "description": description,
    }


default_cfgs = generate_default_cfgs(
    {
        "satellite_cnn": _cfg(10, 13, 64, "4 conv-BN-ReLU blocks for multi-class land cover on small few-band patches"),
        "flood_cnn": _cfg(2, 4, 32, "3 conv-BN-ReLU blocks for binary water / flood patches (2 logits)"),
    }
)


def _register(fn):
    """``register_model``, idempotent when this module is imported again (e.g. ``importlib.reload``).

    A name already registered by *this* module is re-registered silently (so the registry points at
    the fresh functions); a name owned by any other module is a conflict and raises.
    """
    name = fn.__name__
    if is_model(name):
        owner = getattr(model_entrypoint(name), "__module__", None)
        if owner != fn.__module__:
            raise RuntimeError(
                f"timm model name {name!r} is already registered by {owner}; "
                f"rename the entry point in {__name__} to avoid shadowing it."
            )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=f"Overwriting {name} in registry")
            return register_model(fn)
    return register_model(fn)


def _create(variant: str, pretrained: bool, **kwargs: Any) -> SmallCNN:
    if pretrained:
        raise ValueError(
            f"{variant} has no published weights: build it with pretrained=False and, to start from "
            f"a file, pass weights=<path> to spectral_training.models.build_classifier."
        )
    return build_model_with_cfg(SmallCNN, variant, pretrained, **kwargs)


@_register
def satellite_cnn(pretrained: bool = False, **kwargs: Any) -> SmallCNN:
    """Land-cover CNN: widths 32-64-96-128, 3 pools (>= 8 px), ~0.19 M params at 13 bands / 10 classes."""
    return _create("satellite_cnn", pretrained, **dict({"widths": (32, 64, 96, 128), "num_pools": 3}, **kwargs))


@_register
def flood_cnn(pretrained: bool = False, **kwargs: Any) -> SmallCNN:
    """Water / flood CNN: widths 16-32-64, 2 pools (>= 4 px), 2 logits, ~0.024 M params at 4 bands."""
    return _create("flood_cnn", pretrained, **dict({"widths": (16, 32, 64), "num_pools": 2}, **kwargs))

