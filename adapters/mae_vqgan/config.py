"""MAE-VQGAN configuration: the official ViT-L/16 + VQGAN-f16 sizes and small test/toy sizes.

The official numbers come from ``mae_vit_large_patch16`` and the taming-transformers
``vqgan_imagenet_f16_1024`` config (DESIGN.md §5; ``reference/mae_vqgan_checkpoint_manifest.tsv``).
Attribute names double as the adapter's config keys (``depth``, ``num_heads``, ``embed_dim``,
``decoder_depth``, ``decoder_num_heads``, ``decoder_embed_dim``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from nnvtv.errors import ConfigError

__all__ = ["VQGANConfig", "MaeVqganConfig", "official", "tiny", "toy"]


@dataclass(frozen=True)
class VQGANConfig:
    """taming-transformers ``VQModel`` sizes (encoder/decoder ``ddconfig`` + quantizer).

    The downsampling factor is ``2 ** (len(ch_mult) - 1)``; attention blocks sit at the
    levels whose resolution (starting from ``resolution``) is in ``attn_resolutions``.
    """

    embed_dim: int = 256
    n_embed: int = 1024
    z_channels: int = 256
    resolution: int = 256
    in_channels: int = 3
    out_ch: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    num_groups: int = 32
    beta: float = 0.25

    @property
    def factor(self) -> int:
        """Pixels per code along one side."""
        return 2 ** (len(self.ch_mult) - 1)


@dataclass(frozen=True)
class MaeVqganConfig:
    """Sizes of :class:`~nnvtv.adapters.mae_vqgan.model.MaeVqgan`.

    ``img_size`` / ``patch_size`` give the patch grid; the VQGAN factor must equal the
    patch size so one code stands for one patch (``decoder_pred`` gives ``n_embed`` logits).
    """

    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    decoder_embed_dim: int = 512
    decoder_depth: int = 8
    decoder_num_heads: int = 16
    mlp_ratio: float = 4.0
    norm_eps: float = 1e-6
    vqgan: VQGANConfig = field(default_factory=VQGANConfig)
    model_type: str = "mae_vqgan"

    def __post_init__(self) -> None:
        if self.img_size % self.patch_size:
            raise ConfigError(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        if (self.img_size // self.patch_size) % 2:
            raise ConfigError(
                f"the patch grid ({self.img_size // self.patch_size}) must be even so the canvas "
                "splits into 2 x 2 quadrants of whole patches"
            )
        if self.vqgan.factor != self.patch_size:
            raise ConfigError(
                f"VQGAN downsampling factor {self.vqgan.factor} (ch_mult={self.vqgan.ch_mult}) must "
                f"equal patch_size {self.patch_size}: one code per patch"
            )
        for w, h, what in ((self.embed_dim, self.num_heads, "encoder"), (self.decoder_embed_dim, self.decoder_num_heads, "decoder")):
            if w % h:
                raise ConfigError(f"{what} width {w} is not divisible by its {h} heads")

    @property
    def grid(self) -> int:
        """Patches per side (14 for the official config)."""
        return self.img_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid**2

    @property
    def vocab_size(self) -> int:
        return self.vqgan.n_embed

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["vqgan"] = dataclasses.asdict(self.vqgan)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MaeVqganConfig:
        d = dict(d)
        vq = d.pop("vqgan", {}) or {}
        vq = {k: tuple(v) if isinstance(v, list) else v for k, v in vq.items()}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown MaeVqganConfig field(s) {unknown}; known: {sorted(known)}")
        return cls(**d, vqgan=VQGANConfig(**vq))


def official() -> MaeVqganConfig:
    """``mae_vit_large_patch16`` + ``vqgan_imagenet_f16_1024`` (401,814,915 parameters)."""
    return MaeVqganConfig()


def tiny() -> MaeVqganConfig:
    """A few-thousand-parameter config for tests: 16 px canvas, 4 px patches (4 x 4 grid)."""
    return MaeVqganConfig(
        img_size=16,
        patch_size=4,
        embed_dim=16,
        depth=2,
        num_heads=2,
        decoder_embed_dim=8,
        decoder_depth=2,
        decoder_num_heads=2,
        mlp_ratio=2.0,
        vqgan=VQGANConfig(
            embed_dim=4, n_embed=16, z_channels=4, resolution=16, ch=8, ch_mult=(1, 1, 2),
            num_res_blocks=1, attn_resolutions=(4,), num_groups=4,
        ),
    )


def toy() -> MaeVqganConfig:
    """``toy-visual``: 32 px canvas, 4 px patches (8 x 8 grid), encoder 4 x d128 x 8 heads,
    decoder 2 x d128 x 8 heads (MLP ratio 2), VQGAN f4 (16/32/32 channels) with a 256 x 32 codebook."""
    return MaeVqganConfig(
        img_size=32,
        patch_size=4,
        embed_dim=128,
        depth=4,
        num_heads=8,
        decoder_embed_dim=128,
        decoder_depth=2,
        decoder_num_heads=8,
        mlp_ratio=2.0,
        vqgan=VQGANConfig(
            embed_dim=32, n_embed=256, z_channels=32, resolution=32, ch=16, ch_mult=(1, 2, 2),
            num_res_blocks=1, attn_resolutions=(), num_groups=8,
        ),
    )
