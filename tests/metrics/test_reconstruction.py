"""ReconstructionMetrics against hand-computed values on tiny cubes."""

import json
import math

import pytest
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from spectral_training.metrics.reconstruction import (
    ReconstructionMetrics,
    compose_reconstruction,
    flatten_metrics,
    ssim_window,
)


def _cube(b=2, c=3, h=8, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, c, h, w, generator=g) + 0.5


def _all(x):
    return torch.ones_like(x, dtype=torch.bool)


def test_mse_of_known_difference():
    x = _cube()
    m = ReconstructionMetrics(3, 1.0)
    m.update(x, x + 0.5, _all(x))
    out = m.compute()
    assert out["overall"]["mse"] == pytest.approx(0.25)
    assert out["per_band"]["mse"] == pytest.approx([0.25] * 3)


def test_mse_ignores_errors_on_visible_values():
    x = _cube()
    masked = torch.zeros_like(x, dtype=torch.bool)
    masked[:, :, :4] = True  # top half hidden
    rec = x.clone()
    rec[:, :, :4] += 0.1  # masked error
    rec[:, :, 4:] += 100.0  # visible error must not count
    m = ReconstructionMetrics(3, 1.0)
    m.update(x, rec, masked)
    out = m.compute()
    assert out["overall"]["mse"] == pytest.approx(0.01, rel=1e-5)
    assert out["per_band"]["mse"] == pytest.approx([0.01] * 3, rel=1e-5)
    assert out["counts"]["masked_values"] == 2 * 3 * 4 * 8
    assert out["counts"]["masked_fraction"] == pytest.approx(0.5)


def test_sam_of_orthogonal_spectra_is_90_degrees():
    x = torch.zeros(1, 2, 3, 3)
    x[:, 0] = 1.0
    rec = torch.zeros_like(x)
    rec[:, 1] = 1.0
    m = ReconstructionMetrics(2, 1.0)
    m.update(x, rec, _all(x))
    assert m.compute()["overall"]["sam_deg"] == pytest.approx(90.0)


def test_sam_of_scaled_spectra_is_zero():
    x = _cube(c=4)
    m = ReconstructionMetrics(4, 1.0)
    m.update(x, 3.0 * x, _all(x))
    assert m.compute()["overall"]["sam_deg"] == pytest.approx(0.0, abs=1e-5)


def test_sam_pixel_counts_when_any_band_masked_and_uses_composed_spectrum():
    x = torch.ones(1, 2, 3, 3)
    rec = torch.full_like(x, 5.0)
    rec[:, 0, 1, 1] = -1.0
    masked = torch.zeros_like(x, dtype=torch.bool)
    masked[:, 0, 1, 1] = True  # only band 0 of the centre pixel
    m = ReconstructionMetrics(2, 1.0)
    m.update(x, rec, masked)
    out = m.compute()
    # composed spectrum (-1, 1) vs (1, 1): 90 degrees; the other 8 pixels are not scored
    assert out["overall"]["sam_deg"] == pytest.approx(90.0)
    assert out["counts"]["masked_pixels"] == 1
    assert out["counts"]["sam_pixels"] == 1


def test_sam_leaves_out_zero_spectra_and_counts_them():
    x = torch.ones(1, 2, 3, 3)
    x[:, :, 0, 0] = 0.0
    m = ReconstructionMetrics(2, 1.0)
    m.update(x, 2 * x, _all(x))
    out = m.compute()
    assert out["overall"]["sam_deg"] == pytest.approx(0.0, abs=1e-5)
    assert out["counts"]["sam_excluded_pixels"] == 1
    assert out["counts"]["sam_pixels"] == 8


def test_psnr_per_band_matches_formula_and_torchmetrics():
    x = _cube()
    rec = x + torch.tensor([0.1, 0.2, 0.4]).view(1, 3, 1, 1)
    masked = torch.zeros_like(x, dtype=torch.bool)
    masked[..., :, :5] = True
    ranges = [1.0, 2.0, 4.0]
    m = ReconstructionMetrics(3, ranges)
    m.update(x, rec, masked)
    out = m.compute()
    for c, (err, dr) in enumerate(zip([0.1, 0.2, 0.4], ranges)):
        assert out["per_band"]["psnr"][c] == pytest.approx(10 * math.log10(dr**2 / err**2), rel=1e-5)
        tm = peak_signal_noise_ratio(rec[:, c][masked[:, c]], x[:, c][masked[:, c]], data_range=dr)
        assert out["per_band"]["psnr"][c] == pytest.approx(float(tm), rel=1e-4)
    # overall: PSNR of the range-normalised cube; here err/dr = 0.1 in every band
    assert out["overall"]["psnr"] == pytest.approx(20.0, rel=1e-5)


def test_overall_psnr_with_global_range_is_the_textbook_formula():
    x = _cube()
    rec = x + torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)
    m = ReconstructionMetrics(3, 2.0)
    m.update(x, rec, _all(x))
    out = m.compute()
    assert out["overall"]["psnr"] == pytest.approx(10 * math.log10(4.0 / out["overall"]["mse"]), rel=1e-6)


def test_ssim_is_one_for_identical_and_below_one_otherwise():
    x = _cube(h=16, w=16)
    same = ReconstructionMetrics(3, 1.0)
    same.update(x, x.clone(), _all(x))
    out = same.compute()
    assert out["overall"]["ssim"] == pytest.approx(1.0)
    assert out["per_band"]["ssim"] == pytest.approx([1.0] * 3)
    assert out["overall"]["psnr"] is None  # infinite PSNR is reported as None (strict JSON)

    noisy = ReconstructionMetrics(3, 1.0)
    noisy.update(x, x + 0.2 * torch.randn_like(x), _all(x))
    out = noisy.compute()
    assert out["overall"]["ssim"] < 0.99
    assert all(v < 0.99 for v in out["per_band"]["ssim"])


def test_ssim_per_band_matches_torchmetrics_with_that_bands_range():
    x = _cube(h=16, w=16)
    rec = x + 0.1 * torch.randn_like(x)
    ranges = [1.0, 0.5, 3.0]
    m = ReconstructionMetrics(3, ranges)
    m.update(x, rec, _all(x))
    out = m.compute()
    for c, dr in enumerate(ranges):
        ref = structural_similarity_index_measure(
            rec[:, c : c + 1].double(), x[:, c : c + 1].double(), data_range=dr, kernel_size=11, sigma=1.5
        )
        assert out["per_band"]["ssim"][c] == pytest.approx(float(ref), rel=1e-6)


def test_ssim_window_shrinks_for_small_tiles():
    assert ssim_window(32, 32) == (11, 1.5)
    assert ssim_window(8, 16) == (7, pytest.approx(6 / 7))
    with pytest.raises(ValueError, match="at least 3 x 3"):
        ssim_window(2, 8)
    m = ReconstructionMetrics(3, 1.0)
    x = _cube(h=8, w=8)
    m.update(x, x, _all(x))
    assert m.compute()["settings"]["ssim_kernel_size"] == 7


def test_two_updates_equal_one_update_on_the_concatenation():
    x = _cube(b=4, h=8, w=8)
    rec = x + 0.1 * torch.randn_like(x)
    masked = torch.rand(x.shape) < 0.6
    whole = ReconstructionMetrics(3, [1.0, 2.0, 3.0])
    whole.update(x, rec, masked)
    parts = ReconstructionMetrics(3, [1.0, 2.0, 3.0])
    parts.update(x[:1], rec[:1], masked[:1])
    parts.update(x[1:], rec[1:], masked[1:])
    a, b = whole.compute(), parts.compute()
    for key in ("mse", "psnr", "sam_deg", "ssim"):
        assert b["overall"][key] == pytest.approx(a["overall"][key], rel=1e-9)
    for key in ("mse", "psnr", "ssim"):
        assert b["per_band"][key] == pytest.approx(a["per_band"][key], rel=1e-9)


def test_no_masked_values_gives_none_and_strict_json():
    x = _cube()
    m = ReconstructionMetrics(3, 1.0, band_names=["B2", "B3", "B4"], wavelengths_nm=[490, 560, 665])
    m.update(x, x + 1, torch.zeros_like(x, dtype=torch.bool))
    out = m.compute()
    assert out["overall"]["mse"] is None and out["per_band"]["psnr"] == [None] * 3
    json.dumps(out, allow_nan=False)
    assert out["band_names"] == ["B2", "B3", "B4"] and out["wavelengths_nm"] == [490.0, 560.0, 665.0]


def test_flatten_metrics_names_and_drops_none():
    x = _cube()
    m = ReconstructionMetrics(3, 1.0, band_names=["B2", "B3", "B 4"])
    m.update(x, x + 0.1, _all(x))
    flat = flatten_metrics(m.compute(), prefix="test/")
    assert flat["test/overall/mse"] == pytest.approx(0.01, rel=1e-5)
    assert "test/band/02_B_4/psnr" in flat
    assert all(isinstance(v, float) for v in flat.values())


def test_compose_keeps_visible_values():
    x, rec = torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2)
    masked = torch.tensor([[[[True, False], [False, False]]]])
    assert compose_reconstruction(x, rec, masked).tolist() == [[[[1.0, 0.0], [0.0, 0.0]]]]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"data_range": [1.0, 1.0]}, "one per band"), ({"data_range": [1.0, 0.0, 1.0]}, "bands \\[1\\]")],
)
def test_bad_data_range_is_explained(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ReconstructionMetrics(3, **kwargs)


def test_wrong_band_count_and_mask_dtype_are_explained():
    m = ReconstructionMetrics(4, 1.0)
    x = _cube()
    with pytest.raises(ValueError, match="expected 4 bands"):
        m.update(x, x, _all(x))
    with pytest.raises(TypeError, match="bool"):
        ReconstructionMetrics(3, 1.0).update(x, x, torch.ones_like(x))


def test_state_does_not_grow_with_batches():
    m = ReconstructionMetrics(3, 1.0)
    x = _cube(b=1)

    def state_size():
        return sum(v.numel() for v in vars(m).values() if isinstance(v, torch.Tensor))

    m.update(x, x + 0.1, _all(x))
    size = state_size()
    for _ in range(3):
        m.update(x, x + 0.1, _all(x))
    assert state_size() == size
    assert m.compute()["counts"]["images"] == 4
