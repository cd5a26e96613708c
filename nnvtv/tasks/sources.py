"""Pair sources of the visual tasks: where a task's ``(input, output)`` image pairs come from.

* :class:`Procedural` -- generated pairs of one family and latent, rendered by
  :func:`nnvtv.tasks.procedural.render_pair` (the families and latents are described there).
* :class:`FolderSegmentation` -- a user folder in the Pascal-5i style (``images/*.jpg`` and
  ``masks/*.png`` with the same stems).
* :class:`FolderImages` -- any folder of images, with the low-light / in-painting /
  colorization transforms of :func:`nnvtv.tasks.procedural.transform_pair`.

A source serves pair ``index`` as two ``[3, cell, cell]`` tensors in ``[0, 1]`` at whatever cell
size the model's canvas has; pair ``i`` is the same for a given ``(seed, i, cell)``.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nnvtv.canvas import as_cell
from nnvtv.errors import ConfigError, EmptyDataError
from nnvtv.tasks.procedural import FAMILIES, HOLE_PLACEMENTS, LATENTS, render_pair, transform_pair

__all__ = ["PairSource", "Procedural", "FolderSegmentation", "FolderImages"]


class PairSource(ABC):
    """Where a task's ``(input, output)`` pairs come from."""

    @abstractmethod
    def __len__(self) -> int:
        """Number of distinct pairs (examples are indices ``0 .. len - 1``)."""

    @abstractmethod
    def pair(self, index: int, cell: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Pair ``index`` as two ``[3, cell, cell]`` tensors in ``[0, 1]``."""

    def describe(self) -> str:
        """One line saying what the pairs are (a task's default description)."""
        return type(self).__name__


def _check_placement(hole: str) -> None:
    """A data source's placement is a :data:`~nnvtv.tasks.procedural.HOLE_PLACEMENTS` name (its images may differ in size,
    so an explicit position belongs to :func:`render_pair` / :func:`transform_pair`)."""
    if hole not in HOLE_PLACEMENTS:
        raise ConfigError(f"hole must be one of {HOLE_PLACEMENTS}, got {hole!r}")


@dataclasses.dataclass(frozen=True)
class Procedural(PairSource):
    """Procedurally generated pairs of one family with one latent (the table of
    :mod:`nnvtv.tasks.procedural`); ``hole``: where in-painting squares go (``"random"`` per
    pair or ``"centre"``)."""

    family: str
    latent: Any
    size: int = 512
    seed: int = 0
    hole: str = "random"

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ConfigError(f"unknown visual task family {self.family!r}; one of {FAMILIES}")
        ok = LATENTS[self.family]
        if self.latent not in ok:
            raise ConfigError(f"{self.family} latent must be one of {ok}, got {self.latent!r}")
        _check_placement(self.hole)

    def __len__(self) -> int:
        return self.size

    def pair(self, index: int, cell: int) -> tuple[torch.Tensor, torch.Tensor]:
        return render_pair(self.family, self.latent, self.seed * 1_000_003 + int(index), cell, hole=self.hole)

    def describe(self) -> str:
        where = f", {self.hole} hole" if self.family == "inpainting" else ""
        return f"procedural {self.family} (latent {self.latent!r}{where})"


_IMAGE_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def _open(path: Path) -> Any:
    from PIL import Image

    with Image.open(path) as im:
        return im.copy()


class FolderSegmentation(PairSource):
    """Pascal-5i-style folder: ``root/images/<stem>.jpg`` with ``root/masks/<stem>.png``.

    Args:
        root: the folder.
        fg_value: mask value of the foreground class (a class-index PNG, e.g. 15 for VOC
            "person"); ``None``: binary masks, foreground = value > 127.
    """

    def __init__(self, root: str | Path, fg_value: int | None = None) -> None:
        self.root = Path(root)
        img_dir, mask_dir = self.root / "images", self.root / "masks"
        if not img_dir.is_dir() or not mask_dir.is_dir():
            raise EmptyDataError(f"{self.root} must hold 'images/' and 'masks/' folders (Pascal-5i style)")
        masks = {p.stem: p for p in mask_dir.iterdir() if p.suffix.lower() in _IMAGE_EXT}
        self.items = sorted((p, masks[p.stem]) for p in img_dir.iterdir() if p.suffix.lower() in _IMAGE_EXT and p.stem in masks)
        if not self.items:
            raise EmptyDataError(f"no image/mask pairs with matching names under {img_dir} and {mask_dir}")
        self.fg_value = fg_value

    def __len__(self) -> int:
        return len(self.items)

    def pair(self, index: int, cell: int) -> tuple[torch.Tensor, torch.Tensor]:
        img_path, mask_path = self.items[index]
        image = as_cell(_open(img_path), cell)
        m = np.asarray(_open(mask_path).convert("L") if self.fg_value is None else _open(mask_path))
        fg = (m > 127) if self.fg_value is None else (m == self.fg_value)
        from PIL import Image

        # bicubic resize of the 0/255 mask, then the white/black rounding (as the official loader + metric)
        mask = as_cell(Image.fromarray((fg * 255).astype(np.uint8)), cell)
        return image, (mask.mean(0, keepdim=True) > 0.5).float().expand(3, -1, -1).clone()

    def describe(self) -> str:
        return f"segmentation folder {self.root} ({len(self)} pairs)"


class FolderImages(PairSource):
    """Any folder of images, turned into low-light / in-painting / colorization pairs
    (``hole``: where in-painting squares go, ``"random"`` per image or ``"centre"``)."""

    def __init__(self, root: str | Path, family: str, latent: Any = "restore", seed: int = 0, hole: str = "random") -> None:
        if family not in ("low-light", "inpainting", "colorization"):
            raise ConfigError(f"FolderImages serves low-light, inpainting or colorization, got {family!r}")
        self.root = Path(root)
        self.paths = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in _IMAGE_EXT) if self.root.is_dir() else []
        if not self.paths:
            raise EmptyDataError(f"no images ({', '.join(_IMAGE_EXT)}) under {self.root}")
        _check_placement(hole)
        self.family, self.latent, self.seed, self.hole = family, latent, seed, hole

    def __len__(self) -> int:
        return len(self.paths)

    def pair(self, index: int, cell: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = as_cell(_open(self.paths[index]), cell)
        return transform_pair(self.family, self.latent, image, np.random.default_rng([self.seed, index]), hole=self.hole)

    def describe(self) -> str:
        return f"{self.family} on images in {self.root} ({len(self)})"
