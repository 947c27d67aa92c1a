"""Named sizes of the spectral MAE encoder, and parameter counting.

Each variant fixes the encoder (depth, heads, width); the decoder defaults to 8 blocks of width
512 with 16 heads for every variant (override ``decoder_depth``, ``decoder_embed_dim``,
``decoder_num_heads``). ``reference_encoder_params`` is the figure the reference set-up quotes,
kept for comparison only: our counts depend on the patch size and band count (the patch
embedding is ``spectral_patch * spatial_patch**2 -> width``), see :func:`mae_parameter_counts`.

Trainable parameters (fixed sin-cos position codes left out) at the reference set-up, 30 bands,
500 px, 25x25x5 patches (``mae_parameter_counts(name, 30, 500)``), and of the encoder at the
ViT set-up 3 bands, 224 px, 16x16x3:

=======  ==========  ==========  ==========  ============  ======
variant  encoder     decoder     total       enc @224/16   quoted
=======  ==========  ==========  ==========  ============  ======
tiny       5.94 M     26.92 M     32.86 M      5.49 M      ~5M
small     22.50 M     27.02 M     49.52 M     21.59 M      ~22M
base      87.46 M     27.22 M    114.67 M     85.65 M      ~75M
medium    52.04 M     27.09 M     79.13 M     50.83 M      ~86M
large    305.51 M     27.35 M    332.86 M    303.10 M      ~307M
huge     633.68 M     27.48 M    661.16 M    630.67 M      ~632M
=======  ==========  ==========  ==========  ============  ======

The quoted figures are encoder-only ViT counts; they match except for base and medium, whose
quotes look swapped and off (12 x 768 is ViT-B, 86M; 16 x 512 is ~51M). So by size the order is
tiny < small < medium < base < large < huge. The decoder is ~27M for every variant (8 blocks of
512: 25.2M, plus a 512 -> 3125 prediction head at the reference patch size).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["MAEVariant", "MAE_VARIANTS", "count_parameters", "mae_parameter_counts"]


@dataclass(frozen=True)
class MAEVariant:
    """Encoder size of one named variant."""

    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0
    reference_encoder_params: str = ""

    def as_kwargs(self) -> dict[str, Any]:
        """The keyword arguments :class:`~spectral_training.models.mae.MaskedAutoencoderViT` takes."""
        return {"embed_dim": self.embed_dim, "depth": self.depth, "num_heads": self.num_heads, "mlp_ratio": self.mlp_ratio}


#: variant name -> encoder size (depth / heads / width as in the reference set-up)
MAE_VARIANTS: dict[str, MAEVariant] = {
    "tiny": MAEVariant(embed_dim=192, depth=12, num_heads=3, reference_encoder_params="~5M"),
    "small": MAEVariant(embed_dim=384, depth=12, num_heads=6, reference_encoder_params="~22M"),
    "base": MAEVariant(embed_dim=768, depth=12, num_heads=12, reference_encoder_params="~75M"),
    "medium": MAEVariant(embed_dim=512, depth=16, num_heads=16, reference_encoder_params="~86M"),
    "large": MAEVariant(embed_dim=1024, depth=24, num_heads=16, reference_encoder_params="~307M"),
    "huge": MAEVariant(embed_dim=1280, depth=32, num_heads=16, reference_encoder_params="~632M"),
}


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of parameter elements of ``module`` (works on ``meta`` tensors too).

    ``trainable_only`` leaves out frozen parameters such as the fixed sin-cos position embeddings.
    """
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def mae_parameter_counts(variant: str, num_bands: int, image_size: int | tuple[int, int], **overrides: Any) -> dict[str, int]:
    """Trainable parameters of a variant, built on the ``meta`` device (no memory, no init cost).

    Returns:
        ``{"encoder": ..., "decoder": ..., "total": ...}``; the encoder is everything the
        fine-tuning classifier keeps (patch embedding, cls token, blocks, final norm), the decoder
        the rest (decoder embedding, mask token, decoder blocks and norm, prediction head).
    """
    from spectral_training.models.mae import build_mae  # local: mae imports this module

    overrides = {**overrides, "device": torch.device("meta")}
    return build_mae(variant, num_bands, image_size, **overrides).parameter_counts()
