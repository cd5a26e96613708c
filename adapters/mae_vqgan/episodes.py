"""The episodes ``toy-visual`` trains on: procedural 2 x 2 canvases of four task families.

Every episode draws a *latent* that the example pair reveals and the query does not (which
shape class is foreground; restore / keep / invert a darkened image; restore the hole or fill
it with a colour; the colorization palette) -- the generators live in
:mod:`nnvtv.tasks.procedural`. The defaults here are the shipped weights' recipe; the trainer
(:mod:`.train_toy`) and the model card (:mod:`.card`) both read them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from nnvtv.canvas import CanvasGeometry, make_canvas
from nnvtv.errors import ConfigError
from nnvtv.tasks.procedural import FAMILIES, LATENTS, PALETTES, SHAPES, hole_origin, render_pair

__all__ = [
    "EPISODE_SEED_BASE", "FAMILIES", "FAMILY_WEIGHTS", "TRAINING_LATENTS",
    "change_weights", "make_episodes", "resolve_family_weights", "resolve_latents",
]

EPISODE_SEED_BASE = 50_000_000  # far from the named tasks' pair seeds (0 .. 511)


#: the latents each family trains on by default (the shipped weights'): colorization the fixed
#: iso-luma palettes (not "random"); in-painting restore or fill (``"keep"`` is available, see
#: :func:`~nnvtv.adapters.mae_vqgan.train_toy.train_visual`'s
#: ``latents``)
TRAINING_LATENTS: dict[str, tuple[Any, ...]] = {
    "segmentation": SHAPES,
    "low-light": ("restore", "keep", "invert"),
    "inpainting": ("restore", "fill-red", "fill-green", "fill-blue"),
    "colorization": tuple(range(len(PALETTES))),
}

#: share of training episodes per family (segmentation, the hardest to learn, gets the most)
FAMILY_WEIGHTS = {"segmentation": 0.4, "low-light": 0.15, "inpainting": 0.25, "colorization": 0.2}


def resolve_latents(latents: dict[str, Any] | None = None) -> dict[str, tuple[Any, ...]]:
    """:data:`TRAINING_LATENTS` with the families in ``latents`` replaced (each a non-empty
    sequence of that family's :data:`~nnvtv.tasks.procedural.LATENTS`)."""
    out = dict(TRAINING_LATENTS)
    for family, options in (latents or {}).items():
        if family not in FAMILIES:
            raise ConfigError(f"unknown visual task family {family!r}; one of {FAMILIES}")
        options = tuple(options)
        bad = [x for x in options if x not in LATENTS[family] or x == "random"]
        if not options or bad:
            raise ConfigError(f"{family} training latents must be a non-empty list of {[x for x in LATENTS[family] if x != 'random']}, "
                              f"got {list(options)}")
        out[family] = options
    return out


def resolve_family_weights(family_weights: dict[str, float] | None = None) -> dict[str, float]:
    """:data:`FAMILY_WEIGHTS`, or ``family_weights`` (every family, non-negative, some positive)."""
    if family_weights is None:
        return dict(FAMILY_WEIGHTS)
    w = {f: float(family_weights.get(f, -1.0)) for f in FAMILIES}
    if set(family_weights) - set(FAMILIES) or min(w.values()) < 0 or sum(w.values()) <= 0:
        raise ConfigError(f"family weights need a non-negative weight for each of {FAMILIES} (some positive), "
                          f"got {family_weights}")
    return w


def make_episodes(
    n: int, seed: int, geometry: CanvasGeometry, family_weights: dict[str, float] | None = None, *,
    latents: dict[str, Any] | None = None, shared_hole: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` training canvases ``uint8 [n, 3, S, S]`` (answer cell = ground truth) and family ids ``[n]``.

    Episodes come in twins: ``2k`` and ``2k + 1`` share family and latent (different images).
    Families are drawn with ``family_weights`` (default :data:`FAMILY_WEIGHTS`), latents uniformly
    from ``latents`` (see :func:`resolve_latents`), so that no named task's latent is the most
    frequent. ``shared_hole``: an in-painting canvas masks the same square position in its
    example and its query (the official task-vector code's shared-random variant), instead of a
    position per image.
    """
    w = resolve_family_weights(family_weights)
    options = resolve_latents(latents)
    probs = np.array([w[f] for f in FAMILIES], dtype=np.float64)
    probs /= probs.sum()
    rng = np.random.default_rng(seed)
    canv = torch.empty(n, 3, geometry.size, geometry.size, dtype=torch.uint8)
    fam = torch.empty(n, dtype=torch.long)
    f, lat = 0, None
    for i in range(n):
        if i % 2 == 0:
            f = int(rng.choice(len(FAMILIES), p=probs))
            lat = options[FAMILIES[f]][int(rng.integers(len(options[FAMILIES[f]])))]
        s = EPISODE_SEED_BASE + seed * 10_000_000 + 2 * i
        hole: Any = "random"
        if shared_hole and FAMILIES[f] == "inpainting":  # own stream: the other families' episodes stay as they are
            hole = hole_origin(geometry.cell, "random", np.random.default_rng([s, 1]))
        ex = render_pair(FAMILIES[f], lat, s, geometry.cell, hole=hole)
        q = render_pair(FAMILIES[f], lat, s + 1, geometry.cell, hole=hole)
        c = make_canvas(*ex, *q, geometry=geometry, background=1.0)
        canv[i] = (c * 255).round().to(torch.uint8)
        fam[i] = f
    return canv, fam


def change_weights(canv: torch.Tensor, geometry: CanvasGeometry, weight: float, *, tol: float = 4 / 255) -> torch.Tensor:
    """Per-code loss weights ``[N, M]`` for the ``M`` answer patches of canvases ``uint8 [N, 3, S, S]``.

    A patch whose pixels differ anywhere (by more than ``tol``) between the answer cell and the
    query input (the answer a model that copied its query would give) weighs ``1 + weight``, the
    others 1; each canvas's weights are then scaled to mean 1, so every episode keeps its share of
    the loss. Where the answer mostly copies the query (in-painting: all but the hole, ~7% of the
    pixels), the few codes that carry the task would otherwise drown among the copied ones; where
    every patch changes (segmentation, colorization) the weights stay uniform.
    """
    o, c, p = geometry.origin, geometry.cell, geometry.patch
    half = geometry.size // 2
    answer = canv[..., o : o + c, o : o + c].float()
    query = canv[..., o : o + c, 0:c].float()
    diff = torch.zeros(canv.shape[0], half, half)
    a = geometry.answer_offset  # the answer cell sits this many pixels into its patch block
    diff[:, a : a + c, a : a + c] = ((answer - query).abs().amax(1) > tol * 255).float()
    changed = diff.reshape(-1, half // p, p, half // p, p).amax((2, 4)).flatten(1)  # [N, M]
    w = 1.0 + weight * changed
    return w / w.mean(1, keepdim=True)
