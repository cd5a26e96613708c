"""The task protocol: examples, ICL and zero-shot batches, loss and score.

A task knows its examples and how to score a model readout; the *model* (through its
adapter I/O and prompt format) knows how to turn examples into inputs. Every method that
builds inputs therefore takes the wrapped model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import torch

from nnvtv.checks import positive_int
from nnvtv.errors import EmptyDataError
from nnvtv.inputs import ModelInputs

if TYPE_CHECKING:
    from nnvtv.model import Model

__all__ = ["Task", "TaskBatch", "Split", "cycle"]

T = TypeVar("T")


@dataclass
class TaskBatch:
    """Model inputs for ``N`` prompts and what the readout is scored against.

    Attributes:
        inputs: the :class:`ModelInputs` (``N`` rows).
        targets: per-row targets (text: ``LongTensor [N]`` first target token ids).
        prompts: the prompts as given to the model (for display), if textual.
    """

    inputs: ModelInputs
    targets: torch.Tensor
    prompts: list[Any] = field(default_factory=list)
    #: demonstrations left out of the prompts to fit the model's ``max_length`` (all rows together)
    dropped_demos: int = 0

    def __len__(self) -> int:
        return self.inputs.batch_size

    def chunks(self, size: int) -> Iterator[ModelInputs]:
        """The inputs in consecutive row blocks of at most ``size`` rows (made one at a time)."""
        positive_int("size", size)
        return (self.inputs.rows(slice(start, start + size)) for start in range(0, len(self), size))


def cycle(items: Sequence[T], n: int, *, name: str = "n") -> list[T]:
    """``n`` items taken from ``items`` in order, starting over at the end.

    ``name`` is what the caller calls ``n`` (named in the error if it is not a positive int).

    Raises:
        EmptyDataError: ``items`` is empty (e.g. a task whose train split is empty).
    """
    positive_int(name, n)
    if not items:
        raise EmptyDataError(f"cannot take {n} items from an empty sequence (is the task's train split empty?)")
    return [items[i % len(items)] for i in range(n)]


@dataclass(frozen=True)
class Split:
    """Disjoint ``train`` (demonstrations, means, search objective) and ``test`` (held-out queries)."""

    train: tuple[Any, ...]
    test: tuple[Any, ...]


class Task(ABC):
    """Base class of every task. Subclasses set ``name``, ``modality`` and ``metric``."""

    name: str
    description: str = ""
    modality: ClassVar[str] = "text"
    metric: ClassVar[str] = "accuracy"
    higher_is_better: ClassVar[bool] = True

    @abstractmethod
    def split(self, seed: int = 0) -> Split:
        """Deterministic train/test split of the task's examples."""

    @abstractmethod
    def icl(self, model: Model, queries: Sequence[Any], demos: Sequence[Any], *, shots: int, seed: int = 0, shuffle_labels: bool = False) -> TaskBatch:
        """In-context prompts: ``shots`` demonstrations drawn from ``demos``, then each query."""

    @abstractmethod
    def zero_shot(self, model: Model, queries: Sequence[Any]) -> TaskBatch:
        """The queries alone (no demonstrations)."""

    @abstractmethod
    def loss(self, readout: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-row loss (lower is better), shape ``readout.shape[:-1]`` e.g. ``[B, N]``."""

    @abstractmethod
    def score(self, readout: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-row task metric, shape ``[..., N]``."""

    #: what :meth:`surrogate_loss` computes when it is not :meth:`loss`, in words (``""``: it is)
    surrogate: ClassVar[str] = ""

    def surrogate_loss(self, readout: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-row loss with a gradient, shape ``readout.shape[:-1]`` like :meth:`loss`, that
        gradient paths (gradient strategies, learned task vectors) minimise; exact patched
        forwards keep scoring :meth:`loss` and :meth:`score`. Default: :meth:`loss` (already
        differentiable for cross-entropy); a task whose loss rounds or thresholds overrides it
        and sets :attr:`surrogate` (see :mod:`nnvtv.surrogate`)."""
        return self.loss(readout, targets)

    #: catalogue names of the models this task is written for (empty: any model of its modality)
    models: tuple[str, ...] = ()

    def max_shots(self, split: Split, *, train_queries: bool = True) -> int | None:
        """The most demonstrations one ICL prompt can hold (``None``: no limit known).

        ``train_queries``: the queries come from ``split.train`` (means, the search objective),
        so a query is never its own demonstration; else they are held-out queries.
        """
        return None

    def misfit(self, model: Model) -> str | None:
        """Why this task cannot run on ``model`` (``None``: it can), checked before any forward.

        The base check compares modalities (``model.io.modality``); subclasses add theirs (a
        text task: whether the model's tokenizer can write its words).
        """
        return modality_problem(self, model.name, getattr(model.io, "modality", "") or "")

    def to_dict(self) -> dict[str, Any] | None:
        """Everything needed to rebuild this task (:func:`nnvtv.tasks.from_dict`), as JSON;
        ``None``: the task cannot be written down (it is found again by name)."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def modality_problem(task: Task, model_name: str, modality: str) -> str | None:
    """Why ``task`` cannot run on a model that reads ``modality`` (``None``: same modality, or unknown)."""
    if modality and modality != task.modality:
        return f"task {task.name!r} is {_a(task.modality)} task and model {model_name!r} reads {_plural(modality)}"
    return None


def _plural(modality: str) -> str:
    return {"image": "images"}.get(modality, modality)


def _a(modality: str) -> str:
    return {"text": "a text", "image": "an image"}.get(modality, f"a {modality!r}")
