"""Visual prompting canvases: a 2 x 2 grid of (example input, example output, query, answer).

Layout (Bar et al. 2022): a square canvas of ``size`` pixels, four ``cell``-pixel cells
separated by ``gap`` background pixels; cell origins ``(0, 0)``, ``(0, o)``, ``(o, 0)``,
``(o, o)`` with ``o = cell + gap``::

    +---------+---------+
    | example | example |
    |  input  | output  |
    +---------+---------+
    |  query  | answer  |   <- predicted; metrics read the crop [o:, o:]
    +---------+---------+

The official geometry is ``size=224, cell=111, gap=2`` (origin 113); small models use the
same code with a scaled geometry (``CanvasGeometry.scaled(32, patch=4)``: cell 15, origin 17).
Canvases are float tensors ``[3, size, size]`` in ``[0, 1]``; :func:`normalize` applies the
ImageNet statistics the models expect. Nothing here names a model family.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nnvtv.errors import ConfigError, EmptyDataError, ShapeMismatchError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "CanvasGeometry",
    "CanvasPrompts",
    "OFFICIAL",
    "as_cell",
    "make_canvas",
    "normalize",
    "denormalize",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
QUADRANTS = ("example_in", "example_out", "query", "answer")


@dataclass(frozen=True)
class CanvasGeometry:
    """Pixel and patch geometry of a 2 x 2 canvas.

    Attributes:
        size: canvas side in pixels.
        patch: model patch side in pixels (``size`` must be an even number of patches).
        gap: background pixels between cells (the cell is ``(size - gap) // 2``).
    """

    size: int = 224
    patch: int = 16
    gap: int = 2

    def __post_init__(self) -> None:
        if self.size % self.patch or (self.size // self.patch) % 2:
            raise ConfigError(
                f"canvas size {self.size} must be an even number of {self.patch}-px patches"
            )
        if not 0 <= self.gap < self.size // 2:
            raise ConfigError(f"gap {self.gap} must be in [0, {self.size // 2})")

    @classmethod
    def scaled(cls, size: int, patch: int, gap: int = 2) -> CanvasGeometry:
        return cls(size=size, patch=patch, gap=gap)

    @property
    def cell(self) -> int:
        """Side of one image cell (111 for the official geometry)."""
        return (self.size - self.gap) // 2

    @property
    def origin(self) -> int:
        """Pixel offset of the second row/column of cells (113 for the official geometry)."""
        return self.cell + self.gap

    @property
    def grid(self) -> int:
        """Patches per side."""
        return self.size // self.patch

    def cell_box(self, quadrant: str) -> tuple[int, int]:
        """Top-left pixel ``(row, col)`` of a quadrant's cell."""
        if quadrant not in QUADRANTS:
            raise ConfigError(f"unknown quadrant {quadrant!r}; one of {QUADRANTS}")
        i = QUADRANTS.index(quadrant)
        return (self.origin if i >= 2 else 0, self.origin if i % 2 else 0)

    def patches(self, quadrant: str) -> list[int]:
        """Raster-order patch indices of a quadrant (each quadrant is ``grid/2 x grid/2`` patches)."""
        if quadrant not in QUADRANTS:
            raise ConfigError(f"unknown quadrant {quadrant!r}; one of {QUADRANTS}")
        i, g, h = QUADRANTS.index(quadrant), self.grid, self.grid // 2
        r0, c0 = (h if i >= 2 else 0), (h if i % 2 else 0)
        return [r * g + c for r in range(r0, r0 + h) for c in range(c0, c0 + h)]

    @property
    def answer_offset(self) -> int:
        """Offset of the answer cell inside the answer quadrant's patch block (1 officially)."""
        return self.origin - self.size // 2

    def crop_answer(self, x: torch.Tensor) -> torch.Tensor:
        """The answer cell ``[..., C, cell, cell]`` of canvases ``[..., C, size, size]``."""
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            raise ShapeMismatchError(f"expected canvases [..., {self.size}, {self.size}], got {tuple(x.shape)}")
        o = self.origin
        return x[..., o : o + self.cell, o : o + self.cell]

    def crop_quadrant_block(self, x: torch.Tensor) -> torch.Tensor:
        """The answer cell ``[..., C, cell, cell]`` of an answer-quadrant block ``[..., C, size/2, size/2]``."""
        a = self.answer_offset
        return x[..., a : a + self.cell, a : a + self.cell]


OFFICIAL = CanvasGeometry()


def as_cell(image: Any, cell: int, *, mask: bool = False) -> torch.Tensor:
    """An image as a ``[3, cell, cell]`` float tensor in ``[0, 1]``.

    Accepts a PIL image (resized with bicubic interpolation, PIL's ``3``, as the official
    loaders do; nearest for masks), a ``uint8`` or float array/tensor ``[H, W]``,
    ``[H, W, C]`` or ``[C, H, W]`` (float values must be in ``[0, 1]``). One channel is
    broadcast to three. Tensors of another size are resized (bicubic, clamped; nearest for masks).
    """
    t: torch.Tensor
    if hasattr(image, "convert") and hasattr(image, "resize"):  # PIL
        from PIL import Image

        img = image.convert("L" if mask else "RGB")
        if img.size != (cell, cell):
            img = img.resize((cell, cell), Image.NEAREST if mask else Image.BICUBIC)
        t = torch.from_numpy(np.asarray(img).copy())
    elif isinstance(image, np.ndarray | torch.Tensor):
        t = torch.as_tensor(image)
    else:
        raise ShapeMismatchError(f"images must be PIL images, arrays or tensors, got {type(image).__name__}")
    if t.dtype == torch.uint8:
        t = t.float() / 255.0
    elif not t.is_floating_point():
        if t.dtype == torch.bool:
            t = t.float()
        else:
            raise ShapeMismatchError(f"image tensors must be uint8, bool or float, got {t.dtype}")
    t = t.float()
    if t.dim() == 2:
        t = t[None]
    elif t.dim() == 3 and t.shape[0] not in (1, 3) and t.shape[-1] in (1, 3):
        t = t.permute(2, 0, 1)
    if t.dim() != 3 or t.shape[0] not in (1, 3):
        raise ShapeMismatchError(f"an image must be [H, W], [H, W, C] or [C, H, W] with C in (1, 3), got {tuple(t.shape)}")
    if t.shape[-2:] != (cell, cell):
        mode = "nearest" if mask else "bicubic"
        t = F.interpolate(t[None], size=(cell, cell), mode=mode, **({} if mask else {"align_corners": False}))[0]
        t = t.clamp(0, 1)
    return t.expand(3, -1, -1).clone() if t.shape[0] == 1 else t


def make_canvas(
    example_in: Any,
    example_out: Any,
    query: Any,
    answer: Any = None,
    *,
    geometry: CanvasGeometry = OFFICIAL,
    background: float = 1.0,
) -> torch.Tensor:
    """Assemble one canvas ``[3, size, size]`` in ``[0, 1]``.

    ``answer`` (the ground truth, hidden from the model by its mask) may be ``None``: the
    answer cell is then left as background. ``background`` is 1 (white) in the official
    PASCAL / colorization loaders, 0 in the official demo.
    """
    g = geometry
    canvas = torch.full((3, g.size, g.size), float(background))
    for name, img in zip(QUADRANTS, (example_in, example_out, query, answer), strict=True):
        if img is None:
            continue
        r, c = g.cell_box(name)
        canvas[:, r : r + g.cell, c : c + g.cell] = as_cell(img, g.cell)
    return canvas


def normalize(x: torch.Tensor) -> torch.Tensor:
    """``[..., 3, H, W]`` in ``[0, 1]`` -> ImageNet-normalised."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device)[:, None, None]
    return (x - mean) / std


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalize`."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device)[:, None, None]
    return x * std + mean


@dataclass
class CanvasPrompts:
    """A batch of canvases for a visual-prompting model (what visual tasks hand to ``model.inputs``).

    Attributes:
        pixels: ``[B, 3, size, size]`` in ``[0, 1]`` (answer cells may hold the ground truth:
            the model never sees them).
        zero_shot: ``True``: the model sees only the query (the example quadrants are dropped
            from the token sequence); ``False``: the full canvas with the answer masked.
        geometry: the canvas geometry.
    """

    pixels: torch.Tensor
    zero_shot: bool
    geometry: CanvasGeometry

    def __post_init__(self) -> None:
        s = self.geometry.size
        if self.pixels.dim() != 4 or tuple(self.pixels.shape[1:]) != (3, s, s):
            raise ShapeMismatchError(f"canvas pixels must be [batch, 3, {s}, {s}], got {tuple(self.pixels.shape)}")
        if self.pixels.shape[0] == 0:
            raise EmptyDataError("an empty batch of canvases")

    def __len__(self) -> int:
        return int(self.pixels.shape[0])

    @staticmethod
    def stack(canvases: Sequence[torch.Tensor], *, zero_shot: bool, geometry: CanvasGeometry) -> CanvasPrompts:
        if not canvases:
            raise EmptyDataError("no canvases given")
        return CanvasPrompts(torch.stack(list(canvases)), zero_shot, geometry)
