"""Which ICL prompts the mean activations average: random ones, or the best of many.

A task vector's values are mean activations over ICL prompts built on the training queries.
``"random"`` (the default, as function vectors and Hendel et al. do) averages
``n_mean_prompts`` prompts with randomly drawn demonstrations. ``"best"`` follows the visual
task-vector recipe (Hojel et al. 2024: the means come from the ~100 best one-shot prompts of a
few thousand, by their own score on train queries): it builds ``n_candidates`` ICL prompts
on the training queries, scores each by its own task loss (the prompt's loss on its query,
one unpatched forward each: the candidates' cost), and averages the ``n_mean_prompts`` with
the lowest loss. It is task-agnostic: any task with ``icl`` and ``loss`` (word pairs,
visual canvases) works; :func:`nnvtv.tasks.visual.select_prompts` is the visual variant that
ranks demonstrations by their score over several queries.

Why ``"random"`` stays the default: ``"best"`` costs ``n_candidates`` extra forwards and
makes the means those of prompts the model already gets right, which is the paper's recipe
but a different quantity (the mean of successful ICL states rather than of ICL states).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from nnvtv.activations import Means, mean_activations
from nnvtv.checks import choice, positive_int
from nnvtv.errors import ConfigError
from nnvtv.tasks.base import TaskBatch, cycle

if TYPE_CHECKING:
    from nnvtv.model import Model
    from nnvtv.sites import Site
    from nnvtv.tasks import Task
    from nnvtv.tasks.base import Split

__all__ = ["MEAN_PROMPTS", "CANDIDATES_PER_PROMPT", "check_mean_prompts", "mean_prompt_batch", "icl_means"]

#: how the mean prompts are chosen, the default first
MEAN_PROMPTS = ("random", "best")
#: ``mean_prompts="best"`` scores this many candidates per kept prompt unless told otherwise
#: (the paper keeps ~100 of ~3000, 1 in 30; 8 keeps the candidates' cost a few times the means')
CANDIDATES_PER_PROMPT = 8
#: rows per scoring forward
CHUNK = 64

#: ``(done, total)`` prompt rows run so far
RowProgress = Callable[[int, int], None]


def check_mean_prompts(mean_prompts: Any, n_mean_prompts: Any, mean_candidates: Any) -> int | None:
    """Validate the three arguments; return the number of candidates (``None`` for ``"random"``).

    Raises:
        ConfigError: an unknown ``mean_prompts``, a count that is not an int >= 1, fewer
            candidates than prompts to keep, or candidates given with ``"random"``.
    """
    choice("mean_prompts", mean_prompts, MEAN_PROMPTS)
    positive_int("n_mean_prompts", n_mean_prompts)
    positive_int("mean_candidates", mean_candidates, allow_none=True)
    if mean_prompts == "random":
        if mean_candidates is not None:
            raise ConfigError(
                f"mean_candidates={mean_candidates} only applies to mean_prompts='best' (the candidates the best "
                "prompts are chosen from); pass mean_prompts='best' or leave mean_candidates unset"
            )
        return None
    n = mean_candidates if mean_candidates is not None else CANDIDATES_PER_PROMPT * n_mean_prompts
    if n < n_mean_prompts:
        raise ConfigError(
            f"mean_candidates={n} is fewer than n_mean_prompts={n_mean_prompts}: the best {n_mean_prompts} prompts "
            f"are kept out of the candidates; use mean_candidates >= {n_mean_prompts}"
        )
    return n


def mean_prompt_batch(
    model: Model,
    task: Task,
    split: Split,
    *,
    shots: int,
    n_mean_prompts: int,
    seed: int = 0,
    mean_prompts: str = "random",
    mean_candidates: int | None = None,
    progress: RowProgress | None = None,
) -> tuple[TaskBatch, TaskBatch, dict[str, Any]]:
    """The ICL prompts on ``split.train`` the means average.

    Returns:
        ``(kept, built, record)``: the ``n_mean_prompts`` prompts to average; every prompt
        built (the candidates for ``"best"``, else ``kept`` itself; its ``dropped_demos`` counts
        demonstrations left out for ``max_length``); and how they were chosen, for the vector's
        meta (``mean_prompts``, ``n_mean_prompts`` and, for ``"best"``, ``mean_candidates``,
        ``candidate_loss`` and ``kept_loss``: the mean task loss of all candidates and of the
        kept ones).
    """
    n_candidates = check_mean_prompts(mean_prompts, n_mean_prompts, mean_candidates)
    record: dict[str, Any] = {"mean_prompts": mean_prompts, "n_mean_prompts": n_mean_prompts}
    if n_candidates is None:
        batch = task.icl(model, cycle(split.train, n_mean_prompts, name="n_mean_prompts"), split.train, shots=shots, seed=seed)
        return batch, batch, record
    built = task.icl(model, cycle(split.train, n_candidates, name="mean_candidates"), split.train, shots=shots, seed=seed)
    losses = []
    for start in range(0, len(built), CHUNK):
        rows = slice(start, start + CHUNK)
        out = model.run(built.inputs.rows(rows), readout=True)
        losses.append(task.loss(out, built.targets[rows].to(out.device)).detach().float().cpu())
        if progress:
            progress(min(start + CHUNK, len(built)), n_candidates + n_mean_prompts)
    loss = torch.cat(losses)
    keep = torch.sort(loss, stable=True).indices[:n_mean_prompts]
    kept = TaskBatch(
        built.inputs.rows(keep.to(built.targets.device)),
        built.targets[keep],
        [built.prompts[i] for i in keep.tolist()] if built.prompts else [],
    )
    record.update(mean_candidates=n_candidates, candidate_loss=float(loss.mean()), kept_loss=float(loss[keep].mean()))
    return kept, built, record


def icl_means(
    model: Model,
    task: Task,
    split: Split,
    sites: list[Site] | Any,
    *,
    shots: int,
    n_mean_prompts: int,
    seed: int = 0,
    mean_prompts: str = "random",
    mean_candidates: int | None = None,
    progress: RowProgress | None = None,
) -> tuple[Means, TaskBatch, dict[str, Any]]:
    """Mean activations of ``sites`` over the prompts :func:`mean_prompt_batch` chooses.

    Returns ``(means, built, record)`` (see :func:`mean_prompt_batch`); the means' meta holds
    the task, shots, seed and the record. ``progress(done, total)`` counts prompt rows run
    (candidates scored, then prompts averaged).
    """
    kept, built, record = mean_prompt_batch(
        model, task, split, shots=shots, n_mean_prompts=n_mean_prompts, seed=seed,
        mean_prompts=mean_prompts, mean_candidates=mean_candidates, progress=progress,
    )  # fmt: skip
    scored = record.get("mean_candidates", 0)
    total = scored + n_mean_prompts

    def on_rows(done: int) -> None:
        if progress:
            progress(scored + done, total)

    means = mean_activations(
        model, kept.chunks(CHUNK), sites, progress=on_rows,
        meta={"task": task.name, "shots": shots, "n_prompts": n_mean_prompts, "seed": seed, **record},
    )  # fmt: skip
    return means, built, record
