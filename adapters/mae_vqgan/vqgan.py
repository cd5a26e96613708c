"""A VQGAN (taming-transformers ``VQModel`` layout) written for nnvtv.

Module and parameter names follow taming-transformers (``encoder.down.N.block.M.conv1``,
``decoder.up.N.attn.M.q``, ``quantize.embedding``, ``quant_conv``, ``post_quant_conv``) so an
official MAE-VQGAN checkpoint's ``vae.*`` tensors load strictly. Shapes:

* :meth:`VQGAN.encode`: images ``[B, 3, H, W]`` in ``[-1, 1]`` -> codes ``LongTensor [B, H/f, W/f]``
* :meth:`VQGAN.decode_code`: codes ``[B, h, w]`` -> images ``[B, 3, h*f, w*f]`` (about ``[-1, 1]``)

with ``f = 2 ** (len(ch_mult) - 1)`` (16 for the official f16 model).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import VQGANConfig

__all__ = ["VQGAN", "Encoder", "Decoder", "VectorQuantizer"]


def _norm(c: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=groups, num_channels=c, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """GroupNorm-swish-conv x 2 with a 1x1 ``nin_shortcut`` when the width changes."""

    def __init__(self, c_in: int, c_out: int, groups: int) -> None:
        super().__init__()
        self.norm1 = _norm(c_in, groups)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, 1, 1)
        self.norm2 = _norm(c_out, groups)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1)
        if c_in != c_out:
            self.nin_shortcut = nn.Conv2d(c_in, c_out, 1, 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        if hasattr(self, "nin_shortcut"):
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with 1x1-conv ``q``, ``k``, ``v``, ``proj_out``."""

    def __init__(self, c: int, groups: int) -> None:
        super().__init__()
        self.norm = _norm(c, groups)
        self.q = nn.Conv2d(c, c, 1)
        self.k = nn.Conv2d(c, c, 1)
        self.v = nn.Conv2d(c, c, 1)
        self.proj_out = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        b, c, hh, ww = h.shape
        q = self.q(h).reshape(b, c, hh * ww).transpose(1, 2)  # [b, hw, c]
        k = self.k(h).reshape(b, c, hh * ww).transpose(1, 2)
        v = self.v(h).reshape(b, c, hh * ww).transpose(1, 2)
        o = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(c)) v
        return x + self.proj_out(o.transpose(1, 2).reshape(b, c, hh, ww))


class Downsample(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 2, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Level(nn.Module):
    """One resolution level: ``block`` (res blocks), ``attn``, optional ``downsample``/``upsample``
    (the official key names; at most one of the two is set)."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.ModuleList()
        self.attn = nn.ModuleList()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        for i, blk in enumerate(self.block):
            h = blk(h)
            if len(self.attn):
                h = self.attn[i](h)
        for name in ("downsample", "upsample"):
            if hasattr(self, name):
                h = getattr(self, name)(h)
        return h


class _Mid(nn.Module):
    def __init__(self, c: int, groups: int) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(c, c, groups)
        self.attn_1 = AttnBlock(c, groups)
        self.block_2 = ResnetBlock(c, c, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nn.Module):
    """Images ``[B, in_channels, H, W]`` -> features ``[B, z_channels, H/f, W/f]``."""

    def __init__(self, cfg: VQGANConfig) -> None:
        super().__init__()
        g = cfg.num_groups
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, 3, 1, 1)
        in_mult = (1, *cfg.ch_mult)
        res = cfg.resolution
        self.down = nn.ModuleList()
        c = cfg.ch
        for i, mult in enumerate(cfg.ch_mult):
            level = _Level()
            c, c_out = cfg.ch * in_mult[i], cfg.ch * mult
            for _ in range(cfg.num_res_blocks):
                level.block.append(ResnetBlock(c, c_out, g))
                c = c_out
                if res in cfg.attn_resolutions:
                    level.attn.append(AttnBlock(c, g))
            if i != len(cfg.ch_mult) - 1:
                level.downsample = Downsample(c)
                res //= 2
            self.down.append(level)
        self.mid = _Mid(c, g)
        self.norm_out = _norm(c, g)
        self.conv_out = nn.Conv2d(c, cfg.z_channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """Features ``[B, z_channels, h, w]`` -> images ``[B, out_ch, h*f, w*f]``."""

    def __init__(self, cfg: VQGANConfig) -> None:
        super().__init__()
        g = cfg.num_groups
        n = len(cfg.ch_mult)
        c = cfg.ch * cfg.ch_mult[-1]
        res = cfg.resolution // 2 ** (n - 1)
        self.conv_in = nn.Conv2d(cfg.z_channels, c, 3, 1, 1)
        self.mid = _Mid(c, g)
        levels: list[_Level] = []
        for i in reversed(range(n)):
            level = _Level()
            c_out = cfg.ch * cfg.ch_mult[i]
            for _ in range(cfg.num_res_blocks + 1):
                level.block.append(ResnetBlock(c, c_out, g))
                c = c_out
                if res in cfg.attn_resolutions:
                    level.attn.append(AttnBlock(c, g))
            if i != 0:
                level.upsample = Upsample(c)
                res *= 2
            levels.insert(0, level)
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(c, g)
        self.conv_out = nn.Conv2d(c, cfg.out_ch, 3, 1, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class VectorQuantizer(nn.Module):
    """Nearest-neighbour codebook (``embedding [n_embed, embed_dim]``), legacy VQ loss."""

    def __init__(self, n_embed: int, embed_dim: int, beta: float = 0.25) -> None:
        super().__init__()
        self.n_embed, self.embed_dim, self.beta = n_embed, embed_dim, beta
        self.embedding = nn.Embedding(n_embed, embed_dim)
        self.embedding.weight.data.uniform_(-1.0 / n_embed, 1.0 / n_embed)

    def codes(self, z: torch.Tensor) -> torch.Tensor:
        """``z [B, C, h, w]`` -> nearest code ids ``LongTensor [B, h, w]``."""
        b, c, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, c)
        e = self.embedding.weight
        d = flat.pow(2).sum(1, keepdim=True) + e.pow(2).sum(1) - 2 * flat @ e.t()
        return d.argmin(1).reshape(b, h, w)

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """Code ids ``[B, h, w]`` -> ``[B, embed_dim, h, w]``."""
        return self.embedding(ids).permute(0, 3, 1, 2).contiguous()

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns ``(z_q with straight-through gradient, vq loss, ids [B, h, w])``."""
        ids = self.codes(z)
        zq = self.lookup(ids)
        # taming's legacy form: commitment weight 1, codebook weight beta
        loss = (zq.detach() - z).pow(2).mean() + self.beta * (zq - z.detach()).pow(2).mean()
        return z + (zq - z).detach(), loss, ids


class VQGAN(nn.Module):
    """``encoder``, ``decoder``, ``quantize``, ``quant_conv``, ``post_quant_conv`` (taming order)."""

    def __init__(self, cfg: VQGANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quantize = VectorQuantizer(cfg.n_embed, cfg.embed_dim, cfg.beta)
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(cfg.embed_dim, cfg.z_channels, 1)

    def encode_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``[B, 3, H, W]`` in ``[-1, 1]`` -> pre-quantization ``[B, embed_dim, h, w]``."""
        return self.quant_conv(self.encoder(x))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``[B, 3, H, W]`` in ``[-1, 1]`` -> code ids ``LongTensor [B, H/f, W/f]``."""
        return self.quantize.codes(self.encode_features(x))

    def decode(self, zq: torch.Tensor) -> torch.Tensor:
        """Quantized features ``[B, embed_dim, h, w]`` -> images ``[B, 3, h*f, w*f]``."""
        return self.decoder(self.post_quant_conv(zq))

    def decode_code(self, ids: torch.Tensor) -> torch.Tensor:
        """Code ids ``[B, h, w]`` -> images ``[B, 3, h*f, w*f]`` (about ``[-1, 1]``)."""
        return self.decode(self.quantize.lookup(ids))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruction ``[B, 3, H, W]`` and the VQ loss (training)."""
        zq, loss, _ = self.quantize(self.encode_features(x))
        return self.decode(zq), loss
