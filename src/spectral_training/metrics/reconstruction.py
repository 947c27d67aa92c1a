"""Streaming reconstruction metrics for masked autoencoders on spectral cubes.

What is measured, and where
---------------------------
Every input is in PHYSICAL units (the caller undoes the normalisation first) and shaped
``(B, C, H, W)``. ``masked`` is a boolean tensor of the same shape, ``True`` where the model
did not see the value. The model is judged on what it had to invent, so the headline numbers
are **masked-only**:

``mse``      mean squared error over masked values (physical units squared).
``psnr``     ``10 * log10(data_range**2 / mse)`` with that masked-only MSE (dB). Per band it is
             the textbook formula with the band's own range; overall it is the PSNR of the cube
             after dividing every band by its range, i.e. ``-10 * log10(mean((err / range)**2))``
             over all masked values (equal to the textbook formula when the range is global).
``ssim``     the SSIM map (torchmetrics) of the *composed* image — visible values copied from
             the input, masked values from the reconstruction — averaged over masked values
             only. Windows near a patch border also see real visible pixels; that is the
             context the model had, so it is kept.
``sam_deg``  spectral angle (degrees) between the original and the composed spectrum of each
             pixel, averaged over masked pixels. A pixel counts as masked when ANY of its bands
             is masked. Spectral angle has no per-band version. Pixels whose original or
             composed spectrum is all zeros have no angle; they are left out and counted in
             ``counts.sam_excluded_pixels``.

For comparison with papers that score the whole image, ``psnr_composed`` and
``ssim_composed`` score the composed image over ALL values (visible values have zero error, so
these are always at least as good as the masked-only numbers).

SSIM details: every band ``c`` is divided by its ``data_range[c]`` and torchmetrics is called
with ``data_range=1.0`` (SSIM(x/d, y/d; range 1) == SSIM(x, y; range d) exactly), so every band
uses its own range. A Gaussian window is used: 11 x 11 with sigma 1.5 (Wang et al. 2004) when
the tiles are at least 11 px; for smaller tiles the window shrinks to the largest odd size
``k <= min(H, W)`` (k >= 3) with ``sigma = (k - 1) / 7`` (torchmetrics derives the window size
from sigma as ``2 * int(3.5 * sigma + 0.5) + 1``). The window is fixed at the first
``update()``; the size used is reported in ``settings``.

Streaming: ``update()`` adds float64 sums per band to a handful of accumulators, so memory does
not grow with the number of batches (torchmetrics' own SSIM/SAM classes keep per-image lists when
``reduction='none'``; they are not used, only their functional forms for one batch at a time).

``compute()`` returns plain Python floats, ints, lists and dicts (strict JSON): values that are
undefined (no masked values yet) or infinite (zero error gives infinite PSNR) are ``None``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics.functional.image import spectral_angle_mapper, structural_similarity_index_measure

__all__ = [
    "ReconstructionMetrics",
    "compose_reconstruction",
    "flatten_metrics",
    "ssim_window",
]

_DEFAULT_SSIM_KERNEL = 11
_DEFAULT_SSIM_SIGMA = 1.5


def compose_reconstruction(original: Tensor, reconstruction: Tensor, masked: Tensor) -> Tensor:
    """Return the composed image: reconstruction where ``masked``, the original elsewhere.

    Args:
        original: ``(B, C, H, W)`` input cube.
        reconstruction: ``(B, C, H, W)`` model output, same units as ``original``.
        masked: boolean, broadcastable to ``original``; ``True`` where the model did not see the value.
    """
    return torch.where(masked.bool(), reconstruction, original)


def ssim_window(height: int, width: int, max_kernel: int = _DEFAULT_SSIM_KERNEL) -> tuple[int, float]:
    """Gaussian SSIM window ``(kernel_size, sigma)`` that fits an ``height x width`` image.

    11 px / sigma 1.5 when the image allows it, else the largest odd ``k <= min(height, width)``
    with ``sigma = (k - 1) / 7`` so that torchmetrics builds exactly a ``k x k`` window.
    """
    side = min(height, width, max_kernel)
    k = side if side % 2 == 1 else side - 1
    if k < 3:
        raise ValueError(
            f"SSIM needs images of at least 3 x 3 pixels; got {height} x {width}. "
            "Evaluate on larger tiles or drop SSIM for this dataset."
        )
    if k == _DEFAULT_SSIM_KERNEL:
        return k, _DEFAULT_SSIM_SIGMA
    return k, (k - 1) / 7.0


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _as_list(t: Tensor) -> list[float | None]:
    return [_finite_or_none(v) for v in t.tolist()]


class ReconstructionMetrics:
    """Accumulate MSE, PSNR, SSIM (overall and per band) and SAM over masked values.

    Args:
        num_bands: number of bands ``C`` of the cubes.
        data_range: ``max - min`` of the data in physical units, one float for all bands or one
            per band (from the training band stats). Must be positive.
        band_names: optional names, one per band, echoed in the result.
        wavelengths_nm: optional centre wavelengths in nm, one per band, echoed in the result.

    Use ``update(original, reconstruction, masked)`` once per batch, then ``compute()``.
    See the module docstring for exactly what each number means.
    """

    def __init__(
        self,
        num_bands: int,
        data_range: float | Sequence[float] | Tensor,
        band_names: Sequence[str] | None = None,
        wavelengths_nm: Sequence[float] | None = None,
    ) -> None:
        if int(num_bands) < 1:
            raise ValueError(f"num_bands must be >= 1, got {num_bands}.")
        self.num_bands = int(num_bands)
        dr = torch.as_tensor(data_range, dtype=torch.float64).flatten()
        if dr.numel() == 1:
            dr = dr.expand(self.num_bands).clone()
        if dr.numel() != self.num_bands:
            raise ValueError(
                f"data_range has {dr.numel()} values but num_bands is {self.num_bands}: "
                "give one global range or one per band (band stats max - min)."
            )
        bad = [i for i, v in enumerate(dr.tolist()) if not (math.isfinite(v) and v > 0)]
        if bad:
            raise ValueError(
                f"data_range must be finite and > 0 for every band; bands {bad} have "
                f"{[dr[i].item() for i in bad]}. A constant band (max == min) has no range: "
                "drop it or pass a global range."
            )
        self.data_range = dr
        if band_names is not None and len(band_names) != self.num_bands:
            raise ValueError(f"band_names has {len(band_names)} names, expected {self.num_bands}.")
        if wavelengths_nm is not None and len(wavelengths_nm) != self.num_bands:
            raise ValueError(f"wavelengths_nm has {len(wavelengths_nm)} values, expected {self.num_bands}.")
        self.band_names = list(band_names) if band_names is not None else None
        self.wavelengths_nm = [float(w) for w in wavelengths_nm] if wavelengths_nm is not None else None
        self.ssim_kernel_size: int | None = None
        self.ssim_sigma: float | None = None
        self.reset()

    def reset(self) -> None:
        """Forget every accumulated batch (the SSIM window choice is kept)."""
        c = self.num_bands
        z = lambda: torch.zeros(c, dtype=torch.float64)  # noqa: E731
        self._sse = z()  # sum of squared errors over masked values, per band
        self._n_masked = z()  # masked values per band
        self._n_all = z()  # all values per band
        self._ssim_masked = z()  # sum of SSIM map over masked values, per band
        self._ssim_all = z()  # sum of SSIM map over all values, per band
        self._sam_sum = 0.0  # radians, over masked pixels with a defined angle
        self._sam_n = 0
        self._sam_excluded = 0
        self._n_masked_pixels = 0
        self._n_pixels = 0
        self._n_images = 0

    # ------------------------------------------------------------------ update
    def _check(self, original: Tensor, reconstruction: Tensor, masked: Tensor) -> Tensor:
        if original.ndim != 4:
            raise ValueError(f"original must be (B, C, H, W); got shape {tuple(original.shape)}.")
        if reconstruction.shape != original.shape:
            raise ValueError(
                f"reconstruction shape {tuple(reconstruction.shape)} != original shape {tuple(original.shape)}."
            )
        if original.shape[1] != self.num_bands:
            raise ValueError(f"expected {self.num_bands} bands, got {original.shape[1]} (shape {tuple(original.shape)}).")
        if masked.dtype != torch.bool:
            raise TypeError(f"masked must be a bool tensor (True = hidden from the model); got {masked.dtype}.")
        try:
            return masked.expand_as(original)
        except RuntimeError as err:
            raise ValueError(
                f"masked shape {tuple(masked.shape)} does not broadcast to {tuple(original.shape)}."
            ) from err

    @torch.no_grad()
    def update(self, original: Tensor, reconstruction: Tensor, masked: Tensor) -> None:
        """Add one batch.

        Args:
            original: ``(B, C, H, W)`` ground truth in physical units.
            reconstruction: ``(B, C, H, W)`` raw model output in physical units (visible values
                are replaced by the original before scoring).
            masked: bool ``(B, C, H, W)`` (or broadcastable), ``True`` where hidden from the model.
        """
        masked = self._check(original, reconstruction, masked)
        b, c, h, w = original.shape
        if self.ssim_kernel_size is None:
            self.ssim_kernel_size, self.ssim_sigma = ssim_window(h, w)
        elif min(h, w) < self.ssim_kernel_size:
            raise ValueError(
                f"this batch is {h} x {w} px but the SSIM window was fixed at {self.ssim_kernel_size} px "
                "by the first batch; evaluate tiles of one size per ReconstructionMetrics."
            )

        x = original.to(torch.float64)
        y = compose_reconstruction(x, reconstruction.to(torch.float64), masked)  # (B, C, H, W)
        m = masked
        dr = self.data_range.to(x.device).view(1, c, 1, 1)

        # MSE / PSNR: per-band sums of squared error over masked values
        err2 = (y - x).pow(2)  # zero where visible
        self._sse += err2.sum(dim=(0, 2, 3)).cpu()
        self._n_masked += m.sum(dim=(0, 2, 3)).to(torch.float64).cpu()
        self._n_all += float(b * h * w)

        # SSIM map of the composed image, each band scaled by its own range
        _, ssim_map = structural_similarity_index_measure(
            y / dr,
            x / dr,
            gaussian_kernel=True,
            sigma=self.ssim_sigma,
            kernel_size=self.ssim_kernel_size,
            data_range=1.0,
            reduction="none",
            return_full_image=True,
        )  # (B, C, H, W)
        self._ssim_masked += (ssim_map * m).sum(dim=(0, 2, 3)).cpu()
        self._ssim_all += ssim_map.sum(dim=(0, 2, 3)).cpu()

        # SAM over pixels with any band masked
        pixel_masked = m.any(dim=1)  # (B, H, W)
        self._n_masked_pixels += int(pixel_masked.sum())
        self._n_pixels += b * h * w
        self._n_images += b
        if c > 1:
            angle = spectral_angle_mapper(y, x, reduction="none")  # (B, H, W) radians, NaN for zero spectra
            defined = pixel_masked & torch.isfinite(angle)
            self._sam_sum += float(angle[defined].sum())
            self._sam_n += int(defined.sum())
            self._sam_excluded += int((pixel_masked & ~torch.isfinite(angle)).sum())

    # ----------------------------------------------------------------- compute
    def compute(self) -> dict[str, Any]:
        """Return the metrics as a JSON-serialisable dict.

        Layout::

            {"overall":  {"mse", "psnr", "ssim", "sam_deg", "psnr_composed", "ssim_composed"},
             "per_band": {"mse", "psnr", "ssim", "psnr_composed", "ssim_composed"}  # lists of C
             "band_names", "wavelengths_nm",                                          # lists or None
             "counts":   {"images", "masked_values", "masked_pixels", "masked_fraction",
                          "sam_pixels", "sam_excluded_pixels"},
             "settings": {"masked_only": True, "units": "physical", "data_range": [...],
                          "ssim_kernel_size", "ssim_sigma", "sam_pixel_rule"}}
        """
        dr2 = self.data_range.pow(2)
        with torch.no_grad():
            mse_band = self._sse / self._n_masked  # NaN where a band never masked
            psnr_band = 10 * torch.log10(dr2 / mse_band)
            ssim_band = self._ssim_masked / self._n_masked
            mse_comp_band = self._sse / self._n_all
            psnr_comp_band = 10 * torch.log10(dr2 / mse_comp_band)
            ssim_comp_band = self._ssim_all / self._n_all

            n_masked = float(self._n_masked.sum())
            n_all = float(self._n_all.sum())
            nsse = float((self._sse / dr2).sum())  # range-normalised squared error
            overall = {
                "mse": float(self._sse.sum()) / n_masked if n_masked else math.nan,
                "psnr": -10 * math.log10(nsse / n_masked) if n_masked and nsse > 0 else
                (math.inf if n_masked else math.nan),
                "ssim": float(self._ssim_masked.sum()) / n_masked if n_masked else math.nan,
                "sam_deg": math.degrees(self._sam_sum / self._sam_n) if self._sam_n else math.nan,
                "psnr_composed": -10 * math.log10(nsse / n_all) if n_all and nsse > 0 else
                (math.inf if n_all else math.nan),
                "ssim_composed": float(self._ssim_all.sum()) / n_all if n_all else math.nan,
            }
        return {
            "overall": {k: _finite_or_none(v) for k, v in overall.items()},
            "per_band": {
                "mse": _as_list(mse_band),
                "psnr": _as_list(psnr_band),
                "ssim": _as_list(ssim_band),
                "psnr_composed": _as_list(psnr_comp_band),
                "ssim_composed": _as_list(ssim_comp_band),
            },
            "band_names": self.band_names,
            "wavelengths_nm": self.wavelengths_nm,
            "counts": {
                "images": self._n_images,
                "masked_values": int(n_masked),
                "masked_pixels": self._n_masked_pixels,
                "masked_fraction": _finite_or_none(n_masked / n_all) if n_all else None,
                "sam_pixels": self._sam_n,
                "sam_excluded_pixels": self._sam_excluded,
            },
            "settings": {
                "masked_only": True,
                "units": "physical",
                "data_range": [float(v) for v in self.data_range.tolist()],
                "ssim_kernel_size": self.ssim_kernel_size,
                "ssim_sigma": self.ssim_sigma,
                "ssim_image": "composed (visible values copied from the input), map averaged over masked values",
                "sam_pixel_rule": "a pixel counts as masked when any of its bands is masked",
            },
        }


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("_") or "band"


def flatten_metrics(result: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Flatten ``ReconstructionMetrics.compute()`` into ``{name: float}`` for MLflow.

    Names look like ``overall/psnr`` and ``band/03_B4/mse`` (index, then the band name when
    known); ``None`` values are left out because MLflow cannot log them.
    """
    flat: dict[str, float] = {}
    for key, value in result["overall"].items():
        if value is not None:
            flat[f"{prefix}overall/{key}"] = float(value)
    names = result.get("band_names")
    for metric, values in result["per_band"].items():
        for i, value in enumerate(values):
            if value is None:
                continue
            label = f"{i:02d}" if not names else f"{i:02d}_{_slug(names[i])}"
            flat[f"{prefix}band/{label}/{metric}"] = float(value)
    return flat
