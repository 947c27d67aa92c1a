"""A re-implementation of the official MAE model (facebookresearch/mae ``models_mae.py``), for speed comparisons.

The official file cannot be downloaded here, so this is written from the paper (He et al., 2021,
"Masked Autoencoders Are Scalable Vision Learners") and the public reference's structure, and
kept as close to it as matters for speed:

* patch embedding: timm ``PatchEmbed`` (a ``Conv2d`` with kernel = stride = patch size);
* a cls token; fixed (not learned) 2-D sin-cos position embeddings for encoder and decoder, the
  cls position all zeros;
* ``random_masking``: per-sample uniform noise, ``argsort`` to shuffle, keep the first
  ``int(L * (1 - mask_ratio))``, ``gather`` the kept tokens (done *after* the patch embedding and
  the position embedding are added, as the reference does), binary mask unshuffled by ``gather``;
  at mask ratio 0 the shuffle still happens (the reference has no special case);
* encoder: timm ``Block``s (``qkv_bias=True``, ``LayerNorm(eps=1e-6)``), final norm;
* decoder: linear to the decoder width, the mask token repeated for the removed tokens,
  ``gather`` to unshuffle, decoder position embedding, decoder ``Block``s, norm, linear prediction
  of every patch's pixels (cls dropped after the prediction, as in the reference);
* loss: mean squared error per patch, averaged over the removed patches (``norm_pix_loss=False``);
  the target is the image patchified channel-last (``nchpwq -> nhwpqc``). One departure: the
  denominator is clamped to at least 1, so mask ratio 0 gives loss 0 rather than NaN.

Weights: xavier-uniform linears (the patch-embedding conv weight viewed as a linear), N(0, 0.02)
cls and mask tokens, LayerNorm 1/0. None of this changes the speed; it makes the comparison fair.
"""

from __future__ import annotations

from functools import partial

import torch
from timm.layers import PatchEmbed
from timm.models.vision_transformer import Block
from torch import nn

__all__ = ["ReferenceMAE", "sincos_pos_embed_2d"]


def _sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    """``(M,)`` positions -> ``(M, dim)``: sines of ``dim/2`` frequencies, then cosines."""
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega  # (dim/2,)
    out = pos.double().reshape(-1)[:, None] * omega[None, :]  # (M, dim/2)
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)  # (M, dim)


def sincos_pos_embed_2d(dim: int, grid_size: int, cls_token: bool = False) -> torch.Tensor:
    """``(grid_size**2 [+1], dim)`` float32; half of the dims encode the row, half the column."""
    assert dim % 4 == 0, "2-D sin-cos needs an embedding width divisible by 4"
    coords = torch.arange(grid_size, dtype=torch.float64)
    gy, gx = torch.meshgrid(coords, coords, indexing="ij")  # row-major grid
    emb = torch.cat([_sincos_1d(dim // 2, gx), _sincos_1d(dim // 2, gy)], dim=1)  # (G*G, dim)
    if cls_token:
        emb = torch.cat([torch.zeros(1, dim, dtype=emb.dtype), emb], dim=0)
    return emb.float()


class ReferenceMAE(nn.Module):
    """Masked autoencoder with a ViT backbone, as the official reference builds it."""

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 192,
        depth: int = 12,
        num_heads: int = 3,
        decoder_embed_dim: int = 128,
        decoder_depth: int = 4,
        decoder_num_heads: int = 4,
        mlp_ratio: float = 4.0,
        norm_pix_loss: bool = False,
    ) -> None:
        super().__init__()
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        self.patch_size, self.in_chans = patch_size, in_chans

        # encoder
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim), requires_grad=False)
        self.blocks = nn.ModuleList(
            [Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm_layer) for _ in range(depth)]
        )
        self.norm = norm_layer(embed_dim)

        # decoder
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim, bias=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, decoder_embed_dim), requires_grad=False)
        self.decoder_blocks = nn.ModuleList(
            [Block(decoder_embed_dim, decoder_num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm_layer)
             for _ in range(decoder_depth)]
        )
        self.decoder_norm = norm_layer(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size**2 * in_chans, bias=True)

        self.norm_pix_loss = norm_pix_loss
        self.initialize_weights()

    def initialize_weights(self) -> None:
        grid = int(self.patch_embed.num_patches**0.5)
        self.pos_embed.data.copy_(sincos_pos_embed_2d(self.pos_embed.shape[-1], grid, cls_token=True)[None])
        self.decoder_pos_embed.data.copy_(
            sincos_pos_embed_2d(self.decoder_pos_embed.shape[-1], grid, cls_token=True)[None]
        )
        w = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))  # the conv as a linear
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)

    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` -> ``(N, L, p*p*3)``, channel-last inside each patch."""
        p = self.patch_size
        h = w = imgs.shape[2] // p
        x = imgs.reshape(imgs.shape[0], self.in_chans, h, p, w, p)
        x = torch.einsum("nchpwq->nhwpqc", x)
        return x.reshape(imgs.shape[0], h * w, p * p * self.in_chans)

    def random_masking(self, x: torch.Tensor, mask_ratio: float):
        """Per-sample shuffle by argsort of noise; keep the first ``len_keep`` tokens."""
        N, L, D = x.shape
        len_keep = int(L * (1 - mask_ratio))
        noise = torch.rand(N, L, device=x.device)  # (N, L) in [0, 1)
        ids_shuffle = torch.argsort(noise, dim=1)  # small is keep, large is remove
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :len_keep]
        x_masked = torch.gather(x, dim=1, index=ids_keep.unsqueeze(-1).repeat(1, 1, D))  # (N, K, D)
        mask = torch.ones([N, L], device=x.device)
        mask[:, :len_keep] = 0
        mask = torch.gather(mask, dim=1, index=ids_restore)  # (N, L) 0 keep, 1 remove
        return x_masked, mask, ids_restore

    def forward_encoder(self, x: torch.Tensor, mask_ratio: float):
        x = self.patch_embed(x)  # (N, L, D)
        x = x + self.pos_embed[:, 1:, :]
        x, mask, ids_restore = self.random_masking(x, mask_ratio)  # (N, K, D)
        cls_token = self.cls_token + self.pos_embed[:, :1, :]
        x = torch.cat((cls_token.expand(x.shape[0], -1, -1), x), dim=1)  # (N, 1 + K, D)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x), mask, ids_restore

    def forward_decoder(self, x: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        x = self.decoder_embed(x)  # (N, 1 + K, Dd)
        mask_tokens = self.mask_token.repeat(x.shape[0], ids_restore.shape[1] + 1 - x.shape[1], 1)
        x_ = torch.cat([x[:, 1:, :], mask_tokens], dim=1)  # (N, L, Dd), shuffled
        x_ = torch.gather(x_, dim=1, index=ids_restore.unsqueeze(-1).repeat(1, 1, x.shape[2]))  # unshuffle
        x = torch.cat([x[:, :1, :], x_], dim=1)  # (N, 1 + L, Dd)
        x = x + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        x = self.decoder_norm(x)
        x = self.decoder_pred(x)  # (N, 1 + L, p*p*3)
        return x[:, 1:, :]

    def forward_loss(self, imgs: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        target = self.patchify(imgs)
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1.0e-6) ** 0.5
        loss = (pred - target) ** 2
        loss = loss.mean(dim=-1)  # (N, L), mean loss per patch
        # mean over removed patches; clamp: at mask ratio 0 the reference divides 0 by 0 (NaN), which
        # would poison the weights between timed configurations (the one departure from it)
        return (loss * mask).sum() / mask.sum().clamp_min(1.0)

    def forward(self, imgs: torch.Tensor, mask_ratio: float = 0.75):
        latent, mask, ids_restore = self.forward_encoder(imgs, mask_ratio)
        pred = self.forward_decoder(latent, ids_restore)
        loss = self.forward_loss(imgs, pred, mask)
        return loss, pred, mask
