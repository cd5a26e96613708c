"""The code part of an adapter: :class:`ModelIO` (prompts -> inputs, output -> readout) and its helpers.

A family's :class:`ModelIO` is the one place its code lives (the rest of an adapter is a table,
:mod:`nnvtv.adapter`): it builds inputs and group positions, reads the output, says how a
grid-shaped module value folds onto ``[batch, pos, width]`` (:meth:`ModelIO.layout`, a
:class:`ValueLayout`), places inputs on the model's device (:meth:`ModelIO.place`), and may let
candidates share a prompt prefix (:meth:`ModelIO.shared_prefix`, a :class:`SharedPrefix`).
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from nnvtv.errors import ConfigError, ShapeMismatchError
from nnvtv.inputs import ModelInputs

__all__ = ["ModelIO", "ValueLayout", "SEQUENCE", "SharedPrefix", "make_io"]


@dataclass(frozen=True)
class SharedPrefix:
    """A batch split into a prefix no patch can change and a short step holding every patched position.

    Causal models let many candidate site sets share the prefix: it runs once, unpatched, and
    only the step (e.g. the last token, attending to the prefix's cached keys and values) is
    tiled per candidate. Same readout, far fewer FLOPs when prompts are long.

    Attributes:
        prefix: inputs of the one unpatched forward over the shared prefix (``N`` rows).
        step: ``(prefix_output, rows LongTensor[R]) -> ModelInputs`` for ``R`` rows, row ``r``
            continuing prefix row ``rows[r]``; its group positions index the step alone.
        row_bytes: ``prefix_output -> int``: memory one step row holds (its copy of the
            prefix state), used to bound chunk sizes.
    """

    prefix: ModelInputs
    step: Callable[[Any, torch.Tensor], ModelInputs]
    row_bytes: Callable[[Any], int]


class ValueLayout:
    """How one module value maps onto the canonical ``[batch, pos, width]`` the core works in.

    The base class is the identity, for sequence models whose values already are
    ``[batch, pos, width]`` (:data:`SEQUENCE`). A family whose values are grids, or that
    stacks copies of the batch, returns its own subclass from :meth:`ModelIO.layout` (SegGPT:
    ``[copies * batch, H, W, width]``, see ``nnvtv.adapters.hf_seggpt``).
    """

    def fold(self, x: torch.Tensor) -> torch.Tensor:
        """The module value ``x`` as ``[batch, pos, width]``."""
        return x

    def unfold(self, y: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`fold`: ``[batch, pos, width]`` back to the module value's shape."""
        return y

    def positions(self, positions: torch.Tensor) -> torch.Tensor:
        """Group positions ``LongTensor [batch, P]`` as indices into the folded value."""
        return positions


#: the identity layout of ``[batch, pos, width]`` sequences
SEQUENCE = ValueLayout()


class ModelIO(ABC):
    """The code part of an adapter: prompts -> :class:`ModelInputs`, output -> readout.

    Subclasses declare ``modality`` and ``groups`` (per stream) and implement :meth:`build`,
    :meth:`readout` and :meth:`example`; grid-shaped models override :meth:`layout`. Options
    are keyword-only ``__init__`` arguments; unknown options are rejected by :func:`make_io`,
    never silently ignored.
    """

    #: what the model reads: ``"text"`` (token ids) or ``"image"`` (pixels, canvases); tasks
    #: of another modality are refused before any forward pass
    modality: ClassVar[str] = ""
    #: what :meth:`surrogate_loss` computes, in words; ``""`` (the default): the family offers
    #: no surrogate and gradient paths use the task's loss on the readout
    surrogate: ClassVar[str] = ""

    def __init__(self, module: torch.nn.Module, tokenizer: Any = None) -> None:
        self.module = module
        self.tokenizer = tokenizer

    @abstractmethod
    def groups(self) -> dict[str, tuple[str, ...]]:
        """``{stream: (group, ...)}`` of token groups this I/O marks in its inputs."""

    @abstractmethod
    def build(self, data: Any) -> ModelInputs:
        """Turn a batch of prompts (strings, images ...) into :class:`ModelInputs`."""

    @abstractmethod
    def readout(self, output: Any, inputs: ModelInputs) -> torch.Tensor:
        """Reduce the raw model output to what tasks score (computed inside the trace)."""

    @abstractmethod
    def example(self, batch_size: int = 2) -> ModelInputs:
        """A small valid batch, used to check the adapter when a model is wrapped."""

    def layout(self, x: torch.Tensor, batch: int) -> ValueLayout:
        """How a site's module value ``x`` folds onto ``[batch, pos, width]`` for an input batch of ``batch``.

        Sequence models (the default) need nothing: ``x`` must already be ``[batch, pos, width]``.

        Raises:
            ShapeMismatchError: ``x`` has a shape this I/O cannot fold.
        """
        if x.dim() != 3 or x.shape[0] != batch:
            raise ShapeMismatchError(
                f"a site value must be [batch, pos, width] for a batch of {batch}; got {tuple(x.shape)} "
                f"(a family with grid-shaped values overrides ModelIO.layout)"
            )
        return SEQUENCE

    def place(self, inputs: ModelInputs) -> ModelInputs:
        """``inputs`` on the device the model's forward expects (that of its first parameter)."""
        device = _input_device(self.module)
        return inputs if device is None else inputs.to(device)

    def surrogate_loss(self, output: Any, inputs: ModelInputs) -> torch.Tensor | None:
        """A differentiable per-row stand-in for the task loss, ``FloatTensor [batch]``, from the
        raw model ``output`` (before :meth:`readout`) and the ``inputs`` that hold the targets.

        For families whose readout has no gradient (an argmax before decoding): gradient
        strategies and learned task vectors minimise it instead (:mod:`nnvtv.surrogate`); exact
        patched forwards still score the task metric. A family that offers one sets
        :attr:`surrogate` to a description; the default offers none (``None``).
        """
        return None

    def shared_prefix(self, inputs: ModelInputs, groups: Collection[tuple[str, str]]) -> SharedPrefix | None:
        """Split ``inputs`` for candidates that patch only ``groups`` (``(stream, group)`` pairs).

        Return ``None`` (the default) when the model cannot share work between candidates;
        :func:`nnvtv.run_masks` then tiles the whole batch.
        """
        return None


def _input_device(module: torch.nn.Module | None) -> torch.device | None:
    if module is None:
        return None
    for p in module.parameters():
        return None if p.device.type == "meta" else p.device
    return None


def make_io(io_cls: type[ModelIO], module: torch.nn.Module, tokenizer: Any, options: dict) -> ModelIO:
    """Construct ``io_cls`` with ``options``; unknown option names raise :class:`ConfigError`."""
    params = inspect.signature(io_cls.__init__).parameters
    allowed = [n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(
            f"unknown option(s) {unknown} for {io_cls.__name__}; valid options: {allowed or 'none'}"
        )
    return io_cls(module, tokenizer, **options)
