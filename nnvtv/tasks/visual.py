"""Visual in-context tasks on 2 x 2 canvases: segmentation, low-light, in-painting, colorization.

A visual task renders ``(input, output)`` image pairs at whatever cell size the model's
canvas geometry has (``model.io.geometry``, a :class:`~nnvtv.canvas.CanvasGeometry`), so one
task serves a 32-px toy and the 224-px official MAE-VQGAN alike. Examples are integer
indices; pair ``i`` is rendered deterministically from ``(seed, i)``.

Pairs come from a :class:`PairSource`:

* :class:`Procedural` — generated images (solid / stripes / checker / blob backgrounds with
  disk, square and cross shapes, colours from the 10-colour set :data:`COLOURS`; in
  segmentation each shape class has its own colour, :data:`SHAPE_COLOURS`). Each family has a
  *latent* that the example pair reveals and the query alone does not, so that one-shot
  prompting matters:

  ===============  =========================================  ============================
  family           input -> output                            latent (named task)
  ===============  =========================================  ============================
  segmentation     image -> white mask of one shape class      class (``disk``) of 3
  low-light        image * 0.5 -> ...                          ``restore`` | keep | invert
  inpainting       image with a black square -> ...            ``restore`` | keep | fill-<colour>
  colorization     grayscale (luma) -> colour                  palette ``0`` of 4 iso-luma
  ===============  =========================================  ============================

  The in-painting square (27/111 of the cell side) goes at a random place per image, at the
  centre (``hole="centre"``) or at a given place (:func:`hole_origin`); the official
  task-vector code masks a centred square, one random place shared by the example and the
  query, or independent places.

* :class:`FolderSegmentation` — a user folder in the Pascal-5i style (``images/*.jpg`` and
  ``masks/*.png`` with the same stems).
* :class:`FolderImages` — any folder of images, with the low-light / in-painting /
  colorization transforms.

Metrics follow the official MAE-VQGAN evaluation (reference notes): predictions and
targets are quantised to ``uint8``; segmentation rounds every pixel to the nearer of
white / black (mean over channels > 0.5) and scores IoU of the white pixels; the image
tasks score MSE of ImageNet-normalised pixels. Search losses are ``1 - IoU`` and the MSE.
"""

from __future__ import annotations

import dataclasses
import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from nnvtv.canvas import CanvasGeometry, CanvasPrompts, as_cell, make_canvas, normalize
from nnvtv.errors import ConfigError, EmptyDataError, ShapeMismatchError
from nnvtv.tasks.base import Split, Task, TaskBatch

if TYPE_CHECKING:
    from nnvtv.model import Model
    from nnvtv.vector import TaskVector

__all__ = [
    "FAMILIES",
    "LATENTS",
    "SHAPES",
    "SHAPE_COLOURS",
    "PALETTE_0",
    "PALETTES",
    "PairSource",
    "Procedural",
    "FolderSegmentation",
    "FolderImages",
    "VisualTask",
    "render_pair",
    "transform_pair",
    "hole_origin",
    "hole_side",
    "HOLE_PLACEMENTS",
    "quantize",
    "binarize",
    "iou",
    "mse",
    "select_prompts",
    "prompt_candidates",
    "procedural_tasks",
]

FAMILIES = ("segmentation", "low-light", "inpainting", "colorization")
SHAPES = ("disk", "square", "cross")
FILL_COLOURS = {"red": (0.9, 0.1, 0.1), "green": (0.1, 0.8, 0.2), "blue": (0.1, 0.2, 0.9)}
#: the colorization palettes: three colours each, darkest first, with the *same* lumas
#: (~0.25 / 0.47 / 0.74) in every palette, so the grey query says nothing about its palette
#: and only the example pair does. The named task uses palette 0.
PALETTES = (
    ((0.1, 0.2, 0.9), (0.9, 0.3, 0.2), (0.6, 0.9, 0.3)),  # blue, vermilion, lime
    ((0.6, 0.1, 0.1), (0.25, 0.62, 0.3), (0.45, 0.85, 0.95)),  # maroon, green, light cyan
    ((0.1, 0.36, 0.1), (0.8, 0.25, 0.7), (0.95, 0.75, 0.2)),  # dark green, magenta, yellow
    ((0.45, 0.1, 0.55), (0.25, 0.5, 0.95), (0.95, 0.63, 0.75)),  # purple, sky blue, pink
)
PALETTE_0 = PALETTES[0]
LATENTS: dict[str, tuple[Any, ...]] = {
    "segmentation": SHAPES,
    "low-light": ("restore", "keep", "invert"),
    "inpainting": ("restore", "keep", *(f"fill-{c}" for c in FILL_COLOURS)),
    "colorization": (*range(len(PALETTES)), "random"),
}
LUMA = np.array([0.299, 0.587, 0.114])


# --------------------------------------------------------------------------- metrics


def quantize(x: torch.Tensor) -> torch.Tensor:
    """``[0, 1]`` floats -> the ``uint8`` grid, back as floats (``round(x * 255) / 255``, clipped)."""
    return (x.clamp(0, 1) * 255).round() / 255


def binarize(x: torch.Tensor) -> torch.Tensor:
    """``[..., 3, H, W]`` -> ``BoolTensor [..., H, W]``: pixel nearer white than black.

    Nearest of {white, black} by squared RGB distance is "mean over channels > 0.5".
    """
    return quantize(x).mean(-3) > 0.5


def iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image IoU of the white pixels of ``pred [..., 3, H, W]`` and ``target [..., 3, H, W]``.

    Both are rounded with :func:`binarize`. Returns ``[...]``; an empty union counts as 1.
    """
    p, t = binarize(pred), binarize(target)
    inter = (p & t).flatten(-2).sum(-1).float()
    union = (p | t).flatten(-2).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image MSE of ImageNet-normalised, ``uint8``-quantised images ``[..., 3, H, W]`` -> ``[...]``."""
    d = normalize(quantize(pred)) - normalize(quantize(target))
    return d.pow(2).flatten(-3).mean(-1)


# --------------------------------------------------------------------------- procedural images


#: procedural images use this discrete colour set (small VQ codebooks can render it faithfully)
COLOURS = np.array([
    (0.95, 0.95, 0.95), (0.05, 0.05, 0.05), (0.9, 0.1, 0.1), (0.1, 0.8, 0.2), (0.1, 0.2, 0.9),
    (0.95, 0.85, 0.1), (0.1, 0.8, 0.85), (0.8, 0.2, 0.8), (0.95, 0.5, 0.1), (0.5, 0.5, 0.5),
])

#: in segmentation every shape class has its own colour (as real classes have a typical look), so
#: a model can find the class the example marks by its colour or its shape; backgrounds avoid them
SHAPE_COLOURS = {"disk": COLOURS[2], "square": COLOURS[4], "cross": COLOURS[5]}  # red, blue, yellow


def _colour(rng: np.random.Generator, avoid: Sequence[np.ndarray] = ()) -> np.ndarray:
    ok = [c for c in COLOURS if not any(np.allclose(c, a) for a in avoid)]
    return ok[int(rng.integers(len(ok)))]


def random_palette(rng: np.random.Generator) -> np.ndarray:
    """Three colours ``[3, 3]`` of :data:`COLOURS` with lumas at least 0.12 apart, darkest first."""
    lumas = COLOURS @ LUMA
    while True:
        idx = rng.choice(len(COLOURS), size=3, replace=False)
        lum = np.sort(lumas[idx])
        if np.all(np.diff(lum) >= 0.12):
            return COLOURS[idx[np.argsort(lumas[idx])]]


def _coords(n: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:n, 0:n].astype(np.float64) + 0.5
    return y, x


def _background(
    rng: np.random.Generator, n: int, colours: np.ndarray | None = None, avoid: Sequence[np.ndarray] = ()
) -> np.ndarray:
    """``[n, n, 3]``: solid, stripes, checker or smooth noise, in two colours (not in ``avoid``)."""
    if colours is not None:
        c1, c2 = colours[rng.permutation(len(colours))[:2]]
    else:
        c1 = _colour(rng, avoid=avoid)
        c2 = _colour(rng, avoid=[*avoid, c1])
    y, x = _coords(n)
    kind = rng.integers(4)
    if kind == 0:
        w = np.zeros((n, n))
    elif kind == 1:
        th, period = rng.uniform(0, np.pi), rng.uniform(max(5.0, n / 3), max(7.0, n / 1.5))
        w = (np.sin(2 * np.pi * (x * np.cos(th) + y * np.sin(th)) / period) > 0).astype(np.float64)
    elif kind == 2:
        s = rng.integers(max(3, n // 4), max(4, n // 2) + 1)
        w = ((np.floor(y / s) + np.floor(x / s)) % 2).astype(np.float64)
    else:
        k = 3
        coarse = rng.uniform(0, 1, (k, k))
        idx = np.minimum((y / n * (k - 1)), k - 1.001)
        jdx = np.minimum((x / n * (k - 1)), k - 1.001)
        i0, j0 = idx.astype(int), jdx.astype(int)
        fy, fx = idx - i0, jdx - j0
        w = (coarse[i0, j0] * (1 - fy) * (1 - fx) + coarse[i0 + 1, j0] * fy * (1 - fx)
             + coarse[i0, j0 + 1] * (1 - fy) * fx + coarse[i0 + 1, j0 + 1] * fy * fx)
        w = (w > 0.5).astype(np.float64)
    return c1[None, None] * (1 - w[..., None]) + c2[None, None] * w[..., None]


def _shape_mask(kind: str, n: int, cy: float, cx: float, r: float) -> np.ndarray:
    y, x = _coords(n)
    if kind == "disk":
        return (y - cy) ** 2 + (x - cx) ** 2 <= r * r
    if kind == "square":
        return (np.abs(y - cy) <= r * 0.85) & (np.abs(x - cx) <= r * 0.85)
    if kind == "cross":
        t = max(0.75, r * 0.4)
        return ((np.abs(y - cy) <= t) & (np.abs(x - cx) <= r)) | ((np.abs(x - cx) <= t) & (np.abs(y - cy) <= r))
    raise ConfigError(f"unknown shape {kind!r}; one of {SHAPES}")


def _place(
    rng: np.random.Generator, n: int, taken: list[tuple[float, float, float]], radius: tuple[float, float] = (0.16, 0.26)
) -> tuple[float, float, float]:
    """A centre and a radius (``radius`` as fractions of ``n``) that overlaps earlier shapes as
    little as it can (24 tries)."""
    best, best_d = None, -np.inf
    for _ in range(24):
        r = rng.uniform(*radius) * n
        cy, cx = rng.uniform(r, n - r), rng.uniform(r, n - r)
        d = min((np.hypot(cy - a, cx - b) - r - rr for a, b, rr in taken), default=np.inf)
        if d > best_d:
            best, best_d = (cy, cx, r), d
        if d > 0.5:
            break
    assert best is not None
    return best


def _shapes_image(
    rng: np.random.Generator, n: int, classes: Sequence[str], colours: np.ndarray | None = None,
    radius: tuple[float, float] = (0.16, 0.26), class_colours: dict[str, np.ndarray] | None = None,
) -> tuple[np.ndarray, list[np.ndarray]]:
    img = _background(rng, n, colours, avoid=list(class_colours.values()) if class_colours else ())
    bg = [img[0, 0], img[-1, -1]]
    masks: list[np.ndarray] = []
    taken: list[tuple[float, float, float]] = []
    for k in classes:
        cy, cx, r = _place(rng, n, taken, radius)
        taken.append((cy, cx, r))
        m = _shape_mask(k, n, cy, cx, r)
        if class_colours is not None:
            col = class_colours[k]
        else:
            col = colours[rng.integers(len(colours))] if colours is not None else _colour(rng, avoid=bg)
        img[m] = col
        masks = [mm & ~m for mm in masks] + [m]
    return img, masks


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))).float().clamp(0, 1)


def render_pair(family: str, latent: Any, seed: int, cell: int, *, hole: Hole = "random") -> tuple[torch.Tensor, torch.Tensor]:
    """One ``(input, output)`` pair ``[3, cell, cell]`` x 2 in ``[0, 1]`` of a procedural family.

    Deterministic in ``(family, latent, seed, cell)``. For colorization ``latent`` is a palette
    index into :data:`PALETTES` (``0`` = :data:`PALETTE_0`), ``"random"`` or an explicit ``[3, 3]``
    palette array. ``hole`` places the in-painting square (see :func:`hole_origin`).
    """
    if family not in FAMILIES:
        raise ConfigError(f"unknown visual task family {family!r}; one of {FAMILIES}")
    rng = np.random.default_rng([FAMILIES.index(family), int(seed), int(cell)])
    n = int(cell)
    if family == "segmentation":
        if latent not in SHAPES:
            raise ConfigError(f"segmentation latent must be a shape class {SHAPES}, got {latent!r}")
        others = [s for s in SHAPES if s != latent]
        # the foreground class and one distractor of another class (sometimes both others)
        classes = [latent, *rng.permutation(others)[: 1 + int(rng.random() < 0.25)].tolist()]
        rng.shuffle(classes)
        img, masks = _shapes_image(rng, n, classes, radius=(0.2, 0.3), class_colours=SHAPE_COLOURS)
        fg = np.zeros((n, n), dtype=bool)
        for k, m in zip(classes, masks, strict=True):
            if k == latent:
                fg |= m
        return _t(img), _t(np.repeat(fg[..., None].astype(np.float64), 3, axis=2))
    if family == "colorization":
        if isinstance(latent, np.ndarray):
            palette = latent
        elif isinstance(latent, (int, np.integer)) and 0 <= latent < len(PALETTES):
            palette = np.array(PALETTES[latent])
        elif latent == "random":
            palette = random_palette(rng)
        else:
            raise ConfigError(f"colorization latent must be a palette index 0..{len(PALETTES) - 1}, 'random' "
                              f"or a [3, 3] palette, got {latent!r}")
        img, _ = _shapes_image(rng, n, rng.choice(SHAPES, size=int(rng.integers(1, 3))).tolist(), palette)
        gray = (img @ LUMA)[..., None].repeat(3, axis=2)
        return _t(gray), _t(img)
    img, _ = _shapes_image(rng, n, rng.choice(SHAPES, size=int(rng.integers(0, 3))).tolist())
    return transform_pair(family, latent, _t(img), rng, hole=hole)


#: where the in-painting square goes: ``"random"`` (drawn per pair), ``"centre"``, or an explicit
#: top-left ``(row, col)`` -- the official task-vector code masks a centred square, one random
#: position shared by the example and the query, or independent random positions
Hole = str | tuple[int, int]
HOLE_PLACEMENTS = ("random", "centre")


def hole_side(cell: int) -> int:
    """Side of the in-painting square: 27 px of the official 111-px cell, scaled (at least 3)."""
    return max(3, round(cell * 27 / 111))


def _check_placement(hole: str) -> None:
    """A data source's placement is a :data:`HOLE_PLACEMENTS` name (its images may differ in size,
    so an explicit position belongs to :func:`render_pair` / :func:`transform_pair`)."""
    if hole not in HOLE_PLACEMENTS:
        raise ConfigError(f"hole must be one of {HOLE_PLACEMENTS}, got {hole!r}")


def hole_origin(cell: int, hole: Hole, rng: np.random.Generator) -> tuple[int, int]:
    """Top-left ``(row, col)`` of the in-painting square in a ``cell``-px image."""
    side = hole_side(cell)
    if hole == "random":
        return int(rng.integers(0, cell - side + 1)), int(rng.integers(0, cell - side + 1))
    if hole == "centre":
        return (cell - side) // 2, (cell - side) // 2
    if (isinstance(hole, tuple) and len(hole) == 2 and all(isinstance(v, (int, np.integer)) for v in hole)
            and all(0 <= v <= cell - side for v in hole)):
        return int(hole[0]), int(hole[1])
    raise ConfigError(f"hole must be one of {HOLE_PLACEMENTS} or a top-left (row, col) in [0, {cell - side}] "
                      f"(the square is {side} px in a {cell}-px cell), got {hole!r}")


def transform_pair(
    family: str, latent: Any, image: torch.Tensor, rng: np.random.Generator, *, hole: Hole = "random"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Low-light / in-painting / colorization pair from any image ``[3, n, n]`` in ``[0, 1]``
    (``hole``: where the in-painting square goes, :func:`hole_origin`)."""
    n = image.shape[-1]
    if family == "low-light":
        dark = image * 0.5
        out = {"restore": image, "keep": dark, "invert": 1 - image}.get(latent)
        if out is None:
            raise ConfigError(f"low-light latent must be one of {LATENTS['low-light']}, got {latent!r}")
        return dark, out.clone()
    if family == "inpainting":
        side = hole_side(n)
        r0, c0 = hole_origin(n, hole, rng)
        holed = image.clone()
        holed[:, r0 : r0 + side, c0 : c0 + side] = 0.0
        if latent == "restore":
            return holed, image.clone()
        if latent == "keep":
            return holed, holed.clone()
        colour = FILL_COLOURS.get(str(latent).removeprefix("fill-"))
        if colour is None:
            raise ConfigError(f"inpainting latent must be one of {LATENTS['inpainting']}, got {latent!r}")
        out = holed.clone()
        out[:, r0 : r0 + side, c0 : c0 + side] = torch.tensor(colour)[:, None, None]
        return holed, out
    if family == "colorization":
        gray = (image * torch.tensor(LUMA, dtype=image.dtype)[:, None, None]).sum(0, keepdim=True)
        return gray.expand(3, -1, -1).clone(), image.clone()
    raise ConfigError(f"no image transform for family {family!r}")


# --------------------------------------------------------------------------- sources


class PairSource(ABC):
    """Where a task's ``(input, output)`` pairs come from."""

    @abstractmethod
    def __len__(self) -> int:
        """Number of distinct pairs (examples are indices ``0 .. len - 1``)."""

    @abstractmethod
    def pair(self, index: int, cell: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Pair ``index`` as two ``[3, cell, cell]`` tensors in ``[0, 1]``."""

    def describe(self) -> str:
        return type(self).__name__


@dataclasses.dataclass(frozen=True)
class Procedural(PairSource):
    """Procedurally generated pairs of one family with one latent (see the module table);
    ``hole``: where in-painting squares go (``"random"`` per pair or ``"centre"``)."""

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


# --------------------------------------------------------------------------- the task


def canvas_geometry(model: Model) -> CanvasGeometry:
    """The canvas geometry of a visual-prompting model (its I/O's ``geometry``)."""
    g = getattr(model.io, "geometry", None)
    if not isinstance(g, CanvasGeometry):
        raise ConfigError(
            f"model {model.name!r} is not a visual-prompting model (its I/O has no canvas geometry); "
            "visual tasks need e.g. mae-vqgan or toy-visual"
        )
    return g


class VisualTask(Task):
    """A one-shot canvas task. Examples are pair indices; ``targets`` are answer cells ``[N, 3, c, c]``.

    Args:
        name: registry name.
        source: the :class:`PairSource`.
        metric: ``"iou"`` (higher is better) or ``"mse"`` (lower is better).
        n_test: held-out pairs (the last ``n_test`` indices).
        n_train: train pairs (demonstrations, means, the search objective's queries; the paper
            searches on ~10 queries), drawn by the split seed from the other indices; ``None``: all.
        background: canvas background (1 = white, as the official loaders).
        demo_pool: if set, ICL demonstrations are drawn only from these indices (see
            :func:`select_prompts`).
    """

    modality = "image"
    default_shots = 1

    def __init__(
        self,
        name: str,
        source: PairSource,
        *,
        metric: str,
        n_test: int = 32,
        n_train: int | None = 16,
        description: str = "",
        background: float = 1.0,
        demo_pool: Sequence[int] | None = None,
        models: Sequence[str] = (),
    ) -> None:
        if metric not in ("iou", "mse"):
            raise ConfigError(f"metric must be 'iou' or 'mse', got {metric!r}")
        if len(source) < n_test + 2:
            raise EmptyDataError(f"task {name!r}: {len(source)} pairs cannot give {n_test} test + 2 train pairs")
        self.name = name
        self.source = source
        self.metric = metric  # type: ignore[misc]
        self.higher_is_better = metric == "iou"  # type: ignore[misc]
        self.n_test = n_test
        self.n_train = n_train
        self.description = description or source.describe()
        self.background = background
        self.demo_pool = None if demo_pool is None else tuple(int(i) for i in demo_pool)
        self.models = tuple(models)
        self._cache: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    def pair(self, index: int, cell: int) -> tuple[torch.Tensor, torch.Tensor]:
        key = (int(index), int(cell))
        if key not in self._cache:
            if len(self._cache) > 20000:
                self._cache.clear()
            self._cache[key] = self.source.pair(int(index), int(cell))
        return self._cache[key]

    def split(self, seed: int = 0) -> Split:
        """Test = the last ``n_test`` indices; train = ``n_train`` of the others, chosen by ``seed``."""
        n = len(self.source)
        train = list(range(n - self.n_test))
        random.Random(seed).shuffle(train)
        if self.n_train is not None:
            train = train[: self.n_train]
        return Split(train=tuple(train), test=tuple(range(n - self.n_test, n)))

    def with_demos(self, pool: Sequence[int]) -> VisualTask:
        """The same task with ICL demonstrations restricted to ``pool``."""
        t = VisualTask(self.name, self.source, metric=self.metric, n_test=self.n_test, n_train=self.n_train, description=self.description,
                       background=self.background, demo_pool=pool, models=self.models)
        t._cache = self._cache
        return t

    def canvases(self, geometry: CanvasGeometry, queries: Sequence[int], demos: Sequence[int | None]) -> tuple[torch.Tensor, torch.Tensor]:
        """Canvases ``[N, 3, S, S]`` (answer cell = ground truth) and targets ``[N, 3, c, c]``."""
        c = geometry.cell
        canv, tgt = [], []
        for q, d in zip(queries, demos, strict=True):
            qi, qo = self.pair(q, c)
            ei, eo = (None, None) if d is None else self.pair(d, c)
            canv.append(make_canvas(ei, eo, qi, qo, geometry=geometry, background=self.background))
            tgt.append(qo)
        return torch.stack(canv), torch.stack(tgt)

    def _demos_for(self, queries: Sequence[int], demos: Sequence[int], seed: int) -> list[int]:
        pool_all = list(self.demo_pool) if self.demo_pool is not None else list(demos)
        rng = random.Random(seed)
        chosen = []
        for q in queries:
            pool = [d for d in pool_all if d != q]
            if not pool:
                raise ConfigError(f"task {self.name!r}: no demonstration besides query {q}")
            chosen.append(rng.choice(pool))
        return chosen

    def icl(self, model: Model, queries: Sequence[Any], demos: Sequence[Any], *, shots: int = 1, seed: int = 0, shuffle_labels: bool = False) -> TaskBatch:
        if shots != 1:
            raise ConfigError(f"a 2 x 2 canvas holds exactly one example pair (shots=1), got shots={shots}")
        if not queries:
            raise EmptyDataError(f"task {self.name!r}: no queries given")
        g = canvas_geometry(model)
        chosen = self._demos_for(queries, demos, seed)
        pixels, targets = self.canvases(g, queries, chosen)
        return TaskBatch(model.inputs(CanvasPrompts(pixels, False, g)), targets, list(zip(chosen, queries, strict=True)))

    def zero_shot(self, model: Model, queries: Sequence[Any]) -> TaskBatch:
        if not queries:
            raise EmptyDataError(f"task {self.name!r}: no queries given")
        g = canvas_geometry(model)
        pixels, targets = self.canvases(g, queries, [None] * len(queries))
        return TaskBatch(model.inputs(CanvasPrompts(pixels, True, g)), targets, [(None, q) for q in queries])

    def _check(self, readout: torch.Tensor, targets: torch.Tensor) -> None:
        if readout.shape[-3:] != targets.shape[-3:] or readout.dim() < 4:
            raise ShapeMismatchError(
                f"task {self.name!r} scores images [..., N, 3, H, W] against targets {tuple(targets.shape)}; "
                f"got a readout of shape {tuple(readout.shape)} (is this a visual-prompting model?)"
            )

    def score(self, readout: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-row IoU or MSE, ``readout.shape[:-3]``."""
        self._check(readout, targets)
        return iou(readout, targets) if self.metric == "iou" else mse(readout, targets)

    def loss(self, readout: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-row search loss (``1 - IoU`` or MSE), ``readout.shape[:-3]``."""
        s = self.score(readout, targets)
        return 1 - s if self.metric == "iou" else s

    def example_images(self, model: Model, vector: TaskVector | None = None, *, n: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
        """Pictures of held-out queries: ``{"canvas": [n, 3, S, S], "target", "icl", "zero_shot"[, "task_vector"]: [n, 3, c, c]}``."""
        split = self.split(seed)
        queries = list(split.test[:n])
        icl = self.icl(model, queries, split.train, shots=1, seed=seed + 1)
        zs = self.zero_shot(model, queries)
        pixels, targets = self.canvases(canvas_geometry(model), queries, [d for d, _ in icl.prompts])
        g = canvas_geometry(model)
        shown = pixels.clone()
        o = g.origin
        shown[:, :, o:, o:] = 0.5  # the answer cell is hidden from the model
        out = {
            "canvas": shown,
            "target": targets,
            "icl": model.run(icl.inputs, readout=True),
            "zero_shot": model.run(zs.inputs, readout=True),
        }
        if vector is not None:
            out["task_vector"] = model.run(zs.inputs, vector.patch(), readout=True)
        return out


def prompt_candidates(task: VisualTask, *, n_candidates: int, n_queries: int, seed: int = 0) -> tuple[list[int], list[int]]:
    """``(queries, candidates)`` for :func:`select_prompts`: the first ``n_queries`` train queries,
    and ``n_candidates`` other non-test pairs drawn by ``seed``."""
    queries = list(task.split(seed).train[:n_queries])
    taken = set(queries)
    pool = [i for i in range(len(task.source) - task.n_test) if i not in taken]
    random.Random(seed + 1).shuffle(pool)
    if len(pool) < n_candidates or len(queries) < n_queries:
        raise ConfigError(f"task {task.name!r} has {len(pool)} candidate pairs and {len(queries)} train queries; "
                          f"asked for {n_candidates} and {n_queries}")
    return queries, pool[:n_candidates]


def select_prompts(model: Model, task: VisualTask, *, k: int = 16, n_candidates: int = 64, n_queries: int = 8, seed: int = 0) -> VisualTask:
    """Score candidate demonstrations and keep the ``k`` best (paper: best 100 of ~3000).

    Each of ``n_candidates`` non-test pairs is used as the example for ``n_queries`` train
    queries; candidates are ranked by the mean task score of those one-shot prompts.
    Returns the task with ICL demonstrations restricted to the top ``k``.
    """
    queries, cands = prompt_candidates(task, n_candidates=n_candidates, n_queries=n_queries, seed=seed)
    if not 1 <= k <= len(cands):
        raise ConfigError(f"k must be in [1, {len(cands)}] (the candidates), got {k}")
    g = canvas_geometry(model)
    scores = []
    for cand in cands:
        pixels, targets = task.canvases(g, queries, [cand] * len(queries))
        out = model.run(model.inputs(CanvasPrompts(pixels, False, g)), readout=True)
        scores.append(float(task.score(out, targets).mean()))
    order = sorted(range(len(cands)), key=lambda i: scores[i], reverse=task.higher_is_better)
    return task.with_demos([cands[i] for i in order[:k]])


def procedural_tasks(size: int = 512, n_test: int = 32, models: Sequence[str] = ()) -> list[VisualTask]:
    """The four named procedural tasks: ``segmentation`` (disks), ``low-light`` (restore),
    ``inpainting`` (restore), ``colorization`` (palette 0)."""
    return [
        VisualTask("segmentation", Procedural("segmentation", "disk", size), metric="iou", n_test=n_test, models=models,
                   description="foreground segmentation: white mask of the disks (distractors: squares, crosses)"),
        VisualTask("low-light", Procedural("low-light", "restore", size), metric="mse", n_test=n_test, models=models,
                   description="low-light enhancement: input darkened 0.5x -> original"),
        VisualTask("inpainting", Procedural("inpainting", "restore", size), metric="mse", n_test=n_test, models=models,
                   description="in-painting: a black square (27/111 of the cell) -> original"),
        VisualTask("colorization", Procedural("colorization", 0, size), metric="mse", n_test=n_test, models=models,
                   description="colorization: luma -> colour, palette 0 of 4 with the same lumas"),
    ]
