"""Visual in-context tasks on 2 x 2 canvases: segmentation, low-light, in-painting, colorization.

A visual task renders ``(input, output)`` image pairs at whatever cell size the model's
canvas geometry has (``model.io.geometry``, a :class:`~nnvtv.canvas.CanvasGeometry`), so one
task serves a 32-px toy and a 224-px model alike. Examples are integer indices; pair ``i`` is
rendered deterministically from ``(seed, i)``.

This module holds the task and its prompt selection:

* :class:`VisualTask` -- a one-shot canvas task over a pair source, scored by IoU or MSE;
* :func:`canvas_geometry` -- a model's canvas geometry, or an error saying why it has none;
* :func:`prompt_candidates` / :func:`select_prompts` -- choose the best demonstrations;
* :func:`procedural_tasks` -- the four named procedural tasks.

The rest lives by concern, and is re-exported here for ``from nnvtv.tasks.visual import ...``:

* :mod:`nnvtv.tasks.procedural` -- the procedural data generators (:func:`render_pair`,
  :func:`transform_pair`, the families, latents, colours, palettes and in-painting holes);
* :mod:`nnvtv.tasks.sources` -- :class:`PairSource`, :class:`Procedural`,
  :class:`FolderSegmentation`, :class:`FolderImages`;
* :mod:`nnvtv.tasks.image_metrics` -- :func:`quantize`, :func:`binarize`, :func:`iou`,
  :func:`mse` (the official MAE-VQGAN evaluation).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from nnvtv.canvas import CanvasGeometry, CanvasPrompts, make_canvas, normalize
from nnvtv.errors import ConfigError, EmptyDataError, ShapeMismatchError
from nnvtv.tasks.base import Split, Task, TaskBatch
from nnvtv.tasks.image_metrics import binarize, iou, mse, quantize
from nnvtv.tasks.procedural import (  # the names this module held before the split, still importable here
    COLOURS,  # noqa: F401
    FAMILIES,
    FILL_COLOURS,  # noqa: F401
    HOLE_PLACEMENTS,
    LATENTS,
    LUMA,  # noqa: F401
    PALETTE_0,
    PALETTES,
    SHAPE_COLOURS,
    SHAPES,
    Hole,  # noqa: F401
    hole_origin,
    hole_side,
    random_palette,  # noqa: F401
    render_pair,
    transform_pair,
)
from nnvtv.tasks.sources import FolderImages, FolderSegmentation, PairSource, Procedural

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


#: how soft the white/black threshold of :meth:`VisualTask.surrogate_loss` is (pixel units)
SOFT_IOU_TEMPERATURE = 0.05


def canvas_geometry(model: Model) -> CanvasGeometry:
    """The canvas geometry of a visual-prompting model (its I/O's ``geometry``)."""
    g = getattr(model.io, "geometry", None)
    if not isinstance(g, CanvasGeometry):
        raise ConfigError(
            f"model {model.name!r} is not a visual-prompting model: its I/O has no canvas geometry "
            "(model.io.geometry), so there is no 2 x 2 canvas to put the example and query pairs in; "
            "visual tasks run on image models (`nnvtv models` lists every model with its modality)"
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

    def max_shots(self, split: Split, *, train_queries: bool = True) -> int | None:
        """A 2 x 2 canvas holds exactly one example pair."""
        return 1

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

    surrogate = (
        "soft IoU (pixels pass the white/black threshold through a sigmoid of temperature 0.05) for IoU tasks, "
        "MSE of the unrounded pixels for MSE tasks: the metric without its uint8 rounding and thresholding"
    )

    def surrogate_loss(self, readout: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-row differentiable stand-in for :meth:`loss`, ``readout.shape[:-3]``, with a gradient
        wherever the readout has one (a continuous readout such as SegGPT's).

        * IoU tasks: ``1 - soft IoU``, each pixel white with probability ``sigmoid((mean over
          channels - 0.5) / 0.05)`` (the metric's threshold, softened), the target binarised as
          the metric does, one pixel of smoothing (``(inter + 1) / (union + 1)``: an empty
          prediction of an empty mask scores 1, as the metric does). Pixel MSE was tried and
          ranks single-head patches *against* IoU on toy-seggpt (Spearman -0.23 and -0.52 on
          two splits, soft IoU +0.49 and +0.59).
        * MSE tasks: the metric's MSE of ImageNet-normalised pixels, without the ``uint8``
          rounding.
        """
        self._check(readout, targets)
        targets = targets.to(readout.device, readout.dtype)
        if self.metric == "mse":
            return (normalize(readout) - normalize(targets)).float().pow(2).flatten(-3).mean(-1)
        p = torch.sigmoid((readout.float().mean(-3) - 0.5) / SOFT_IOU_TEMPERATURE)  # [..., H, W]
        t = binarize(targets).float()
        inter = (p * t).flatten(-2).sum(-1)
        union = (p + t - p * t).flatten(-2).sum(-1)
        return 1 - (inter + 1) / (union + 1)

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
