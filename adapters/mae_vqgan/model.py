"""MAE-VQGAN (Bar et al. 2022), re-implemented: a ViT MAE whose decoder predicts VQGAN codes.

Parameter names and registration order equal the official ``models_mae.MaskedAutoencoderViT``
(timm 0.3.2 blocks) with its VQGAN as ``vae``, so ``state_dict()`` of the official config
matches ``reference/mae_vqgan_checkpoint_manifest.tsv`` key for key.

Forward with a fixed, explicit token layout (no random masking)::

    logits = model(imgs, visible, target)

* ``imgs``: ``[B, 3, H, W]`` ImageNet-normalised canvas.
* ``visible``: ``LongTensor [B, K]`` patch indices (raster order) the encoder sees; the
  encoder sequence is ``[cls, *visible]`` (``1 + K`` tokens).
* ``target``: ``LongTensor [B, M]`` patch indices to predict. The decoder sequence is
  ``[cls, *sorted(visible + target)]`` with mask tokens at the targets (``1 + K + M``).
* returns code logits ``[B, M, n_embed]`` at the targets, in the order given; with
  ``all_positions=True``, logits ``[B, K + M, n_embed]`` at every decoder slot instead (visible
  patches included, CLS excluded), in the decoder's order: ascending patch index of
  ``visible + target``. The official evaluation argmaxes all 196 of them and decodes them with
  the VQGAN as one 14 x 14 grid (``evaluate/mae_utils.py``; DESIGN §5).

The official inference (DESIGN §5) is ``visible`` = the 147 patches outside the bottom-right
7 x 7 block and ``target`` = those 49; dropping the example quadrants from ``visible`` gives
the zero-shot layout of the visual task vectors paper (encoder 50, decoder 99 tokens).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from nnvtv.errors import ShapeMismatchError

from .config import MaeVqganConfig
from .vqgan import VQGAN

__all__ = ["MaeVqgan", "sincos_pos_embed"]


def _sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    out = pos.reshape(-1).to(torch.float64)[:, None] * omega[None]
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def sincos_pos_embed(dim: int, grid: int, cls_token: bool = True) -> torch.Tensor:
    """MAE's fixed 2-D sin-cos table ``[1 (+1 cls row of zeros) + grid*grid, dim]`` (float32).

    Same construction as ``util/pos_embed.get_2d_sincos_pos_embed``: the first half of the
    channels encodes the column index, the second half the row index.
    """
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    emb = torch.cat([_sincos_1d(dim // 2, cols), _sincos_1d(dim // 2, rows)], dim=1)
    if cls_token:
        emb = torch.cat([torch.zeros(1, dim, dtype=torch.float64), emb])
    return emb.to(torch.float32)


class PatchEmbed(nn.Module):
    """``[B, 3, H, W]`` -> ``[B, grid*grid, D]`` with a strided ``proj`` convolution."""

    def __init__(self, patch: int, in_chans: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention. ``proj``'s input ``[B, T, heads*head_dim]`` holds the head outputs."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # [B, heads, T, head_dim]
        return self.proj(o.transpose(1, 2).reshape(b, t, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """timm pre-norm transformer block: ``x + attn(norm1(x))``, ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, eps: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class MaeVqgan(nn.Module):
    """ViT MAE encoder + decoder predicting VQGAN code logits; the VQGAN is ``self.vae``.

    Attributes:
        config: the :class:`MaeVqganConfig` (its fields are the adapter's config keys).
    """

    def __init__(self, config: MaeVqganConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        d, dd = c.embed_dim, c.decoder_embed_dim
        # registration order = the official state_dict order (parameters, then children)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(sincos_pos_embed(d, c.grid)[None], requires_grad=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dd))
        self.decoder_pos_embed = nn.Parameter(sincos_pos_embed(dd, c.grid)[None], requires_grad=False)
        self.patch_embed = PatchEmbed(c.patch_size, c.in_chans, d)
        self.blocks = nn.ModuleList(Block(d, c.num_heads, c.mlp_ratio, c.norm_eps) for _ in range(c.depth))
        self.norm = nn.LayerNorm(d, eps=c.norm_eps)
        self.vae = VQGAN(c.vqgan)
        self.decoder_embed = nn.Linear(d, dd)
        self.decoder_blocks = nn.ModuleList(
            Block(dd, c.decoder_num_heads, c.mlp_ratio, c.norm_eps) for _ in range(c.decoder_depth)
        )
        self.decoder_norm = nn.LayerNorm(dd, eps=c.norm_eps)
        self.decoder_pred = nn.Linear(dd, c.vocab_size)
        if not any(p.is_meta for p in self.parameters()):
            self._init_weights()

    def _init_weights(self) -> None:
        """MAE initialisation (xavier-uniform linears, normal(0.02) tokens); VQGAN keeps torch defaults."""
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        for name, m in self.named_modules():
            if name.startswith("vae"):
                continue
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    # ------------------------------------------------------------------ pieces
    def check_layout(self, imgs: torch.Tensor, visible: torch.Tensor, target: torch.Tensor) -> None:
        c = self.config
        want = (c.in_chans, c.img_size, c.img_size)
        if imgs.dim() != 4 or tuple(imgs.shape[1:]) != want:
            raise ShapeMismatchError(f"imgs must be [batch, {', '.join(map(str, want))}], got {tuple(imgs.shape)}")
        for name, t in (("visible", visible), ("target", target)):
            if t.dim() != 2 or t.shape[0] != imgs.shape[0] or t.dtype != torch.long:
                raise ShapeMismatchError(
                    f"{name} must be a LongTensor [batch={imgs.shape[0]}, n] of patch indices, got "
                    f"{t.dtype} {tuple(t.shape)}"
                )

    def encode(self, imgs: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """Encoder: ``[B, 3, H, W]``, ``visible [B, K]`` -> ``[B, 1 + K, embed_dim]`` (after ``norm``)."""
        x = self.patch_embed(imgs) + self.pos_embed[:, 1:]
        x = torch.gather(x, 1, visible[..., None].expand(-1, -1, x.shape[-1]))
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def decode_tokens(
        self, latent: torch.Tensor, visible: torch.Tensor, target: torch.Tensor, all_positions: bool = False
    ) -> torch.Tensor:
        """Decoder: latent ``[B, 1 + K, D]`` -> code logits ``[B, M, n_embed]`` at ``target``.

        ``all_positions=True``: logits ``[B, K + M, n_embed]`` at every decoder slot (CLS
        dropped), slot ``j`` being the ``j``-th smallest patch index of ``visible + target``
        (raster order; all ``grid * grid`` patches for the official ICL layout).
        """
        b, m = target.shape
        x = self.decoder_embed(latent)
        dd = x.shape[-1]
        ids = torch.cat([visible, target], dim=1)  # [B, K + M]
        order = ids.argsort(dim=1)  # raster order of the decoder sequence
        tokens = torch.cat([x[:, 1:], self.mask_token.expand(b, m, -1)], dim=1)
        tokens = torch.gather(tokens, 1, order[..., None].expand(-1, -1, dd))
        pos = self.decoder_pos_embed[0, 1:][torch.gather(ids, 1, order)]  # [B, K + M, dd]
        x = torch.cat([x[:, :1] + self.decoder_pos_embed[:, :1], tokens + pos], dim=1)
        for blk in self.decoder_blocks:
            x = blk(x)
        x = self.decoder_norm(x)[:, 1:]  # [B, K + M, dd]
        if all_positions:
            return self.decoder_pred(x)  # [B, K + M, n_embed]
        where = order.argsort(dim=1)[:, visible.shape[1] :]  # sequence slot of each target
        return self.decoder_pred(torch.gather(x, 1, where[..., None].expand(-1, -1, dd)))

    def forward(
        self, imgs: torch.Tensor, visible: torch.Tensor, target: torch.Tensor, all_positions: bool = False
    ) -> torch.Tensor:
        """Code logits ``[B, M, n_embed]`` for the ``target`` patches, or ``[B, K + M, n_embed]``
        for every decoder slot with ``all_positions=True`` (see the module docstring)."""
        self.check_layout(imgs, visible, target)
        return self.decode_tokens(self.encode(imgs, visible), visible, target, all_positions)

    # ------------------------------------------------------------------ pixels
    def render(self, codes: torch.Tensor) -> torch.Tensor:
        """Code ids ``[B, h, w]`` -> images in ``[0, 1]``, ``[B, 3, h*patch, w*patch]``.

        As in the official evaluation: VQGAN decode, clamp to ``[-1, 1]``, map to ``[0, 1]``.
        """
        return ((self.vae.decode_code(codes).clamp(-1, 1) + 1) / 2).float()

    def target_codes(self, imgs01: torch.Tensor) -> torch.Tensor:
        """Training targets: un-normalised canvas ``[B, 3, H, W]`` in ``[0, 1]`` -> code ids ``[B, grid*grid]``."""
        return self.vae.encode(imgs01 * 2 - 1).flatten(1)

    def num_parameters(self) -> int:
        return sum(math.prod(p.shape) for p in self.parameters())
