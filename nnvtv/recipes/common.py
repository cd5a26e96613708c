"""What the LLM recipes share: the text-model check, clean ICL means, accuracy on a batch."""

from __future__ import annotations

import torch

from nnvtv import store
from nnvtv.activations import Means, mean_activations
from nnvtv.errors import ConfigError
from nnvtv.model import Model
from nnvtv.patching import Patch, run_masks
from nnvtv.progress import Progress, ProgressArg, with_progress
from nnvtv.sites import SiteSpace
from nnvtv.tasks import Task, TaskBatch
from nnvtv.tasks import get as get_task
from nnvtv.tasks.base import cycle

__all__ = [
    "RESULT_FIELDS", "GROUP", "accuracy", "check_text_model", "default_shots", "icl_means", "masked_accuracy"]

GROUP = "last"


def check_text_model(model: Model) -> None:
    """Raise :class:`~nnvtv.errors.ConfigError` unless ``model`` is one text stack with group ``last``."""
    if list(model.streams) != [""] or GROUP not in model.groups[""]:
        raise ConfigError(
            f"the LLM recipes need a single-stack text model with token group {GROUP!r}; "
            f"{model.name!r} has groups {model.groups}"
        )


def default_shots(task: Task, shots: int | None) -> int:
    """``shots``, or the task's ``default_shots`` (5 if it has none)."""
    return shots if shots is not None else getattr(task, "default_shots", 5)


@with_progress
def icl_means(
    model: Model,
    task: Task | str,
    space: SiteSpace,
    *,
    shots: int | None = None,
    n_prompts: int = 32,
    seed: int = 0,
    batch_size: int = 16,
    progress: ProgressArg = None,
) -> Means:
    """Mean activations of ``space`` over ``n_prompts`` clean ICL prompts on the train split.

    ``progress``: see :mod:`nnvtv.progress` (stage ``"means"``, prompts done of ``n_prompts``).

    Returns:
        :class:`Means`: ``[1, width]`` per site (group ``last`` has one position).
    """
    task = get_task(task)
    shots = default_shots(task, shots)
    split = task.split(seed)
    batch = task.icl(model, cycle(split.train, n_prompts, name="n_prompts"), split.train, shots=shots, seed=seed)

    def rows(done: int) -> None:
        if progress:
            progress(Progress("means", done, n_prompts))

    rows(0)
    return mean_activations(
        model, batch.chunks(batch_size), space, progress=rows,
        meta={"task": task.name, "shots": shots, "n_prompts": n_prompts, "seed": seed},
    )


def accuracy(model: Model, task: Task, batch: TaskBatch, patch: Patch | None = None, batch_size: int = 16) -> float:
    """Mean task score of ``batch`` (optionally patched), run ``batch_size`` rows at a time."""
    hits = []
    for start in range(0, len(batch), batch_size):
        rows = slice(start, start + batch_size)
        out = model.run(batch.inputs.rows(rows), patch, readout=True)
        hits.append(task.score(out, batch.targets[rows]))
    return float(torch.cat(hits).mean())


def masked_accuracy(
    model: Model, task: Task, batch: TaskBatch, means: Means, space: SiteSpace, mode: str, max_rows: int
) -> list[float]:
    """Accuracy with each single site of ``space`` patched (one-hot masks, batched): ``[len(space)]``."""
    masks = torch.eye(len(space), dtype=torch.bool)
    out = run_masks(model, batch.inputs, means, space, masks, mode=mode, max_rows=max(max_rows, len(batch)))
    return task.score(out, batch.targets).mean(-1).tolist()


#: the JSON fields every saved recipe result shares: where it was measured and how
RESULT_FIELDS: dict[str, store.Field] = {
    "model": store.Field(store.STR),
    "fingerprint": store.Field(store.STR),
    "task": store.Field(store.STR),
    "zero_shot": store.Field(store.NUMBER),
    "icl": store.Field(store.NUMBER),
    "shots": store.Field(store.at_least(store.INT, 0)),
    "n_queries": store.Field(store.at_least(store.INT, 0)),
    "n_mean_prompts": store.Field(store.at_least(store.INT, 0)),
    "forward_passes": store.Field(store.at_least(store.INT, 0)),
    "seconds": store.Field(store.NUMBER),
    "seed": store.Field(store.INT, default=0),
}
