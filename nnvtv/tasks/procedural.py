"""Procedural image pairs: the data generators of the visual in-context tasks (a public module).

This is *the* data module for procedural images, and a public one: :mod:`nnvtv.tasks.sources`
(the :class:`~nnvtv.tasks.sources.Procedural` source of :class:`~nnvtv.tasks.visual.VisualTask`)
and the adapters' toy-model trainers import their pairs from here, so the tasks and the shipped
toy models see the same pixels.
Everything is deterministic: :func:`render_pair` seeds its own generator from
``(family, seed, cell)``, so changing a draw here changes what the shipped toy models were
trained on.

Images are solid / stripes / checker / blob backgrounds with disk, square and cross shapes,
in colours of the 10-colour set :data:`COLOURS` (in segmentation each shape class has its own
colour, :data:`SHAPE_COLOURS`). Each family has a *latent* (:data:`LATENTS`) that the example
pair reveals and the query alone does not, so that one-shot prompting matters:

===============  =========================================  ============================
family           input -> output                            latent (named task)
===============  =========================================  ============================
segmentation     image -> white mask of one shape class      class (``disk``) of 3
low-light        image * 0.5 -> ...                          ``restore`` | keep | invert
inpainting       image with a black square -> ...            ``restore`` | keep | fill-<colour>
colorization     grayscale (luma) -> colour                  palette ``0`` of 4 iso-luma
===============  =========================================  ============================

The in-painting square (:func:`hole_side`: 27/111 of the cell side) goes at a random place per
image, at the centre (``hole="centre"``) or at a given place (:func:`hole_origin`); the official
task-vector code masks a centred square, one random place shared by the example and the query,
or independent places. :func:`transform_pair` applies the low-light / in-painting /
colorization transforms to any image (folder images included).

Pairs are ``[3, cell, cell]`` float tensors in ``[0, 1]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from nnvtv.errors import ConfigError

__all__ = [
    "FAMILIES",
    "SHAPES",
    "COLOURS",
    "SHAPE_COLOURS",
    "FILL_COLOURS",
    "PALETTES",
    "PALETTE_0",
    "LATENTS",
    "LUMA",
    "Hole",
    "HOLE_PLACEMENTS",
    "hole_side",
    "hole_origin",
    "random_palette",
    "render_pair",
    "transform_pair",
]

#: the procedural task families (the module table)
FAMILIES = ("segmentation", "low-light", "inpainting", "colorization")
#: the shape classes (the segmentation latents)
SHAPES = ("disk", "square", "cross")
#: in-painting ``fill-<colour>`` latents: the colour the square is filled with (RGB in ``[0, 1]``)
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
#: every family's latents, first = the named task's (colorization: palette index or ``"random"``)
LATENTS: dict[str, tuple[Any, ...]] = {
    "segmentation": SHAPES,
    "low-light": ("restore", "keep", "invert"),
    "inpainting": ("restore", "keep", *(f"fill-{c}" for c in FILL_COLOURS)),
    "colorization": (*range(len(PALETTES)), "random"),
}
#: RGB -> luma weights (ITU-R BT.601), ``[3]``
LUMA = np.array([0.299, 0.587, 0.114])


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
    """``[n, n, 3]`` array -> ``[3, n, n]`` float tensor clipped to ``[0, 1]``."""
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))).float().clamp(0, 1)


#: where the in-painting square goes: ``"random"`` (drawn per pair), ``"centre"``, or an explicit
#: top-left ``(row, col)`` -- the official task-vector code masks a centred square, one random
#: position shared by the example and the query, or independent random positions
Hole = str | tuple[int, int]
HOLE_PLACEMENTS = ("random", "centre")


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


def hole_side(cell: int) -> int:
    """Side of the in-painting square: 27 px of the official 111-px cell, scaled (at least 3)."""
    return max(3, round(cell * 27 / 111))


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
