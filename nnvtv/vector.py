"""``TaskVector``: a site set, its values, and how it was found; saved as safetensors + JSON.

A directory holds ``task_vector.safetensors`` (one tensor per site, named like
``L1.H3@last``) and ``task_vector.json`` (model fingerprint, task, strategy, scores, the
searched site space, mode). Applying a vector to a model whose fingerprint differs raises
:class:`~nnvtv.errors.FingerprintMismatchError`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from nnvtv.errors import CheckpointError, FingerprintMismatchError, ShapeMismatchError
from nnvtv.patching import Patch
from nnvtv.sites import Site, SiteSpace

if TYPE_CHECKING:
    from nnvtv.model import Model

__all__ = ["TaskVector", "FORMAT"]

FORMAT = "nnvtv.task_vector/1"
TENSORS = "task_vector.safetensors"
META = "task_vector.json"


@dataclass
class TaskVector:
    """Sites + values (``[positions_in_group, width]`` each) + provenance.

    Attributes:
        values: ``{site: tensor}`` patched with ``mode``.
        mode: ``"replace"`` or ``"add"``.
        fingerprint: fingerprint of the model the vector belongs to.
        model: that model's display name.
        task: task name.
        strategy: how the sites were chosen.
        space: names of the searched site space (masks refer to it).
        scores: measured scores (zero-shot, ICL, task vector ...).
        probabilities: per-site selection probability over ``space`` (if the strategy has one).
        meta: everything else (shots, seed, budget, forward passes, means count ...).
    """

    values: dict[Site, torch.Tensor]
    mode: str
    fingerprint: str
    model: str
    task: str
    strategy: str
    space: list[str] = field(default_factory=list)
    scores: dict[str, Any] = field(default_factory=dict)
    probabilities: list[float] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def sites(self) -> list[Site]:
        return list(self.values)

    @property
    def site_space(self) -> SiteSpace:
        return SiteSpace.from_list(self.space) if self.space else SiteSpace(self.values)

    @property
    def mask(self) -> torch.Tensor:
        """``BoolTensor [len(space)]`` of the selected sites."""
        return self.site_space.mask(self.values)

    def __len__(self) -> int:
        return len(self.values)

    def patch(self) -> Patch:
        return Patch(dict(self.values), mode=self.mode)

    def check_model(self, model: Model, *, transfer: bool = False) -> None:
        """Raise unless this vector may be applied to ``model``.

        By default the model must be the one the vector was found on (same fingerprint).
        ``transfer=True`` is the explicit opt-in for cross-model transfer (e.g. between two
        independently trained models of one architecture): the fingerprint is not checked,
        but every site must exist in ``model`` with the same width
        (:class:`~nnvtv.errors.SiteError` / :class:`~nnvtv.errors.ShapeMismatchError`).
        """
        if transfer:
            for site, value in self.values.items():
                width = model.site_width(site)  # SiteError if the site does not exist there
                if value.dim() != 2 or value.shape[1] != width:
                    raise ShapeMismatchError(
                        f"cannot transfer this task vector from {self.model!r} to {model.name!r}: "
                        f"site {site} holds {tuple(value.shape)} values but is {width} wide there"
                    )
            return
        if model.fingerprint != self.fingerprint:
            raise FingerprintMismatchError(
                f"this task vector was made for model {self.model!r} (fingerprint {self.fingerprint}); "
                f"it cannot be applied to {model.name!r} (fingerprint {model.fingerprint}). "
                "Find a task vector on this model, or load the model it came from "
                "(or, to transfer it on purpose, apply(..., transfer=True))."
            )

    def apply(self, model: Model, data: Any, *, readout: bool = True, transfer: bool = False) -> Any:
        """Run ``data`` through ``model`` with this vector patched in.

        ``transfer=True`` applies it to a model other than the one it was found on (same
        site names and widths; see :meth:`check_model`); nnvtv then measures, not assumes,
        whether the sites mean the same thing there.
        """
        self.check_model(model, transfer=transfer)
        return model.run(data, self.patch(), readout=readout)

    # ------------------------------------------------------------------ disk
    def save(self, directory: str | Path) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        save_file({str(s): v.detach().to(torch.float32).contiguous() for s, v in self.values.items()}, str(d / TENSORS))
        info = {
            "format": FORMAT,
            "model": self.model,
            "fingerprint": self.fingerprint,
            "task": self.task,
            "strategy": self.strategy,
            "mode": self.mode,
            "sites": [str(s) for s in self.values],
            "n_sites": len(self.values),
            "space": self.space,
            "scores": self.scores,
            "probabilities": self.probabilities,
            "meta": self.meta,
        }
        (d / META).write_text(json.dumps(info, indent=1, default=_jsonable))
        return d

    @classmethod
    def load(cls, directory: str | Path) -> TaskVector:
        d = Path(directory)
        if d.is_file():
            d = d.parent
        meta_path, tensor_path = d / META, d / TENSORS
        if not meta_path.exists() or not tensor_path.exists():
            raise CheckpointError(f"{d} is not a task-vector directory: expected {META} and {TENSORS} in it")
        try:
            info = json.loads(meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{meta_path} is not valid JSON ({exc}); the file is corrupt") from exc
        if not isinstance(info, Mapping) or info.get("format") != FORMAT:
            raise CheckpointError(f"{meta_path} is not an nnvtv task vector (format={info.get('format') if isinstance(info, Mapping) else None!r}, expected {FORMAT!r})")
        try:
            tensors = load_file(str(tensor_path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{tensor_path} cannot be read as safetensors ({exc}); the file is corrupt") from exc
        missing = [n for n in info["sites"] if n not in tensors]
        if missing:
            raise CheckpointError(f"{tensor_path} lacks tensors for sites {missing[:3]} listed in {META}")
        return cls(
            values={Site.parse(n): tensors[n] for n in info["sites"]},
            mode=info["mode"],
            fingerprint=info["fingerprint"],
            model=info["model"],
            task=info["task"],
            strategy=info["strategy"],
            space=list(info.get("space") or []),
            scores=dict(info.get("scores") or {}),
            probabilities=info.get("probabilities"),
            meta=dict(info.get("meta") or {}),
        )

    def __repr__(self) -> str:
        return f"TaskVector({len(self)} sites, model={self.model!r}, task={self.task!r}, strategy={self.strategy!r}, mode={self.mode!r})"


def _jsonable(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    return str(x)
