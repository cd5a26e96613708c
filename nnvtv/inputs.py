"""Model inputs together with the token positions of every group.

:class:`ModelInputs` is what an adapter's I/O builds from prompts (strings, images,
canvases) and what :meth:`nnvtv.Model.run`, :func:`nnvtv.mean_activations` and
:func:`nnvtv.patching.run_masks` consume. It keeps the keyword arguments of the
underlying forward (batch-first tensors) and, per stream, the positions of each token
group: ``positions[stream][group]`` is a ``LongTensor [batch, positions_in_group]`` of
sequence indices, so groups stay correct under padding in mixed-length batches.

Grid models (activations ``[batch, height, width, channels]``, e.g. SegGPT) use the same
indices on the flattened grid: cell ``(i, j)`` is ``i * width + j``; a model that stacks
``m`` copies of the batch (SegGPT's image and mask copies) numbers copy ``c``'s cells from
``c * height * width`` (see :mod:`nnvtv._trace`, :func:`~nnvtv._trace.fold`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from nnvtv.errors import EmptyDataError, ShapeMismatchError

__all__ = ["ModelInputs"]


@dataclass
class ModelInputs:
    """Batch-first forward kwargs plus group positions.

    Attributes:
        kwargs: keyword arguments of the model forward; every tensor is ``[batch, ...]``.
        positions: ``{stream: {group: LongTensor[batch, positions_in_group]}}``.
        extra: non-tensor data an I/O keeps for readout (e.g. targets); never passed on.
    """

    kwargs: dict[str, torch.Tensor]
    positions: dict[str, dict[str, torch.Tensor]]
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        sizes = {k: v.shape[0] for k, v in self.kwargs.items() if isinstance(v, torch.Tensor)}
        for stream, groups in self.positions.items():
            for g, pos in groups.items():
                sizes[f"positions[{stream!r}][{g!r}]"] = pos.shape[0]
        if not sizes:
            raise EmptyDataError("ModelInputs needs at least one tensor input")
        if len(set(sizes.values())) != 1:
            raise ShapeMismatchError(f"inputs disagree on the batch size: {sizes}")
        if next(iter(sizes.values())) == 0:
            raise EmptyDataError("ModelInputs got an empty batch (0 rows)")

    @property
    def batch_size(self) -> int:
        for v in self.kwargs.values():
            if isinstance(v, torch.Tensor):
                return int(v.shape[0])
        raise EmptyDataError("ModelInputs holds no tensor")

    def group_positions(self, stream: str, group: str) -> torch.Tensor:
        """``LongTensor [batch, positions_in_group]`` of ``group`` in ``stream``."""
        return self.positions[stream][group]

    def group_size(self, stream: str, group: str) -> int:
        return int(self.positions[stream][group].shape[1])

    def repeat(self, k: int) -> ModelInputs:
        """Tile the batch ``k`` times: row ``j * batch + r`` is row ``r`` of copy ``j``."""

        def tile(t: torch.Tensor) -> torch.Tensor:
            return t.repeat(k, *([1] * (t.dim() - 1)))

        return ModelInputs(
            kwargs={n: tile(v) if isinstance(v, torch.Tensor) else v for n, v in self.kwargs.items()},
            positions={s: {g: tile(p) for g, p in gs.items()} for s, gs in self.positions.items()},
            extra=dict(self.extra),
        )

    def rows(self, index: torch.Tensor | slice) -> ModelInputs:
        """The rows ``index`` of the batch (a slice or a ``LongTensor`` of row numbers)."""
        return ModelInputs(
            kwargs={n: v[index] if isinstance(v, torch.Tensor) else v for n, v in self.kwargs.items()},
            positions={s: {g: p[index] for g, p in gs.items()} for s, gs in self.positions.items()},
            extra=dict(self.extra),
        )

    def to(self, device: torch.device | str) -> ModelInputs:
        return ModelInputs(
            kwargs={n: v.to(device) if isinstance(v, torch.Tensor) else v for n, v in self.kwargs.items()},
            positions={s: {g: p.to(device) for g, p in gs.items()} for s, gs in self.positions.items()},
            extra=dict(self.extra),
        )

    @staticmethod
    def concat(parts: list[ModelInputs]) -> ModelInputs:
        """Concatenate along the batch; every part must have the same keys and group sizes."""
        if not parts:
            raise EmptyDataError("cannot concatenate zero ModelInputs")
        first = parts[0]
        kwargs: dict[str, torch.Tensor] = {}
        for n in first.kwargs:
            kwargs[n] = torch.cat([p.kwargs[n] for p in parts])
        positions: Mapping[str, Mapping[str, torch.Tensor]] = {
            s: {g: torch.cat([p.positions[s][g] for p in parts]) for g in gs}
            for s, gs in first.positions.items()
        }
        return ModelInputs(kwargs=kwargs, positions=dict(positions), extra=dict(first.extra))
