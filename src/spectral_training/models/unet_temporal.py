"""TemporalUNet: one date of a satellite image time series predicted from the other dates.

Shapes: a batch of series is ``series`` (B, T, C, H, W) normalised (invalid pixels and padding
dates 0), ``day_of_year`` (B, T), ``date_mask`` (B, T) True = a real date, ``valid`` (B, T, H, W)
True = observed, and ``target`` (B,) the index of the held-out date. The held-out date's values
and mask are never read by the model: every input below excludes it.

Why this input (and not all T dates stacked)
---------------------------------------------
Stacking the T dates as T x C channels ties a channel to a position in the list, not to a time:
position 5 is May in one series and August in another, the channel count depends on the
store's ``max_seq_len``, and the network must learn date arithmetic from constant channels. Gap
filling is local in time, so the U-Net gets the target's temporal neighbourhood, ordered by
distance, with the distances given (``in_chans = 2K (C + 2) + C + 4``):

* **K context dates on each side** (``context_dates``), nearest first: C bands, the date's valid
  mask and its signed offset to the target (days / ``time_scale_days``, a constant channel).
  A side with fewer than K dates gets empty slots (all zero, valid 0).
* **the per-pixel gap fill**: at each pixel the linear interpolation between the nearest *valid*
  observation before and after the target (so a cloud on the nearest date falls back to a farther
  one), and the two gaps in days (capped at :data:`MISSING_GAP` x ``time_scale_days`` where a side
  has none). This carries the information of every date, not only the K nearest.
* **the target's season**: sin and cos of 2 pi day_of_year / 365.25.

With ``residual`` (the default) the U-Net predicts a correction to the gap fill, its head
starting at zero, so training starts *at* the linear-interpolation baseline and learns where
interpolation is wrong (green-up, harvest, phenology between sparse dates). The same functions
give the two baselines the evaluation scores it against: :func:`persistence` (the nearest valid
observation) and :func:`linear_interpolation`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from spectral_training.models.unet import UNet

MISSING_GAP = 4.0  # gap channel (in time_scale units) of a side without any valid observation


class PixelNeighbours(NamedTuple):
    """Per pixel, the nearest valid observation on each side of the target date (target excluded)."""

    before_index: Tensor  # (B, H, W) long: date index (meaningless where the gap is inf)
    before_gap: Tensor  # (B, H, W) float days, inf = none
    after_index: Tensor
    after_gap: Tensor


def target_day(day_of_year: Tensor, target: Tensor) -> Tensor:
    """(B,) day of year of each series' held-out date."""
    return day_of_year.gather(1, target.long()[:, None]).squeeze(1)


def _offsets(day_of_year: Tensor, date_mask: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Signed days to the target (B, T) float and the usable dates (real, not the target) (B, T) bool."""
    positions = torch.arange(day_of_year.shape[1], device=day_of_year.device)
    usable = date_mask.bool() & (positions[None] != target.long()[:, None])
    delta = (day_of_year - target_day(day_of_year, target)[:, None]).float()
    return delta, usable


def pixel_neighbours(day_of_year: Tensor, date_mask: Tensor, valid: Tensor, target: Tensor) -> PixelNeighbours:
    """The nearest valid observation before (or on the same day) and after the target, per pixel."""
    delta, usable = _offsets(day_of_year, date_mask, target)
    seen = usable[..., None, None] & valid.bool()  # (B, T, H, W)
    d = delta[..., None, None].expand_as(seen)
    inf = torch.full_like(d, math.inf)
    before_gap, before_index = torch.where(seen & (d <= 0), -d, inf).min(dim=1)
    after_gap, after_index = torch.where(seen & (d > 0), d, inf).min(dim=1)
    return PixelNeighbours(before_index, before_gap, after_index, after_gap)


def _take(series: Tensor, index: Tensor) -> Tensor:
    """(B, T, C, H, W) at a per-pixel date index (B, H, W) -> (B, C, H, W)."""
    b, _, c, h, w = series.shape
    return series.gather(1, index[:, None, None].expand(b, 1, c, h, w)).squeeze(1)


def _fills(series: Tensor, n: PixelNeighbours) -> tuple[Tensor, Tensor]:
    """(persistence, linear interpolation), both (B, C, H, W); 0 (the training mean) where no date is valid."""
    has_before, has_after = torch.isfinite(n.before_gap), torch.isfinite(n.after_gap)
    before, after = _take(series, n.before_index), _take(series, n.after_index)
    nearest = torch.where((n.after_gap < n.before_gap)[:, None], after, before)  # ties go to the earlier date
    nearest = torch.where((has_before | has_after)[:, None], nearest, torch.zeros_like(nearest))
    both = has_before & has_after
    span = torch.where(both, n.before_gap + n.after_gap, torch.ones_like(n.before_gap))
    weight = torch.where(both, n.before_gap / span, torch.zeros_like(span))[:, None]  # share of `after`
    linear = torch.where(both[:, None], before + (after - before) * weight, nearest)
    return nearest, linear


def persistence(series: Tensor, day_of_year: Tensor, date_mask: Tensor, valid: Tensor, target: Tensor) -> Tensor:
    """Baseline: each pixel takes its nearest valid observation in time (ties: the earlier date)."""
    return _fills(series, pixel_neighbours(day_of_year, date_mask, valid, target))[0]


def linear_interpolation(series: Tensor, day_of_year: Tensor, date_mask: Tensor, valid: Tensor,
                         target: Tensor) -> Tensor:
    """Baseline: per pixel, linear in time between the nearest valid observations before and after;
    persistence where only one side has one."""
    return _fills(series, pixel_neighbours(day_of_year, date_mask, valid, target))[1]


def context_slots(series: Tensor, day_of_year: Tensor, date_mask: Tensor, valid: Tensor, target: Tensor,
                  k: int) -> tuple[Tensor, Tensor, Tensor]:
    """The k nearest real dates before and the k nearest after the target, nearest first.

    Returns:
        values (B, 2k, C, H, W), valid (B, 2k, H, W) bool (False for an empty slot), offsets
        (B, 2k) signed days (0 for an empty slot).
    """
    delta, usable = _offsets(day_of_year, date_mask, target)
    inf = torch.full_like(delta, math.inf)
    slots, found = [], []
    for side in (usable & (delta <= 0), usable & (delta > 0)):
        key = torch.where(side, delta.abs(), inf)
        if key.shape[1] < k:  # fewer stored dates than slots: pad with empty ones
            key = torch.cat([key, inf[:, :1].expand(-1, k - key.shape[1])], dim=1)
        distance, index = key.topk(k, dim=1, largest=False)  # nearest first
        slots.append(index.clamp(max=series.shape[1] - 1))
        found.append(torch.isfinite(distance))
    index, present = torch.cat(slots, 1), torch.cat(found, 1)  # (B, 2k)
    b, _, c, h, w = series.shape
    values = series.gather(1, index[..., None, None, None].expand(b, 2 * k, c, h, w))
    seen = valid.bool().gather(1, index[..., None, None].expand(b, 2 * k, h, w)) & present[..., None, None]
    offsets = torch.where(present, delta.gather(1, index), torch.zeros_like(present, dtype=delta.dtype))
    return values * seen[:, :, None], seen, offsets


def temporal_in_chans(num_bands: int, context_dates: int) -> int:
    """Input channels of the U-Net: 2K context slots of (C bands, valid, offset), the gap fill (C),
    its two gaps, and the target's season (sin, cos)."""
    return 2 * context_dates * (num_bands + 2) + num_bands + 4


class TemporalUNet(nn.Module):
    """Predict the held-out date of a series from the others; (B, C, H, W) normalised values.

    Args:
        encoder: a timm model with ``features_only`` (resnet18, ...), random init.
        num_bands: bands per date (the output has as many).
        image_size: px of the tiles (recorded; any size runs).
        context_dates: K, the dates taken on each side of the target.
        residual: predict a correction to the per-pixel linear interpolation (head starts at 0).
        time_scale_days: days per unit of the offset and gap channels.
    """

    def __init__(self, encoder: str, num_bands: int, image_size: int, context_dates: int = 2, residual: bool = True,
                 time_scale_days: float = 30.0, decoder_channels: Sequence[int] = (128, 64, 48, 32, 24),
                 encoder_kwargs: Mapping | None = None) -> None:
        super().__init__()
        if context_dates < 1:
            raise ValueError(f"context_dates must be >= 1, got {context_dates}")
        if time_scale_days <= 0:
            raise ValueError(f"time_scale_days must be > 0, got {time_scale_days}")
        self.num_bands, self.image_size = int(num_bands), int(image_size)
        self.context_dates, self.residual, self.time_scale = int(context_dates), bool(residual), float(time_scale_days)
        self.input_channels = temporal_in_chans(self.num_bands, self.context_dates)
        self.unet = UNet(encoder, self.input_channels, self.num_bands, decoder_channels, encoder_kwargs)
        if self.residual:  # start exactly at the linear interpolation; learn the correction
            nn.init.zeros_(self.unet.head.weight)
            nn.init.zeros_(self.unet.head.bias)

    def inputs(self, series: Tensor, day_of_year: Tensor, date_mask: Tensor, valid: Tensor,
               target: Tensor) -> tuple[Tensor, Tensor]:
        """(U-Net input (B, in_chans, H, W), the per-pixel linear gap fill (B, C, H, W)), in fp32."""
        series = series.float()
        b, _, _, h, w = series.shape
        values, seen, offsets = context_slots(series, day_of_year, date_mask, valid, target, self.context_dates)
        plane = lambda v: v.float()[:, :, None, None].expand(-1, -1, h, w)  # noqa: E731  (B, n) -> (B, n, H, W)
        slots = torch.cat([values, seen[:, :, None].float(), plane(offsets / self.time_scale)[:, :, None]], dim=2)
        n = pixel_neighbours(day_of_year, date_mask, valid, target)
        _, fill = _fills(series, n)
        gaps = torch.stack([n.before_gap, n.after_gap], 1) / self.time_scale
        gaps = torch.nan_to_num(gaps, posinf=MISSING_GAP).clamp(max=MISSING_GAP)
        season = 2 * math.pi * target_day(day_of_year, target).float() / 365.25
        x = torch.cat([slots.flatten(1, 2), fill, gaps, plane(torch.stack([season.sin(), season.cos()], 1))], dim=1)
        return x, fill

    def forward(self, series: Tensor, day_of_year: Tensor, date_mask: Tensor, valid: Tensor, target: Tensor) -> dict:
        """-> {"pred" (B, C, H, W) fp32, "fill" (B, C, H, W): the linear interpolation it starts from}."""
        x, fill = self.inputs(series, day_of_year, date_mask, valid, target)
        out = self.unet(x).float()
        return {"pred": fill + out if self.residual else out, "fill": fill}
