"""Tasks: what a model is asked to do in context, and how it is scored.

>>> task = nnvtv.tasks.get("antonyms")          # a shipped word-pair task
>>> task = nnvtv.tasks.from_json("my_pairs.json")  # function-vector format
>>> nnvtv.tasks.list_tasks()

Tasks live in the registry :data:`TASKS` (the convention of :mod:`nnvtv.registry`): the
shipped word-pair files in ``nnvtv/tasks/data`` and the four procedural visual tasks are
nnvtv's own; plug-ins add theirs (e.g. the toy text models' symbol tasks) through the
entry-point group ``nnvtv.adapters``.
"""

from __future__ import annotations

from pathlib import Path

from nnvtv.errors import UnknownTaskError
from nnvtv.registry import Registry, deprecated_replace
from nnvtv.tasks.base import Split, Task, TaskBatch
from nnvtv.tasks.text import DEFAULT_FORMAT, PromptFormat, WordPairTask, from_json
from nnvtv.tasks.visual import procedural_tasks

__all__ = [
    "TASKS",
    "DEFAULT_FORMAT",
    "PromptFormat",
    "Split",
    "Task",
    "TaskBatch",
    "WordPairTask",
    "from_json",
    "get",
    "list_tasks",
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


def get(name: str | Task) -> Task:
    """The task called ``name`` (a :class:`Task` passes through); a ``.json`` path loads it."""
    if isinstance(name, Task):
        return name
    if name in TASKS:
        return TASKS.get(name)
    if str(name).endswith(".json") and Path(name).exists():
        return from_json(name)
    return TASKS.get(name)  # raises UnknownTaskError listing the tasks


for _path in sorted(DATA_DIR.glob("*.json")):
    TASKS.register_builtin(from_json(_path, description=f"word pairs from {_path.name}"))
for _task in procedural_tasks():  # segmentation, low-light, inpainting, colorization
    TASKS.register_builtin(_task)
