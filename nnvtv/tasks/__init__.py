"""Tasks: what a model is asked to do in context, and how it is scored.

>>> task = nnvtv.tasks.get("antonyms")          # a shipped word-pair task
>>> task = nnvtv.tasks.from_json("my_pairs.json")  # function-vector format
>>> nnvtv.tasks.list_tasks()
>>> nnvtv.tasks.for_model(model)                   # the tasks that suit a model

Tasks live in the registry :data:`TASKS` (the convention of :mod:`nnvtv.registry`): the
shipped word-pair files in ``nnvtv/tasks/data`` and the four procedural visual tasks are
nnvtv's own; plug-ins add theirs (e.g. the toy text models' symbol tasks) through the
entry-point group ``nnvtv.adapters``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nnvtv.errors import ConfigError, UnknownTaskError
from nnvtv.registry import Registry, deprecated_replace
from nnvtv.tasks.base import Split, Task, TaskBatch
from nnvtv.tasks.text import DEFAULT_FORMAT, PromptFormat, WordPairTask, from_json
from nnvtv.tasks.text import from_dict as _word_pairs_from_dict
from nnvtv.tasks.visual import procedural_tasks

if TYPE_CHECKING:
    from nnvtv.model import Model

__all__ = [
    "TASKS",
    "DEFAULT_FORMAT",
    "PromptFormat",
    "Split",
    "Task",
    "TaskBatch",
    "WordPairTask",
    "for_model",
    "from_dict",
    "from_json",
    "get",
    "list_tasks",
    "misfit_error",
    "register",
]

DATA_DIR = Path(__file__).parent / "data"

#: every task, by name
TASKS: Registry[Task] = Registry(
    "task",
    Task,
    UnknownTaskError,
    how_to_add=(
        "A word-pair JSON file (function-vector format: a list of {\"input\", \"output\"}) can be "
        "given by path; nnvtv.tasks.register(task) adds a Task object."
    ),
)


def register(task: Task, *, replace: bool = False, override: bool | None = None) -> Task:
    """Make ``task`` available as ``nnvtv.tasks.get(task.name)`` (``override=`` is the deprecated
    name of ``replace=``)."""
    return TASKS.register(task, replace=deprecated_replace(replace, "override", override, "nnvtv.tasks.register"))


def list_tasks() -> list[Task]:
    """Every registered task, nnvtv's own first."""
    return TASKS.values()


def get(name: str | os.PathLike[str] | Task) -> Task:
    """The task called ``name`` (a :class:`Task` passes through); a file path loads a word-pair file.

    A registered name wins; otherwise a path that exists, or ends in ``.json``, is read with
    :func:`from_json` (whose errors name the file, the item and the key).

    Raises:
        UnknownTaskError: neither a registered name nor a file (the message lists the tasks).
        ConfigError: ``name`` is not a string, path or task, or the file is not a task file.
    """
    if isinstance(name, Task):
        return name
    if not isinstance(name, (str, os.PathLike)):
        raise ConfigError(f"task must be a task name, a word-pair JSON file or a Task, got {name!r} ({type(name).__name__})")
    text = os.fspath(name)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if text in TASKS:
        return TASKS.get(text)
    path = Path(text).expanduser()
    if path.exists() or path.suffix.lower() == ".json":
        return from_json(path)
    return TASKS.get(text)  # raises UnknownTaskError listing the tasks


def from_dict(data: Mapping[str, Any], *, where: str = "task data") -> Task:
    """Rebuild a task from what its :meth:`Task.to_dict` wrote (e.g. saved with a task vector)."""
    return _word_pairs_from_dict(data, where=where)


def for_model(model: Model | str) -> list[Task]:
    """The registered tasks that suit ``model``, in registry order.

    A task suits a model when its modality is the model's, the task is not written for other
    models only (``task.models``), the model's catalogue entry does not restrict its tasks
    (:attr:`~nnvtv.catalog.ModelEntry.tasks`), and (for a loaded model) :meth:`Task.misfit`
    finds nothing, e.g. the model's tokenizer writes every word of a word-pair task.

    ``model`` may be a catalogue name: then only the catalogue entry is read (nothing is loaded).

    Raises:
        UnknownModelError: a name that is not in the catalogue.
    """
    from nnvtv import catalog

    if isinstance(model, str):
        entry = catalog.MODELS.get(model)  # UnknownModelError listing the catalogue
        name, modality = entry.name, entry.modality
    else:
        entry = catalog.entry(model.name)
        name, modality = model.name, getattr(model.io, "modality", "") or ""
    allowed = None if entry is None or entry.tasks is None else set(entry.tasks)
    out = []
    for task in list_tasks():
        if allowed is not None and task.name not in allowed:
            continue
        if modality and task.modality != modality:
            continue
        if getattr(task, "models", ()) and name not in task.models:
            continue
        if not isinstance(model, str) and task.misfit(model) is not None:
            continue
        out.append(task)
    return out


def misfit_error(task: Task, model: Model | str) -> ConfigError | None:
    """The error to raise when ``task`` cannot run on ``model`` (``None``: it can): what does not
    fit, and which tasks suit this model (or which models suit this task).

    ``model`` may be a catalogue name: then only modalities are compared (nothing is loaded).
    """
    from nnvtv.catalog import MODELS, list_models
    from nnvtv.tasks.base import modality_problem

    if isinstance(model, str):
        entry = MODELS.get(model)
        name, have = entry.name, entry.modality
        problem = modality_problem(task, name, have)
    else:
        name, have = model.name, getattr(model.io, "modality", "") or ""
        problem = task.misfit(model)
    if problem is None:
        return None
    hints = []
    if have and have != task.modality:
        fit = [e.name for e in list_models() if e.modality == task.modality]
        if fit:
            hints.append(f"models that read {task.modality}: {', '.join(fit)} (`nnvtv models`)")
    suits = [t.name for t in for_model(model)]
    if suits:
        hints.append(f"tasks that suit {name}: {', '.join(suits)} (`nnvtv tasks --model {name}`)")
    else:
        hints.append(f"no registered task suits {name}; write your own word-pair file in its vocabulary")
    text = "; ".join(hints)
    return ConfigError(f"{problem}. {text[:1].upper()}{text[1:]}")


for _path in sorted(DATA_DIR.glob("*.json")):
    TASKS.register_builtin(from_json(_path, description=f"word pairs from {_path.name}"))
for _task in procedural_tasks():  # segmentation, low-light, inpainting, colorization
    TASKS.register_builtin(_task)
