"""``nnvtv.evaluate``: held-out zero-shot, ICL and task-vector scores, every argument checked first.

Also the checks :func:`nnvtv.find` shares with it: the model is a :class:`~nnvtv.Model`, the task
fits it (:func:`check_fit`), the task can hold the shots asked for.
"""

from __future__ import annotations

from typing import Any

from nnvtv.checks import int_at_least
from nnvtv.errors import ConfigError
from nnvtv.model import Model
from nnvtv.progress import Progress, ProgressArg, with_progress
from nnvtv.scores import Scores, run_warnings, score_warnings
from nnvtv.tasks import Task, TaskBatch, misfit_error
from nnvtv.tasks import get as get_task
from nnvtv.vector import TaskVector

__all__ = ["evaluate", "score_batch", "check_model", "check_fit", "check_shots"]


def score_batch(model: Model, task: Task, batch: TaskBatch, patch: Any = None) -> float:
    """Mean task metric of ``batch`` (optionally patched)."""
    out = model.run(batch.inputs, patch, readout=True)
    return float(task.score(out, batch.targets).mean())


def check_model(model: Any) -> Model:
    if not isinstance(model, Model):
        raise ConfigError(
            f"model must be an nnvtv.Model (nnvtv.load(name) or nnvtv.wrap(module, tokenizer)) or a catalogue name, "
            f"got {model!r} ({type(model).__name__})"
        )
    return model


def check_fit(model: Model, task: Task) -> None:
    """Raise :class:`ConfigError` unless ``task`` can run on ``model`` (modality, vocabulary ...):
    the message says what does not fit and which tasks suit the model."""
    err = misfit_error(task, model)
    if err is not None:
        raise err


def check_shots(task: Task, split: Any, shots: int, *, train_queries: bool) -> None:
    top = task.max_shots(split, train_queries=train_queries)
    if top is not None and shots > top:
        why = ""
        if hasattr(task, "pairs"):
            why = f" (it keeps {len(split.train)} pairs to learn from{', none of them the query' if train_queries else ''})"
        raise ConfigError(f"shots={shots} is more than task {task.name!r} can put in one prompt: at most {top}{why}; use shots <= {top}")


@with_progress
def evaluate(
    model: Model,
    task: Task | str | None = None,
    vector: TaskVector | None = None,
    *,
    shots: int | None = None,
    seed: int = 0,
    progress: ProgressArg = None,
) -> Scores:
    """Held-out zero-shot, ICL and (if given) task-vector scores of ``task`` on ``model``.

    Args:
        model: a wrapped model.
        task: a task, its name or a word-pair JSON file; default: the vector's own task
            (:meth:`TaskVector.task_object`: rebuilt from the data saved with it, or by name).
        vector: a task vector to score (found on this model: same fingerprint).
        shots: demonstrations per ICL prompt (default: the task's); ``0`` makes the ICL row the
            zero-shot prompt.
        seed: seeds the split and the demonstrations.
        progress: ``None`` (default: a progress display, see :mod:`nnvtv.progress`), ``False``
            (silent), ``True``, or a callback receiving :class:`~nnvtv.progress.Progress`
            events (stage ``"evaluate"``: batches scored of 2 or 3).

    Every argument, and whether the task fits the model, is checked before any forward pass.
    The returned :attr:`Scores.warnings` say what makes the numbers hard to read.
    """
    model = check_model(model)
    if task is None:
        if vector is None:
            raise ConfigError("evaluate needs a task (a name, a word-pair JSON file or a Task) or a vector to take it from")
        task = vector.task_object()
    task = get_task(task)
    int_at_least("seed", seed, 0)
    int_at_least("shots", shots, 0, allow_none=True)
    if vector is not None and not isinstance(vector, TaskVector):
        raise ConfigError(f"vector must be an nnvtv.TaskVector (TaskVector.load(DIR)), got {type(vector).__name__}")
    check_fit(model, task)
    if vector is not None:
        vector.check_model(model)
    shots = shots if shots is not None else getattr(task, "default_shots", 5)
    split = task.split(seed)
    check_shots(task, split, shots, train_queries=False)
    zs = task.zero_shot(model, split.test)
    icl = task.icl(model, split.test, split.train, shots=shots, seed=seed + 1)
    n_scored, done = (2 if vector is None else 3), [0]

    def scored(value: float) -> float:  # one "evaluate" event per batch scored
        done[0] += 1
        if progress:
            progress(Progress("evaluate", done[0], n_scored))
        return value

    if progress:
        progress(Progress("evaluate", 0, n_scored))
    scores = Scores(
        metric=task.metric,
        zero_shot=scored(score_batch(model, task, zs)),
        icl=scored(score_batch(model, task, icl)),
        task_vector=None if vector is None else scored(score_batch(model, task, zs, vector.patch())),
        n_queries=len(zs),
        shots=shots,
        higher_is_better=bool(task.higher_is_better),
    )
    scores.warnings = score_warnings(scores) + run_warnings(model, task, shots, icl.dropped_demos, len(icl))
    return scores
