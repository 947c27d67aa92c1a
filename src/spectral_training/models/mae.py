"""Spectral masked autoencoder with a ViT backbone (after facebookresearch/mae ``models_mae.py``).

A token is a 3-D patch of the cube (``spatial_patch`` x ``spatial_patch`` pixels by
``spectral_patch`` bands); :mod:`.spectral_patches` holds the token geometry, its conventions
(token order, patch vector order, zero-padded bands) and ``patchify`` / ``unpatchify``.
Reference set-up: 30 bands, 500 px, 25x25x5 patches -> 6 * 400 = 2400 tokens, mask ratio 0.8.
``mask`` is ``(B, L)`` float, 0 = visible (kept), 1 = masked (removed, to predict).

The encoder sees only the visible tokens plus a cls token; a lighter decoder sees the encoded
tokens plus a shared learned mask token at every masked position. Position embeddings are fixed
sin-cos: a 2-D spatial code concatenated with a 1-D spectral code (band-group index, or mean
wavelength of the group in nm when ``wavelengths_nm`` is given), see ``pos_embed.py``.
"""

from __future__ import annotations

import inspect
import math
from functools import partial
from typing import Any, Mapping, Sequence

import torch
from timm.models.vision_transformer import Block
from torch import nn

from spectral_training.models.losses import LOSSES
from spectral_training.models.pos_embed import spectral_spatial_pos_embed
from spectral_training.models.spectral_patches import SpectralPatchGrid
from spectral_training.models.variants import MAE_VARIANTS

__all__ = ["MaskedAutoencoderViT", "build_mae"]


class MaskedAutoencoderViT(nn.Module):
    """Masked autoencoder on 3-D (spatial x spectral) patches of multi-/hyperspectral cubes.

    Args:
        num_bands: ``C``, bands of the input cube.
        image_size: ``H`` (square) or ``(H, W)``; each must be a multiple of ``spatial_patch``.
        spatial_patch: patch side in pixels.
        spectral_patch: bands per patch (band group); ``C`` need not be a multiple.
        embed_dim, depth, num_heads, mlp_ratio: encoder size (see ``variants.py``).
        decoder_embed_dim, decoder_depth, decoder_num_heads: decoder size.
        mask_ratio: default fraction of tokens removed, in ``[0, 1)``.
        norm_pix_loss: predict each patch normalised by its own mean and std (over real bands).
        wavelengths_nm: ``C`` band centres in nm; the spectral position code then uses each band
            group's mean wavelength instead of its index, so sensors share one code.
        loss: loss name in ``LOSSES`` (``"mae_spectral"``).
        loss_weights: any of ``mse, sam, variance, range`` (defaults 1.0, 0.1, 0.01, 0.001).
        value_range: ``(lo, hi)`` of the range penalty (default ``(-5, 5)``, normalised data).
        drop_path_rate: stochastic depth of the encoder, linearly increasing over blocks.
        qkv_bias: bias on the attention qkv projection (True, as in the MAE reference).
        spectral_embed_dim: width of the spectral slice of the position code (default: a quarter
            of the width, see ``pos_embed.split_embed_dim``); applies to encoder and decoder.
        device: where to create the parameters; ``torch.device("meta")`` builds any size
            instantly without memory (for counting parameters), weights then are not initialised.
    """

    def __init__(
        self,
        num_bands: int,
        image_size: int | Sequence[int],
        spatial_patch: int = 25,
        spectral_patch: int = 5,
        embed_dim: int = 192,
        depth: int = 12,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
        decoder_embed_dim: int = 512,
        decoder_depth: int = 8,
        decoder_num_heads: int = 16,
        mask_ratio: float = 0.8,
        norm_pix_loss: bool = False,
        wavelengths_nm: Sequence[float] | None = None,
        loss: str = "mae_spectral",
        loss_weights: Mapping[str, float] | None = None,
        value_range: tuple[float, float] | None = None,
        drop_path_rate: float = 0.0,
        qkv_bias: bool = True,
        spectral_embed_dim: int | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        # --- geometry (see spectral_patches.py); its figures are kept as attributes too ---------
        h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(int(s) for s in image_size)
        grid = SpectralPatchGrid(int(num_bands), (h, w), int(spatial_patch), int(spectral_patch))
        self.patch_grid = grid
        self.num_bands, self.image_size = grid.num_bands, grid.image_size
        self.spatial_patch, self.spectral_patch = grid.spatial_patch, grid.spectral_patch
        self.num_groups, self.padded_bands, self.num_pad_bands = grid.num_groups, grid.padded_bands, grid.num_pad_bands
        self.grid_size, self.num_spatial = grid.grid_size, grid.num_spatial  # N
        self.num_patches, self.patch_dim = grid.num_patches, grid.patch_dim  # L, s * p * p
        self.embed_dim = embed_dim
        self.decoder_embed_dim = decoder_embed_dim
        self.set_mask_ratio(mask_ratio)
        self.norm_pix_loss = bool(norm_pix_loss)

        if wavelengths_nm is not None:
            wavelengths_nm = tuple(float(v) for v in wavelengths_nm)
            if len(wavelengths_nm) != self.num_bands:
                raise ValueError(
                    f"wavelengths_nm has {len(wavelengths_nm)} values but num_bands={self.num_bands}; "
                    "give one band centre (nm) per band, in band order"
                )
            if not all(math.isfinite(v) for v in wavelengths_nm):
                raise ValueError("wavelengths_nm holds a non-finite value; give one finite nm value per band")
        self.wavelengths_nm = wavelengths_nm
        self.spectral_embed_dim = spectral_embed_dim

        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; known losses: {sorted(LOSSES)}")
        self.loss_name = loss

        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        dd = {"device": device}
        L = self.num_patches

        # --- encoder ----------------------------------------------------------------------------
        self.patch_embed = nn.Linear(self.patch_dim, embed_dim, **dd)  # == Conv3d(1, D, (s,p,p), stride=(s,p,p))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim, **dd))
        self.pos_embed = nn.Parameter(torch.zeros(1, L + 1, embed_dim, **dd), requires_grad=False)  # fixed sin-cos
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, depth, device="cpu")]
        self.blocks = nn.ModuleList(
            [
                Block(embed_dim, num_heads, mlp_ratio, qkv_bias=qkv_bias, drop_path=dpr[i], norm_layer=norm_layer, **dd)
                for i in range(depth)
            ]
        )
        self.norm = norm_layer(embed_dim, **dd)

        # --- decoder ----------------------------------------------------------------------------
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim, **dd)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim, **dd))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, L + 1, decoder_embed_dim, **dd), requires_grad=False)
        self.decoder_blocks = nn.ModuleList(
            [
                Block(decoder_embed_dim, decoder_num_heads, mlp_ratio, qkv_bias=qkv_bias, norm_layer=norm_layer, **dd)
                for _ in range(decoder_depth)
            ]
        )
        self.decoder_norm = norm_layer(decoder_embed_dim, **dd)
        self.decoder_pred = nn.Linear(decoder_embed_dim, self.patch_dim, **dd)  # predicts every patch vector

        # --- loss -------------------------------------------------------------------------------
        self.loss_fn = LOSSES[loss](weights=loss_weights, value_range=value_range)
        # (G, s) True on real bands, False on padding; not saved (rebuilt from num_bands)
        self.register_buffer("band_valid", grid.band_valid().to(device=device), persistent=False)

        self.initialize_weights()

    # ------------------------------------------------------------------------------------------
    # set-up
    # ------------------------------------------------------------------------------------------
    def set_mask_ratio(self, mask_ratio: float) -> None:
        """Change the default mask ratio (``[0, 1)``)."""
        if not 0.0 <= float(mask_ratio) < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        self.mask_ratio = float(mask_ratio)

    def initialize_weights(self) -> None:
        """Fixed sin-cos position codes; xavier-uniform linears; N(0, 0.02) cls and mask tokens."""
        if self.pos_embed.is_meta:  # a meta build has no values to set
            return
        gh, gw = self.grid_size
        for param, dim in ((self.pos_embed, self.embed_dim), (self.decoder_pos_embed, self.decoder_embed_dim)):
            emb = spectral_spatial_pos_embed(
                dim, gh, gw, self.num_bands, self.spectral_patch, self.wavelengths_nm,
                cls_token=True, spectral_dim=self.spectral_embed_dim,
            )  # (1 + L, dim)
            param.data.copy_(emb[None])
        torch.nn.init.normal_(self.cls_token, std=0.02)
        torch.nn.init.normal_(self.mask_token, std=0.02)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            torch.nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)

    def no_weight_decay(self) -> set[str]:
        """Parameter names kept out of weight decay (timm's optimizer factory reads this)."""
        return {"pos_embed", "decoder_pos_embed", "cls_token", "mask_token"}

    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Layer groups for timm's layer-wise lr decay, like timm's ViT.

        Embedding and tokens are layer 0, encoder block ``i`` layer ``i + 1``, the encoder's final
        norm joins the last block; the decoder matches nothing and so lands in the top group
        (lr scale 1), since it is trained from scratch.
        """
        return dict(
            stem=r"^(?:cls_token|pos_embed|patch_embed)",
            blocks=r"^blocks\.(\d+)" if coarse else [(r"^blocks\.(\d+)", None), (r"^norm\.", (99999,))],
        )

    def parameter_counts(self) -> dict[str, int]:
        """Trainable parameters: ``{"encoder", "decoder", "total"}`` (fixed position codes left out)."""
        enc = dec = 0
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            if name.startswith("decoder") or name == "mask_token":
                dec += p.numel()
            else:
                enc += p.numel()
        return {"encoder": enc, "decoder": dec, "total": enc + dec}

    # ------------------------------------------------------------------------------------------
    # patches
    # ------------------------------------------------------------------------------------------
    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, L, patch_dim)``; padded bands (if any) are zeros."""
        return self.patch_grid.patchify(x)

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        """``(B, L, patch_dim)`` -> ``(B, C, H, W)``; band padding is dropped."""
        return self.patch_grid.unpatchify(patches)

    def patch_stats(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-patch mean and unbiased variance over real bands only: two ``(B, L, 1)`` float32.

        This is the normalisation of ``norm_pix_loss``: ``target = (patch - mean) / sqrt(var + 1e-6)``.
        """
        return self.patch_grid.patch_stats(patches, self.band_valid)

    # ------------------------------------------------------------------------------------------
    # masking, encoder, decoder
    # ------------------------------------------------------------------------------------------
    def random_masking(
        self, B: int, mask_ratio: float, device: torch.device, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-sample random masking by argsort of uniform noise, as the MAE reference.

        Returns:
            ``ids_keep (B, K)`` token ids kept, ``mask (B, L)`` 0 keep 1 remove,
            ``ids_restore (B, L)`` the permutation that puts shuffled tokens back in order.
            With ``K == L`` (ratio 0) no shuffle: ``ids_keep = ids_restore = arange(L)``.
        """
        L = self.num_patches
        len_keep = int(L * (1 - mask_ratio) + 1e-6)  # + eps: 2400 * (1 - 0.8) is 479.99999...
        if len_keep >= L:
            ids = torch.arange(L, device=device).expand(B, L)
            return ids, torch.zeros(B, L, device=device), ids
        noise = torch.rand(B, L, device=device, generator=generator)  # (B, L) in [0, 1)
        ids_shuffle = torch.argsort(noise, dim=1)  # ascend: small is keep, large is remove
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :len_keep]  # (B, K)
        mask = torch.ones(B, L, device=device)
        mask[:, :len_keep] = 0
        mask = torch.gather(mask, dim=1, index=ids_restore)  # unshuffle: (B, L) 0 keep 1 remove
        return ids_keep, mask, ids_restore

    def _encode_patches(
        self, patches: torch.Tensor, mask_ratio: float, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, L, P = patches.shape
        ids_keep, mask, ids_restore = self.random_masking(B, mask_ratio, patches.device, generator)
        K = ids_keep.shape[1]
        if K < L:  # keep only visible patches *before* embedding: embed K tokens, not L
            patches = torch.gather(patches, 1, ids_keep[..., None].expand(B, K, P))  # (B, K, P)
            pos = self.pos_embed[0, 1:][ids_keep]  # (B, K, D)
        else:
            pos = self.pos_embed[:, 1:]  # (1, L, D)
        x = self.patch_embed(patches) + pos  # (B, K, D)

        cls = (self.cls_token + self.pos_embed[:, :1]).expand(B, -1, -1)  # (B, 1, D)
        x = torch.cat([cls, x], dim=1)  # (B, 1 + K, D)
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)
        return x, mask, ids_restore

    def forward_encoder(
        self, x: torch.Tensor, mask_ratio: float | None = None, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encode the visible tokens of ``x`` ``(B, C, H, W)``.

        Returns:
            ``latent (B, 1 + K, D)`` (cls first, then the kept tokens in shuffled order; in token
            order when ``mask_ratio == 0``), ``mask (B, L)``, ``ids_restore (B, L)``.
        """
        mask_ratio = self.mask_ratio if mask_ratio is None else float(mask_ratio)
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        return self._encode_patches(self.patchify(x), mask_ratio, generator)

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """``latent (B, 1 + K, D)`` -> predicted patch vectors ``(B, L, patch_dim)`` for every token."""
        x = self.decoder_embed(latent)  # (B, 1 + K, Dd)
        B, K1, Dd = x.shape
        L = ids_restore.shape[1]
        mask_tokens = self.mask_token.expand(B, L + 1 - K1, Dd)  # (B, L - K, Dd)
        x_ = torch.cat([x[:, 1:], mask_tokens], dim=1)  # (B, L, Dd) shuffled order
        x_ = torch.gather(x_, 1, ids_restore[..., None].expand(B, L, Dd))  # unshuffle
        x = torch.cat([x[:, :1], x_], dim=1) + self.decoder_pos_embed  # (B, 1 + L, Dd)
        for blk in self.decoder_blocks:
            x = blk(x)
        x = self.decoder_norm(x[:, 1:])  # (B, L, Dd), cls dropped before the wide head
        return self.decoder_pred(x)  # (B, L, s*p*p)

    def forward_loss(
        self, patches: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss on masked tokens; ``patches`` are the input's :meth:`patchify`. Float32 always."""
        target = patches.float()
        if self.norm_pix_loss:
            mean, var = self.patch_stats(target)
            target = (target - mean) / (var + 1.0e-6).sqrt()  # padded bands: never scored
        band_valid = self.band_valid if self.num_pad_bands else None
        B = mask.shape[0]
        split = self.patch_grid.split
        return self.loss_fn(split(pred), split(target), mask.reshape(B, self.num_groups, self.num_spatial), band_valid)

    def forward(
        self, x: torch.Tensor, mask_ratio: float | None = None, generator: torch.Generator | None = None
    ) -> dict[str, Any]:
        """One MAE pass on ``x (B, C, H, W)``.

        Returns:
            ``{"loss": float32 scalar, "loss_parts": {"mse", "sam", "variance", "range"},
            "pred": (B, L, patch_dim), "mask": (B, L) 0 keep 1 masked}``. ``pred`` is in target
            space (per-patch normalised when ``norm_pix_loss``).
        """
        mask_ratio = self.mask_ratio if mask_ratio is None else float(mask_ratio)
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        patches = self.patchify(x)  # (B, L, P), also the target
        latent, mask, ids_restore = self._encode_patches(patches, mask_ratio, generator)
        pred = self.forward_decoder(latent, ids_restore)  # (B, L, P)
        loss, parts = self.forward_loss(patches, pred, mask)
        return {"loss": loss, "loss_parts": parts, "pred": pred, "mask": mask}

    @torch.no_grad()
    def reconstruct(
        self, x: torch.Tensor, mask_ratio: float | None = None, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Image-space reconstruction for evaluation and plots (no gradients).

        Masks ``x (B, C, H, W)`` as :meth:`forward` does, then returns

        * ``recon (B, C, H, W)`` in ``x``'s dtype: masked patches from the prediction, visible
          patches copied from ``x`` exactly. With ``norm_pix_loss`` the prediction is mapped back
          to data units with the *target patch's own* mean and std (over its real bands), as the
          MAE reference's visualisation does; this uses the hidden patch's statistics, so it shows
          the predicted structure, not a fully blind reconstruction;
        * ``pixel_mask (B, C, H, W)`` bool, True where the value was predicted (masked).
        """
        mask_ratio = self.mask_ratio if mask_ratio is None else float(mask_ratio)
        patches = self.patchify(x)  # (B, L, P)
        latent, mask, ids_restore = self._encode_patches(patches, mask_ratio, generator)
        pred = self.forward_decoder(latent, ids_restore).float()  # (B, L, P)
        if self.norm_pix_loss:
            mean, var = self.patch_stats(patches)
            pred = pred * (var + 1.0e-6).sqrt() + mean
        masked = mask.bool()[..., None]  # (B, L, 1)
        recon = torch.where(masked, pred.to(x.dtype), patches)  # (B, L, P)
        pixel_mask = masked.expand_as(patches)  # (B, L, P)
        return self.unpatchify(recon), self.unpatchify(pixel_mask)


_BUILD_OPTIONS = frozenset(inspect.signature(MaskedAutoencoderViT.__init__).parameters) - {"self", "num_bands", "image_size"}


def build_mae(variant: str, num_bands: int, image_size: int | Sequence[int], **overrides: Any) -> MaskedAutoencoderViT:
    """Build a spectral MAE of a named size (``MAE_VARIANTS``).

    Args:
        variant: one of ``tiny, small, base, medium, large, huge``.
        num_bands: bands ``C`` of the input cubes.
        image_size: tile side ``H`` (or ``(H, W)``), a multiple of ``spatial_patch``.
        **overrides: any :class:`MaskedAutoencoderViT` argument, e.g. ``spatial_patch``,
            ``spectral_patch``, ``mask_ratio``, ``decoder_embed_dim``, ``decoder_depth``,
            ``decoder_num_heads``, ``norm_pix_loss``, ``wavelengths_nm``, ``loss_weights``,
            ``value_range``, ``drop_path_rate``, ``device``; also ``embed_dim``, ``depth``,
            ``num_heads``, ``mlp_ratio`` to depart from the variant.

    Raises:
        ValueError: unknown variant (the message lists them), or a bad geometry.
        TypeError: an override that is no model argument (the message names it).
    """
    if variant not in MAE_VARIANTS:
        raise ValueError(f"unknown MAE variant {variant!r}; choose one of: {', '.join(MAE_VARIANTS)}")
    unknown = sorted(set(overrides) - _BUILD_OPTIONS)
    if unknown:
        raise TypeError(f"build_mae got unknown override(s) {unknown}; allowed: {', '.join(sorted(_BUILD_OPTIONS))}")
    kwargs = {**MAE_VARIANTS[variant].as_kwargs(), **overrides}
    return MaskedAutoencoderViT(num_bands=num_bands, image_size=image_size, **kwargs)
