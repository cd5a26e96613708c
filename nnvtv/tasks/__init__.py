"""Tasks: what a model is asked to do in context, and how it is scored.

>>> task = nnvtv.tasks.get("antonyms")          # a shipped word-pair task
>>> task = nnvtv.tasks.from_json("my_pairs.json")  # function-vector format
>>> nnvtv.tasks.list_tasks()

Shipped word-pair files live in ``nnvtv/tasks/data``; adapters (e.g. the toy models)
register their own tasks on import.
"""

from __future__ import annotations

from pathlib import Path

from nnvtv.errors import UnknownTaskError
from nnvtv.tasks.base import Split, Task, TaskBatch
from nnvtv.tasks.text import DEFAULT_FORMAT, PromptFormat, WordPairTask, from_json

__all__ = [
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
_REGISTRY: dict[str, Task] = {}
_LOADED = False


def register(task: Task, *, override: bool = False) -> Task:
    """Make ``task`` available as ``nnvtv.tasks.get(task.name)``."""
    if task.name in _REGISTRY and not override and _REGISTRY[task.name] is not task:
        raise UnknownTaskError(f"a task named {task.name!r} is already registered; pass override=True")
    _REGISTRY[task.name] = task
    return task


def _load_builtin() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    for path in sorted(DATA_DIR.glob("*.json")):
        if path.stem not in _REGISTRY:
            register(from_json(path, description=f"word pairs from {path.name}"))
    from nnvtv.tasks.visual import procedural_tasks

    for task in procedural_tasks():  # segmentation, low-light, inpainting, colorization
        if task.name not in _REGISTRY:
            register(task)
    import nnvtv.adapters  # noqa: F401  (adapters register their own tasks)


def list_tasks() -> list[Task]:
    """Every registered task, shipped ones first."""
    _load_builtin()
    return list(_REGISTRY.values())


def get(name: str | Task) -> Task:
    """The task called ``name`` (a :class:`Task` passes through); a ``.json`` path loads it."""
    if isinstance(name, Task):
        return name
    _load_builtin()
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name.endswith(".json") and Path(name).exists():
        return from_json(name)
    raise UnknownTaskError(
        f"unknown task {name!r}. Available: {', '.join(sorted(_REGISTRY))}. "
        "A word-pair JSON file (function-vector format) can be given by path."
    )
