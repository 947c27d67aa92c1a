"""The "mae_spectral" loss: each term on hand-made tensors, padding, precision, gradients."""

import math

import pytest
import torch

from spectral_training.models.losses import LOSSES, MAESpectralLoss, mae_spectral_loss

SAM_ONLY = {"mse": 0.0, "sam": 1.0, "variance": 0.0, "range": 0.0}


def spectra(*pixels):
    """(1, 1, 1, s, q) from q pixel spectra of s bands each: one masked token."""
    return torch.tensor(pixels, dtype=torch.float32).T[None, None, None]


def reference_loss(pred, target, mask, band_valid=None, weights=(1.0, 0.1, 0.01, 0.001), lo=-5.0, hi=5.0):
    """The documented definition written plainly with autograd (float64), as an oracle."""
    p, t = pred.double(), target.double()
    B, G, N, s, q = p.shape
    v = torch.ones(G, s, dtype=torch.float64) if band_valid is None else band_valid.double()
    w = (mask.double()[:, :, :, None, None] * v[None, :, None, :, None]).expand_as(p)
    mse = ((p - t) ** 2 * w).sum() / w.sum()
    rng = ((p - p.clamp(lo, hi)) ** 2 * w).sum() / w.sum()
    nb = w.sum(dim=(1, 3))  # (B, N, q) scored bands per pixel
    dot, pp, tt = ((a * b * w).sum(dim=(1, 3)) for a, b in ((p, t), (p, p), (t, t)))
    cos = dot / (pp.sqrt() * tt.sqrt())
    sam = torch.acos(cos.clamp(-1 + 1e-6, 1 - 1e-6))[nb > 0].mean()

    def std(x):
        mean = (x * w).sum(dim=(1, 3), keepdim=True) / nb.clamp_min(1)[:, None, :, None, :]
        return (((x - mean) ** 2 * w).sum(dim=(1, 3)) / nb.clamp_min(1) + 1e-6).sqrt()

    variance = torch.relu(std(t) - std(p))[nb > 1].mean()
    parts = [mse, sam, variance, rng]
    return sum(wi * x for wi, x in zip(weights, parts)), parts


def test_mse_scores_masked_tokens_only():
    target = torch.zeros(1, 1, 2, 2, 3)  # 2 tokens of 2 bands x 3 pixels
    pred = target.clone()
    pred[0, 0, 0] = 2.0  # masked token: error 4 everywhere
    pred[0, 0, 1] = 100.0  # visible token: ignored
    _, parts = mae_spectral_loss(pred, target, torch.tensor([[[1.0, 0.0]]]))
    assert parts["mse"].item() == pytest.approx(4.0)


def test_mse_stays_accurate_for_near_perfect_predictions():
    torch.manual_seed(3)
    target = 3 * torch.randn(4, 2, 16, 5, 64)
    pred = target + 0.01 * torch.randn_like(target)  # MSE ~1e-4 on values ~3: cancellation-prone
    _, parts = mae_spectral_loss(pred, target, torch.ones(4, 2, 16))
    assert parts["mse"].item() == pytest.approx(((pred.double() - target.double()) ** 2).mean().item(), rel=1e-3)


def test_sam_is_zero_for_identical_and_scaled_spectra():
    t = spectra([1.0, 2.0, 3.0], [0.5, -1.0, 2.0])
    for pred in (t, 2.5 * t):
        _, parts = mae_spectral_loss(pred, t, torch.ones(1, 1, 1))
        assert parts["sam"].item() == pytest.approx(0.0, abs=2e-3)  # acos clamp: <= acos(1 - 1e-6)


def test_sam_is_the_angle_between_known_vectors():
    pred = spectra([1.0, 0.0], [1.0, 1.0])
    target = spectra([0.0, 1.0], [1.0, 0.0])  # angles pi/2 and pi/4
    _, parts = mae_spectral_loss(pred, target, torch.ones(1, 1, 1))
    assert parts["sam"].item() == pytest.approx((math.pi / 2 + math.pi / 4) / 2, abs=1e-5)


def test_variance_term_is_zero_when_prediction_is_as_diverse_as_target():
    target = spectra([1.0, 2.0, 3.0])
    more_diverse = spectra([0.0, 2.0, 5.0])
    _, parts = mae_spectral_loss(more_diverse, target, torch.ones(1, 1, 1))
    assert parts["variance"].item() == 0.0


def test_variance_term_penalises_flat_prediction():
    target = spectra([1.0, 2.0, 3.0])  # population std sqrt(2/3)
    _, parts = mae_spectral_loss(spectra([2.0, 2.0, 2.0]), target, torch.ones(1, 1, 1))
    assert parts["variance"].item() == pytest.approx(math.sqrt(2 / 3), abs=1e-3)


def test_range_penalty_zero_inside_positive_outside():
    target = torch.zeros(1, 1, 1, 2, 2)
    inside = torch.full_like(target, 4.9)
    _, parts = mae_spectral_loss(inside, target, torch.ones(1, 1, 1))
    assert parts["range"].item() == 0.0
    outside = inside.clone()
    outside[..., 0, 0] = 7.0  # 2 above hi=5 on 1 of 4 elements: 2**2 / 4
    _, parts = mae_spectral_loss(outside, target, torch.ones(1, 1, 1))
    assert parts["range"].item() == pytest.approx(1.0)
    _, parts = mae_spectral_loss(outside, target, torch.ones(1, 1, 1), value_range=(-10, 10))
    assert parts["range"].item() == 0.0


def test_padded_bands_are_never_scored():
    torch.manual_seed(0)
    pred, target = torch.randn(2, 2, 3, 3, 4), torch.randn(2, 2, 3, 3, 4)
    mask = torch.ones(2, 2, 3)
    band_valid = torch.tensor([[True, True, True], [True, False, False]])  # 4 real bands, 2 padded
    changed = pred.clone()
    changed[:, 1, :, 1:] = 50.0  # far outside the range, on padding only
    for value_range in [(-5.0, 5.0), (0.5, 1.0)]:  # (0.5, 1): even the padding value 0 is out of range
        _, parts = mae_spectral_loss(pred, target, mask, band_valid, value_range=value_range)
        _, parts_changed = mae_spectral_loss(changed, target, mask, band_valid, value_range=value_range)
        assert all(torch.equal(parts[k], parts_changed[k]) for k in parts)
        _, ref_parts = reference_loss(pred, target, mask, band_valid, lo=value_range[0], hi=value_range[1])
        assert [v.item() for v in parts.values()] == pytest.approx([v.item() for v in ref_parts], rel=1e-5)


def random_case(seed, G, s, q, pad, pred_scale, target_scale=1.0, dtype=torch.float32):
    """(pred, target, mask, band_valid): 2 images of 4 tokens per group, ~60 % masked, the last
    group's last ``pad`` bands padding."""
    torch.manual_seed(seed)
    pred = (pred_scale * torch.randn(2, G, 4, s, q, dtype=dtype)).requires_grad_()
    target = target_scale * torch.randn(2, G, 4, s, q, dtype=dtype)
    mask = (torch.rand(2, G, 4) < 0.6).to(dtype)
    mask[0, 0, 0] = 1.0
    band_valid = None
    if pad:
        band_valid = torch.ones(G, s, dtype=torch.bool)
        band_valid[-1, s - pad :] = False
    return pred, target, mask, band_valid


@pytest.mark.parametrize("pad", [0, 1])
def test_matches_plain_autograd_in_value_and_gradient(loss_path, pad):
    # float64, some values out of range
    pred, target, mask, band_valid = random_case(1, G=3, s=2, q=5, pad=pad, pred_scale=3.0, target_scale=3.0,
                                                 dtype=torch.float64)
    total, parts = mae_spectral_loss(pred, target, mask, band_valid)
    ref_total, ref_parts = reference_loss(pred, target, mask, band_valid)
    for a, b in zip([total, *parts.values()], [ref_total, *ref_parts]):
        assert a.item() == pytest.approx(b.item(), rel=1e-9, abs=1e-12)
        ga, = torch.autograd.grad(a, pred, retain_graph=True)
        gb, = torch.autograd.grad(b, pred, retain_graph=True)
        torch.testing.assert_close(ga, gb, rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("scale", [0.5, 3.0])  # all inside the range, and some values outside it
def test_compiles_as_one_graph_with_the_eager_value_and_gradient(scale):
    torch._dynamo.reset()
    torch.manual_seed(3)
    pred = (scale * torch.randn(2, 3, 4, 2, 5)).requires_grad_()
    target = torch.randn(2, 3, 4, 2, 5)
    mask = (torch.rand(2, 3, 4) < 0.6).float()
    band_valid = torch.ones(3, 2, dtype=torch.bool)
    band_valid[-1, 1] = False

    def total(p):
        return mae_spectral_loss(p, target, mask, band_valid)[0]

    compiled = torch.compile(total, backend="aot_eager", fullgraph=True)  # fullgraph: a graph break fails
    eager_value = total(pred)
    eager_grad, = torch.autograd.grad(eager_value, pred)
    compiled_value = compiled(pred)
    compiled_grad, = torch.autograd.grad(compiled_value, pred)
    torch.testing.assert_close(compiled_value, eager_value)
    torch.testing.assert_close(compiled_grad, eager_grad)


def test_gradcheck(loss_path):
    torch.manual_seed(2)
    pred = (3 * torch.randn(1, 2, 2, 2, 3, dtype=torch.float64)).requires_grad_()
    target = torch.randn(1, 2, 2, 2, 3, dtype=torch.float64)
    mask = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda p: mae_spectral_loss(p, target, mask)[0], (pred,))


def test_half_precision_input_gives_finite_float32_loss():
    target = torch.full((1, 1, 2, 4, 4), 200.0)
    pred = torch.full((1, 1, 2, 4, 4), -250.0, dtype=torch.float16, requires_grad=True)  # squares overflow fp16
    total, parts = mae_spectral_loss(pred, target, torch.ones(1, 1, 2))
    assert total.dtype == torch.float32 and torch.isfinite(total)
    assert parts["mse"].item() == pytest.approx(450.0**2)
    total.backward()
    assert pred.grad.dtype == torch.float16 and torch.isfinite(pred.grad).all()


def test_no_masked_token_gives_zero_loss():
    pred = torch.randn(1, 1, 3, 2, 2, requires_grad=True)
    total, _ = mae_spectral_loss(pred, torch.randn(1, 1, 3, 2, 2), torch.zeros(1, 1, 3))
    total.backward()
    assert total.item() == 0.0 and torch.equal(pred.grad, torch.zeros_like(pred))


def test_weights_and_registry():
    assert LOSSES["mae_spectral"] is MAESpectralLoss
    with pytest.raises(ValueError, match="unknown key"):
        MAESpectralLoss(weights={"msse": 1.0})
    with pytest.raises(ValueError, match="lo < hi"):
        MAESpectralLoss(value_range=(1.0, -1.0))
    t = spectra([1.0, 2.0], [3.0, 1.0])
    total, parts = MAESpectralLoss(weights=SAM_ONLY)(2 * t.flip(3), t, torch.ones(1, 1, 1))
    assert total.item() == pytest.approx(parts["sam"].item())


@pytest.fixture(params=["kernels", "torch ops"])
def loss_path(request, monkeypatch):
    """Both ways the loss is computed: the numba kernels (eager, on the CPU) and the torch ops
    (CUDA, MPS and torch.compile)."""
    from spectral_training.models import losses

    if request.param == "torch ops":
        monkeypatch.setattr(losses, "_cpu_kernels", lambda p: False)
    return request.param


@pytest.mark.parametrize("G, pad, value_scale", [(1, 0, 1.0), (1, 0, 3.0), (3, 1, 1.0), (3, 1, 3.0)])
def test_both_paths_match_plain_autograd_in_float32(loss_path, G, pad, value_scale):
    """float32, as training runs it (the kernels' acos is a 2e-8 rad polynomial there): one band
    group and several, padding, and values outside the range (the range term active) or not."""
    pred, target, mask, band_valid = random_case(4, G=G, s=3, q=16, pad=pad, pred_scale=value_scale)
    total, parts = mae_spectral_loss(pred, target, mask, band_valid)
    ref_total, ref_parts = reference_loss(pred, target, mask, band_valid)
    for a, b in zip([total, *parts.values()], [ref_total, *ref_parts]):
        assert a.item() == pytest.approx(b.item(), rel=2e-5, abs=1e-7)
    grad, = torch.autograd.grad(total, pred)
    ref_grad, = torch.autograd.grad(ref_total, pred)
    scored = mask.bool()[:, :, :, None, None].expand_as(pred)
    # the plain oracle's gradient is NaN on visible tokens (0/0 in its unscored angles): ours is 0 there
    assert torch.equal(grad[~scored], torch.zeros_like(grad[~scored]))
    torch.testing.assert_close(grad[scored], ref_grad.float()[scored], rtol=1e-4, atol=1e-7)


def test_a_nan_prediction_makes_the_loss_nan(loss_path):
    """The training loop stops on a non-finite loss: neither path may hide a NaN."""
    pred = torch.randn(1, 1, 4, 3, 8)
    pred[0, 0, 2, 1, 5] = float("nan")
    total, _ = mae_spectral_loss(pred, torch.randn(1, 1, 4, 3, 8), torch.ones(1, 1, 4))
    assert torch.isnan(total)
