"""Where a classifier looks: one map per sample, at the input's spatial size, in [0, 1].

Two methods, chosen by architecture:

``attention_rollout`` (timm ``VisionTransformer`` and ``Eva``)
    Abnar & Zuidema (2020): per block, average the softmaxed attention over heads, add the
    residual path (``0.5 * A + 0.5 * I``, rows renormalised), multiply the blocks together
    (``R = A_L ... A_1``) and read the row of the token the head pools (the CLS token for
    ``global_pool == "token"``, else the mean of the patch-token rows) over the patch columns.
    timm's attention calls fused ``scaled_dot_product_attention`` by default, which never
    materialises the weights, so for the one forward pass every attention module gets
    ``fused_attn = False`` and a pre-hook on its ``attn_drop`` (whose input IS the softmaxed
    attention, ``(B, heads, N, N)``); the flags are restored afterwards, also on error.

``grad_cam`` (everything else: timm CNNs, Swin, torchvision ViT, ...)
    Selvaraju et al. (2017) w.r.t. the predicted class, on the LAST feature map whose gradient
    is not zero. Candidates are found generically with forward hooks, in execution order:
    4-D outputs ``(B, C, h, w)`` or NHWC ``(B, h, w, C)`` (Swin, ConvNeXt's inner MLP; the layout
    whose grid has one consistent stride over the input wins) and 3-D token outputs
    ``(B, prefix + h * w, D)`` (torchvision/timm ViTs). Maps with one cell (``h * w == 1``,
    e.g. after global pooling) and tensors inside attention modules (their ``(B, heads, N, N)``
    weights look like a map) are not candidates. "Gradient not zero" matters for ViTs: only the
    CLS token reaches the head, so every token tensor after the last attention has exactly zero
    gradient on the patch tokens; the last useful one is the last block's pre-attention norm
    (what pytorch-grad-cam recommends by hand).

Both upsample bilinearly to the input's ``(H, W)`` and normalise each sample to [0, 1] by
min-max (a constant map becomes all zeros). The model runs in eval mode; every module's
``training`` flag, the ``requires_grad`` flags (never touched: the input is made to require a
gradient instead) and the parameters' ``.grad`` (``torch.autograd.grad`` does not accumulate
into it) are as they were afterwards.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from timm.models.eva import Eva
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

__all__ = ["attention_rollout", "explain", "grad_cam"]

_MAX_PREFIX_TOKENS = 16  # cls + register/distillation tokens searched when the model gives no hint
_MAX_STRIDE_RATIO = 1.5  # a grid's row and column strides over the input must agree this well


def explain(model: nn.Module, x: Tensor) -> tuple[Tensor, str]:
    """Per-sample saliency maps of ``model`` on ``x``.

    Args:
        model: a classifier returning logits ``(B, K)`` (DDP- or ``torch.compile``-wrapped is fine).
        x: ``(B, C, H, W)`` input batch, as the model takes it.

    Returns:
        ``(maps, method)``: ``maps`` float32 ``(B, H, W)`` in [0, 1], detached, on ``x``'s
        device; ``method`` is ``"attention_rollout"`` or ``"grad_cam"``.
    """
    model = _unwrap(model)
    if isinstance(model, (VisionTransformer, Eva)):
        return _vit_rollout(model, x), "attention_rollout"
    maps, _ = grad_cam(model, x)
    return maps, "grad_cam"


def attention_rollout(attentions: list[Tensor], num_prefix_tokens: int, from_cls: bool) -> Tensor:
    """Joint attention of the pooled token on the patch tokens.

    Args:
        attentions: one softmaxed ``(B, heads, N, N)`` per block, in forward order.
        num_prefix_tokens: leading non-patch tokens (cls + registers).
        from_cls: read row 0 (the CLS token); else average the patch-token rows.

    Returns:
        ``(B, N - num_prefix_tokens)`` non-negative relevance per patch (not normalised).
    """
    if not attentions:
        raise ValueError("attention_rollout needs at least one attention map; none were captured.")
    b, _, n, _ = attentions[0].shape
    eye = torch.eye(n, dtype=torch.float64, device=attentions[0].device)
    rollout = eye.expand(b, n, n)
    for attn in attentions:
        a = 0.5 * attn.double().mean(dim=1) + 0.5 * eye  # (B, N, N): the residual keeps half
        a = a / a.sum(dim=-1, keepdim=True)
        rollout = a @ rollout  # later blocks on the left: R = A_L ... A_1
    rows = rollout[:, :1] if from_cls else rollout[:, num_prefix_tokens:]
    return rows.mean(dim=1)[:, num_prefix_tokens:].float()  # (B, N_patches)


def grad_cam(model: nn.Module, x: Tensor) -> tuple[Tensor, str]:
    """Grad-CAM for the predicted class on the last feature map with a non-zero gradient.

    Returns:
        ``(maps (B, H, W) in [0, 1], name of the module whose output was used)``.

    All gradients zero (an untrained model whose head is zero-initialised, as torchvision's ViT
    is) gives zero maps and a warning.

    Raises:
        RuntimeError: no spatial feature map or token grid was found.
    """
    model = _unwrap(model)
    b, _, h, w = x.shape
    found: dict[int, tuple[str, Tensor]] = {}  # id(tensor) -> (module name, tensor), forward order
    attention_prefixes = [n + "." for n, m in model.named_modules() if n and "attention" in type(m).__name__.lower()]

    def hook(name: str):
        def record(_module: nn.Module, _inputs: tuple, out: object) -> None:
            if not isinstance(out, Tensor) or out.ndim not in (3, 4) or out.shape[0] != b:
                return
            if not out.requires_grad or any(name.startswith(p) for p in attention_prefixes):
                return
            # A parent returning its child's tensor keeps the child's place (dict order), takes the outer name.
            found[id(out)] = (name, out)

        return record

    with _preserved(model), torch.inference_mode(False), torch.enable_grad():
        handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n]
        try:
            inp = x.detach().clone().requires_grad_(True)  # activations need a graph even if frozen
            logits = model(inp)
        finally:
            for handle in handles:
                handle.remove()
        if not isinstance(logits, Tensor) or logits.ndim != 2:
            raise RuntimeError(f"grad_cam expects the model to return logits (B, K); got {_describe(logits)}.")
        grids = [(name, t, _as_grid(t, h, w, model)) for name, t in found.values()]
        grids = [(name, t, view) for name, t, view in grids if view is not None]
        if not grids:
            raise RuntimeError(
                f"grad_cam found no spatial feature map in {type(model).__name__}: no module returned a "
                f"(B, C, h, w), (B, h, w, C) or (B, prefix + h*w, D) tensor with h*w > 1 for a {h}x{w} input."
            )
        score = logits.gather(1, logits.argmax(dim=1, keepdim=True)).sum()  # predicted class, per sample
        grads = torch.autograd.grad(score, [t for _, t, _ in grids], allow_unused=True)
    for (name, t, view), grad in reversed(list(zip(grids, grads))):
        if grad is None:
            continue
        g = view(grad)  # (B, C, h', w')
        if torch.count_nonzero(g) == 0:
            continue  # e.g. ViT patch tokens after the last attention: only CLS reaches the head
        a = view(t.detach())
        cam = (g.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1, keepdim=True)  # (B, 1, h', w')
        cam = F.interpolate(cam.float(), size=(h, w), mode="bilinear", align_corners=False)[:, 0]
        return _normalise(cam.relu()), name
    # Every gradient is zero (e.g. torchvision's ViT zero-initialises its head): nothing to show.
    warnings.warn(f"grad_cam: no feature map of {type(model).__name__} has a non-zero gradient; maps are zeros.", stacklevel=2)
    return torch.zeros(b, h, w, device=x.device), grids[-1][0]


def _vit_rollout(model: VisionTransformer | Eva, x: Tensor) -> Tensor:
    """Attention rollout of a timm ViT/EVA, upsampled to ``x``'s size: ``(B, H, W)`` in [0, 1]."""
    b, _, h, w = x.shape
    attn_modules = [
        m for m in model.blocks.modules() if hasattr(m, "fused_attn") and isinstance(getattr(m, "attn_drop", None), nn.Module)
    ]
    if not attn_modules:
        raise RuntimeError(f"{type(model).__name__}: no attention module with fused_attn/attn_drop in model.blocks.")
    captured: list[Tensor] = []
    flags = [m.fused_attn for m in attn_modules]
    handles = []
    try:
        for m in attn_modules:
            m.fused_attn = False  # the unfused path computes softmax(q k^T) and passes it to attn_drop
            handles.append(m.attn_drop.register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach())))
        with _preserved(model), torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
        for m, flag in zip(attn_modules, flags):
            m.fused_attn = flag
    npt = int(getattr(model, "num_prefix_tokens", 1))
    if len(captured) != len(attn_modules) or any(a.ndim != 4 or a.shape[0] != b for a in captured):
        raise RuntimeError(
            f"attention rollout captured {len(captured)} maps of shapes {[tuple(a.shape) for a in captured]} "
            f"from {len(attn_modules)} attention modules; expected one (B={b}, heads, N, N) each."
        )
    n_patches = captured[0].shape[-1] - npt
    gh, gw = _vit_grid(model, n_patches, h, w)
    from_cls = getattr(model, "global_pool", "token") == "token" and npt > 0
    rel = attention_rollout(captured, npt, from_cls)  # (B, gh * gw)
    rel = F.interpolate(rel.reshape(b, 1, gh, gw), size=(h, w), mode="bilinear", align_corners=False)[:, 0]
    return _normalise(rel)


def _vit_grid(model: nn.Module, n_patches: int, h: int, w: int) -> tuple[int, int]:
    """The patch grid: timm's fixed ``grid_size``, or the dynamic one for this input size."""
    pe = model.patch_embed
    grid = tuple(pe.grid_size) if getattr(pe, "grid_size", None) is not None else None
    if (grid is None or grid[0] * grid[1] != n_patches) and hasattr(pe, "dynamic_feat_size"):
        grid = tuple(pe.dynamic_feat_size((h, w)))
    if grid is None or grid[0] * grid[1] != n_patches:
        raise RuntimeError(f"{type(model).__name__}: {n_patches} patch tokens do not fill the patch grid {grid}.")
    return int(grid[0]), int(grid[1])


def _as_grid(t: Tensor, h: int, w: int, model: nn.Module):
    """A function mapping ``t`` (or its gradient) to ``(B, C, h', w')``, or None if ``t`` is no grid."""
    if t.ndim == 4:
        nchw = _plausible(t.shape[2], t.shape[3], h, w)
        nhwc = _plausible(t.shape[1], t.shape[2], h, w)
        if nchw and nhwc:  # e.g. (B, 8, 8, 8): trust the model's declared layout, NCHW by default
            nchw = getattr(model, "output_fmt", "NCHW") != "NHWC"
        if nchw:
            return lambda a: a
        if nhwc:
            return lambda a: a.permute(0, 3, 1, 2)
        return None
    grid = _token_grid(t.shape[1], h, w, getattr(model, "num_prefix_tokens", None))
    if grid is None:
        return None
    k, gh, gw = grid
    return lambda a: a[:, k:].reshape(a.shape[0], gh, gw, a.shape[2]).permute(0, 3, 1, 2)  # (B, D, gh, gw)


def _plausible(gh: int, gw: int, h: int, w: int) -> bool:
    """A grid of more than one cell, no finer than the input, with one stride in both directions."""
    if gh * gw <= 1 or gh > h or gw > w:
        return False
    sh, sw = h / gh, w / gw
    return max(sh, sw) / min(sh, sw) <= _MAX_STRIDE_RATIO


def _token_grid(n_tokens: int, h: int, w: int, hint: int | None) -> tuple[int, int, int] | None:
    """``(prefix, gh, gw)`` with ``prefix + gh * gw == n_tokens`` and a plausible grid, fewest prefix first."""
    order = ([hint] if hint is not None else []) + [k for k in range(_MAX_PREFIX_TOKENS + 1) if k != hint]
    for k in order:
        n = n_tokens - k
        if n <= 1:
            continue
        gh = max(1, round(math.sqrt(n * h / w)))  # the grid with the input's aspect ratio
        for cand in (gh, gh - 1, gh + 1):
            if cand >= 1 and n % cand == 0 and _plausible(cand, n // cand, h, w):
                return k, cand, n // cand
    return None


def _normalise(maps: Tensor) -> Tensor:
    """Min-max each ``(H, W)`` map to [0, 1]; a constant map becomes zeros."""
    flat = maps.detach().float().flatten(1)
    lo = flat.min(dim=1, keepdim=True).values
    span = flat.max(dim=1, keepdim=True).values - lo
    out = torch.where(span > 0, (flat - lo) / span.clamp_min(torch.finfo(flat.dtype).tiny), torch.zeros_like(flat))
    return out.clamp_(0.0, 1.0).reshape(maps.shape)


@contextmanager
def _preserved(model: nn.Module) -> Iterator[None]:
    """Run in eval mode; give every module its own ``training`` flag back afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def _unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DistributedDataParallel / torch.compile wrappers."""
    while True:
        if isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def _describe(obj: object) -> str:
    return f"a tensor of shape {tuple(obj.shape)}" if isinstance(obj, Tensor) else type(obj).__name__
