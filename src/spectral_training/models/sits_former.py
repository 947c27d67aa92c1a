"""SITS-Former: a transformer over satellite image time series, and its masked pretraining.

A sample is a series of ``T`` dates of a ``C``-band tile, ``x`` of shape ``(B, T, C, H, W)``,
with the day of year of every date ``(B, T)`` and a date mask ``(B, T)`` (True = a real date,
False = padding up to ``max_seq_len``).

    x (B, T, C, H, W)
      -> per date, a 3-D convolution over (band group, patch row, patch col): each of the G band
         groups of g bands of each p x p patch becomes a vector        (B, T, G, N, D)
      -> the G group vectors of a (date, patch) are concatenated and projected to one token;
         pretraining replaces hidden groups by a learned mask vector first  (B, T, N, D)
      -> + temporal code from the DAY OF YEAR (sin-cos of the day, not of the index: two dates
         a month apart are a month apart however many dates lie between)
         + spatial code (2-D sin-cos of the patch's row and column)
      -> [cls] + T*N tokens through `num_layers` pre-norm transformer blocks; attention
         ignores the tokens of masked dates (a key padding mask), so a padded date, whatever it
         holds, never changes another token                           (B, 1 + T*N, D)
      -> classification: LayerNorm(cls) -> dropout -> linear head         (B, num_classes)

The attention of the cls token over dates (summed over each date's patches, mean over heads)
is returned by ``forward_features(..., return_attention=True)`` for every layer: the
evaluation plots it.

:class:`SITSFormerPretrain` hides random (date, band group) blocks, the joint spectral x
temporal masking, and reconstructs their pixels from the encoder's tokens; the loss is the MSE
on hidden, valid (observed, real band, real date) values only. Its ``encoder`` is a
:class:`SITSFormer` without a head, so a classifier loads it with a strict key check where the
head alone is missing (:func:`load_pretrained_encoder`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from spectral_training.models.pos_embed import sincos_2d

TEMPORAL_ENCODINGS = ("day_of_year", "index")


def temporal_code(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Sin-cos code of real positions (days of year or indices), computed on their device.

    positions: (B, T) -> (B, T, dim); ``dim // 2`` frequencies ``1 / 10000 ** (k / (dim // 2))``,
    sines then cosines (an odd ``dim`` ends with a zero column).
    """
    half = dim // 2
    omega = 1.0 / 10000.0 ** (torch.arange(half, device=positions.device, dtype=torch.float32) / max(half, 1))
    angles = positions.float()[..., None] * omega  # (B, T, half)
    code = torch.cat([angles.sin(), angles.cos()], dim=-1)  # (B, T, 2 * half)
    return F.pad(code, (0, dim - 2 * half))


class SpectralTemporalEmbedding(nn.Module):
    """Per-date patch embedding of the spectral-spatial cube, band group by band group.

    A ``Conv3d`` with kernel ``(band_group_size, p, p)`` and the same stride turns each date's
    ``(C, H, W)`` cube into G x N vectors (G band groups, N patches); a learned group code tells
    the groups apart (the kernel is shared), and a linear layer merges a patch's G vectors into
    its token. Bands are zero-padded to a multiple of the group size (the padding is never scored).
    """

    def __init__(self, in_channels: int, img_size: int, patch_size: int, band_group_size: int, embed_dim: int):
        super().__init__()
        self.num_groups = math.ceil(in_channels / band_group_size)
        self.padded_channels = self.num_groups * band_group_size
        self.grid = img_size // patch_size
        self.proj = nn.Conv3d(1, embed_dim, kernel_size=(band_group_size, patch_size, patch_size),
                              stride=(band_group_size, patch_size, patch_size))
        self.group_code = nn.Parameter(torch.zeros(1, 1, self.num_groups, 1, embed_dim))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, 1, 1, embed_dim))  # stands in for a hidden group
        self.merge = nn.Linear(self.num_groups * embed_dim, embed_dim)
        nn.init.trunc_normal_(self.group_code, std=0.02)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def forward(self, x: torch.Tensor, hide: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, C, H, W), hide (B, T, G) bool or None -> tokens (B, T, N, D)."""
        b, t, c, h, w = x.shape
        x = F.pad(x, (0, 0, 0, 0, 0, self.padded_channels - c))  # (B, T, G*g, H, W)
        z = self.proj(x.reshape(b * t, 1, self.padded_channels, h, w))  # (B*T, D, G, H/p, W/p)
        z = z.flatten(3).permute(0, 2, 3, 1).reshape(b, t, self.num_groups, -1, z.shape[1])  # (B, T, G, N, D)
        z = z + self.group_code
        if hide is not None:
            keep = (~hide)[..., None, None].to(z.dtype)  # (B, T, G, 1, 1)
            z = z * keep + (self.mask_token + self.group_code) * (1 - keep)
        z = z.permute(0, 1, 3, 2, 4).flatten(3)  # (B, T, N, G*D)
        return self.merge(z)  # (B, T, N, D)


class Attention(nn.Module):
    """Multi-head self-attention with a key padding mask (``F.scaled_dot_product_attention``)."""

    def __init__(self, dim: int, num_heads: int, dropout: float):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}: choose sizes that divide")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, keep_keys: torch.Tensor,
                cls_attention: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, L, D), keep_keys (B, L) bool -> (B, L, D), and the cls row of the attention (B, L) if asked."""
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        mask = keep_keys[:, None, None, :]  # (B, 1, 1, L): True = may be attended to
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                             dropout_p=self.dropout if self.training else 0.0)  # (B, H, L, d)
        weights = None
        if cls_attention:  # SDPA gives no weights: recompute the cls query's row alone (cheap)
            logits = (q[:, :, :1] @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])  # (B, H, 1, L)
            weights = logits.float().masked_fill(~mask, float("-inf")).softmax(-1).mean(1)[:, 0]  # (B, L)
        return self.proj(out.transpose(1, 2).reshape(b, n, d)), weights


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)); x + mlp(norm(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim),
                                 nn.Dropout(dropout))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, keep_keys: torch.Tensor, cls_attention: bool = False):
        attended, weights = self.attn(self.norm1(x), keep_keys, cls_attention)
        x = x + self.drop(attended)
        return x + self.mlp(self.norm2(x)), weights


class SITSFormer(nn.Module):
    """The SITS-Former classifier (``num_classes=0``: the encoder alone, as pretraining builds it).

    Args (the reference's defaults): img_size 224, patch_size 16, in_channels 13 (Sentinel-2),
    num_classes 10, embed_dim 256, num_layers 8, num_heads 8, mlp_ratio 4, dropout 0.1,
    max_seq_len 20 (the most dates a series may have). Ours: band_group_size (bands per group
    of the embedding and of the pretraining masks) and temporal_encoding (``day_of_year``, or
    ``index`` for comparison).
    """

    def __init__(self, img_size: int = 224, patch_size: int = 16, in_channels: int = 13, num_classes: int = 10,
                 embed_dim: int = 256, num_layers: int = 8, num_heads: int = 8, mlp_ratio: float = 4.0,
                 dropout: float = 0.1, max_seq_len: int = 20, band_group_size: int = 4,
                 temporal_encoding: str = "day_of_year"):
        super().__init__()
        if img_size % patch_size:
            fits = [s for s in range(patch_size, 2 * img_size + 1, patch_size)][:6]
            raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}; sizes that fit: {fits}")
        if temporal_encoding not in TEMPORAL_ENCODINGS:
            raise ValueError(f"temporal_encoding must be one of {TEMPORAL_ENCODINGS}, got {temporal_encoding!r}")
        self.img_size, self.patch_size, self.in_channels = img_size, patch_size, in_channels
        self.max_seq_len, self.embed_dim, self.temporal_encoding = max_seq_len, embed_dim, temporal_encoding
        self.embed = SpectralTemporalEmbedding(in_channels, img_size, patch_size, band_group_size, embed_dim)
        self.num_patches = self.embed.grid ** 2
        self.register_buffer("spatial_code", sincos_2d(embed_dim, self.embed.grid, self.embed.grid)[None],
                             persistent=False)  # (1, N, D), fixed
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList([Block(embed_dim, num_heads, mlp_ratio, dropout) for _ in range(num_layers)])
        self.norm = nn.LayerNorm(embed_dim)
        self.head_drop = nn.Dropout(dropout)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else None
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(_init_weights)

    @property
    def num_groups(self) -> int:
        return self.embed.num_groups

    def _check(self, x: torch.Tensor, day_of_year: torch.Tensor, date_mask: torch.Tensor) -> None:
        b, t, c, h, w = x.shape
        if c != self.in_channels or h != self.img_size or w != self.img_size:
            raise ValueError(f"SITS-Former built for {self.in_channels} bands of {self.img_size} px got a series "
                             f"(B, T, C, H, W) = {tuple(x.shape)}: build it with in_channels={c}, img_size={h}")
        if t > self.max_seq_len:
            raise ValueError(f"a series of {t} dates is longer than max_seq_len {self.max_seq_len}: raise max_seq_len")
        if day_of_year.shape != (b, t) or date_mask.shape != (b, t):
            raise ValueError(f"day_of_year {tuple(day_of_year.shape)} and date_mask {tuple(date_mask.shape)} "
                             f"must both be (B, T) = {(b, t)}")

    def forward_features(self, x: torch.Tensor, day_of_year: torch.Tensor, date_mask: torch.Tensor,
                         hide: torch.Tensor | None = None, return_attention: bool = False):
        """x (B, T, C, H, W), day_of_year (B, T), date_mask (B, T) bool, hide (B, T, G) bool or None
        -> tokens (B, 1 + T*N, D) after the final norm, and the cls attention over dates per layer
        (B, num_layers, T) when ``return_attention`` (else None)."""
        self._check(x, day_of_year, date_mask)
        b, t = date_mask.shape
        date_mask = date_mask.bool()
        tokens = self.embed(x, hide)  # (B, T, N, D)
        positions = day_of_year if self.temporal_encoding == "day_of_year" else \
            torch.arange(t, device=x.device).expand(b, t)
        tokens = tokens + temporal_code(positions, self.embed_dim)[:, :, None].to(tokens.dtype)  # when
        tokens = tokens + self.spatial_code[:, None].to(tokens.dtype)  # where
        tokens = tokens.reshape(b, t * self.num_patches, -1)  # (B, T*N, D)
        cls = self.cls_token.expand(b, -1, -1).to(tokens.dtype)
        z = self.pos_drop(torch.cat([cls, tokens], dim=1))  # (B, 1 + T*N, D)
        keep = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=x.device),
                          date_mask.repeat_interleave(self.num_patches, dim=1)], dim=1)  # (B, 1 + T*N)
        per_layer = []
        for block in self.blocks:
            z, weights = block(z, keep, cls_attention=return_attention)
            if weights is not None:  # (B, 1 + T*N) -> (B, T): the share of each date
                per_layer.append(weights[:, 1:].reshape(b, t, self.num_patches).sum(-1))
        z = self.norm(z)
        return z, (torch.stack(per_layer, dim=1) if return_attention else None)

    def forward(self, x: torch.Tensor, day_of_year: torch.Tensor, date_mask: torch.Tensor) -> torch.Tensor:
        """(B, T, C, H, W), (B, T), (B, T) -> logits (B, num_classes)."""
        if self.head is None:
            raise RuntimeError("this SITS-Former has no head (num_classes=0): use forward_features")
        z, _ = self.forward_features(x, day_of_year, date_mask)
        return self.head(self.head_drop(z[:, 0]))


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def random_block_mask(date_mask: torch.Tensor, num_groups: int, mask_ratio: float,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Hide ``mask_ratio`` of the (real date, band group) blocks of each series, at least one.

    date_mask (B, T) bool -> hide (B, T, G) bool; padded dates are never hidden.
    """
    b, t = date_mask.shape
    scores = torch.rand(b, t, num_groups, device=date_mask.device, generator=generator)
    scores = scores.masked_fill(~date_mask.bool()[..., None], 2.0)  # padded blocks sort last
    blocks = date_mask.sum(1, keepdim=True) * num_groups  # (B, 1) real blocks
    count = (blocks.float() * mask_ratio).round().clamp(min=1).long()
    count = torch.minimum(count, blocks)
    rank = scores.flatten(1).argsort(1).argsort(1)  # (B, T*G) rank of each block's score
    return (rank < count).reshape(b, t, num_groups)


class SITSFormerPretrain(nn.Module):
    """Joint spectral x temporal masked pretraining: reconstruct hidden (date, band group) blocks.

    ``encoder`` is a head-less :class:`SITSFormer`; ``decoder`` maps each (date, patch) token to
    the ``G*g x p x p`` values of that date's patch.
    """

    def __init__(self, mask_ratio: float = 0.4, **encoder_kwargs):
        super().__init__()
        encoder_kwargs["num_classes"] = 0
        self.encoder = SITSFormer(**encoder_kwargs)
        self.mask_ratio = float(mask_ratio)
        p, embed = self.encoder.embed, self.encoder.embed_dim
        self.decoder = nn.Sequential(nn.Linear(embed, embed), nn.GELU(),
                                     nn.Linear(embed, p.padded_channels * self.encoder.patch_size ** 2))
        self.decoder.apply(_init_weights)

    def unpatchify(self, pred: torch.Tensor, t: int) -> torch.Tensor:
        """(B, T*N, G*g*p*p) -> (B, T, G*g, H, W)."""
        b, p, grid = pred.shape[0], self.encoder.patch_size, self.encoder.embed.grid
        c = self.encoder.embed.padded_channels
        pred = pred.reshape(b, t, grid, grid, c, p, p).permute(0, 1, 4, 2, 5, 3, 6)
        return pred.reshape(b, t, c, grid * p, grid * p)

    def forward(self, x: torch.Tensor, day_of_year: torch.Tensor, date_mask: torch.Tensor,
                valid: torch.Tensor | None = None, hide: torch.Tensor | None = None) -> dict:
        """x (B, T, C, H, W), valid (B, T, H, W) bool (None = all observed), hide (B, T, G) or drawn
        -> {"loss", "pred" (B, T, C, H, W), "hide" (B, T, G)}."""
        b, t, c = x.shape[:3]
        if hide is None:
            hide = random_block_mask(date_mask, self.encoder.num_groups, self.mask_ratio)
        z, _ = self.encoder.forward_features(x, day_of_year, date_mask, hide=hide)
        pred = self.unpatchify(self.decoder(z[:, 1:]), t)[:, :, :c]  # (B, T, C, H, W)
        group_size = self.encoder.embed.padded_channels // self.encoder.num_groups
        scored = hide.repeat_interleave(group_size, dim=2)[:, :, :c]  # (B, T, C): hidden real bands
        scored = scored & date_mask.bool()[..., None]
        weight = scored[..., None, None].float()  # (B, T, C, 1, 1)
        if valid is not None:
            weight = weight * valid[:, :, None].float()  # only observed pixels are scored
        total = weight.expand_as(pred).sum()
        error = ((pred.float() - x.float()) ** 2 * weight).sum()
        loss = error / total.clamp(min=1.0)  # no hidden valid value: a zero loss that keeps the graph
        return {"loss": loss, "pred": pred, "hide": hide}


def load_pretrained_encoder(model: SITSFormer, state: Mapping[str, torch.Tensor]) -> None:
    """Load a pretraining checkpoint's encoder into a classifier; only the head may be missing.

    ``state`` is a :class:`SITSFormerPretrain` state dict (keys ``encoder.*``) or an encoder's.

    Raises:
        ValueError: keys other than the head's are missing or unexpected (e.g. another model
            size), naming them.
    """
    prefix = "encoder."
    encoder = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)} or dict(state)
    try:
        result = model.load_state_dict(encoder, strict=False)
    except RuntimeError as err:  # a shape mismatch raises even when not strict
        raise ValueError(f"the pretrained SITS-Former encoder does not fit this classifier ({err}); build it with "
                         f"the pretraining's model sizes") from err
    missing = [k for k in result.missing_keys if not k.startswith("head.")]
    if missing or result.unexpected_keys:
        raise ValueError(f"the pretrained SITS-Former encoder does not fit this classifier: missing {missing}, "
                         f"unexpected {list(result.unexpected_keys)}; build the classifier with the pretraining's "
                         f"model sizes (embed_dim, num_layers, num_heads, patch_size, band_group_size, img_size)")
