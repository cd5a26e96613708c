"""``TaskVector``: a site set, its values, and how it was found; saved as safetensors + JSON.

A directory holds ``task_vector.safetensors`` (one tensor per site, named like
``L1.H3@last``) and ``task_vector.json`` (model fingerprint, task, strategy, scores, the
searched site space, mode, and, for a task that can write itself down such as a word-pair
file, the task itself in ``task_data``: its pairs, options and content hash, so that
``nnvtv evaluate --vector DIR`` re-evaluates it with no file and no registry entry; files
written before that field existed still load, their task found by name). Applying a vector to a model whose fingerprint differs raises
:class:`~nnvtv.errors.FingerprintMismatchError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from nnvtv import store
from nnvtv.errors import ShapeMismatchError, UnknownTaskError
from nnvtv.fingerprint import check_fingerprint
from nnvtv.patching import MODES, Patch
from nnvtv.sites import Site, SiteSpace
from nnvtv.views import TaskVectorView

if TYPE_CHECKING:
    from nnvtv.model import Model
    from nnvtv.tasks import Task

__all__ = ["TaskVector", "FORMAT", "check_applicable"]

FORMAT = "nnvtv.task_vector/1"
STEM = "task_vector"  # the directory holds task_vector.json + task_vector.safetensors
TENSORS = f"{STEM}.safetensors"
META = f"{STEM}.json"


def _consistent(info: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> tuple[str, Any, str] | None:
    """The rules across fields of a saved task vector (``None``: consistent)."""
    sites, space, probs = info["sites"], info["space"], info["probabilities"]
    if info["n_sites"] is not None and info["n_sites"] != len(sites):
        return ("n_sites", info["n_sites"], f"{len(sites)}, the number of names in 'sites'")
    if probs is not None and len(probs) != len(space):
        return ("probabilities", probs, f"one probability per site of 'space' ({len(space)})")
    return None


SCHEMA = store.Schema(
    FORMAT,
    what="task vector",
    writer="TaskVector.save",
    fields={
        "model": store.Field(store.STR),
        "fingerprint": store.Field(store.STR),
        "task": store.Field(store.STR),
        "strategy": store.Field(store.STR),
        "mode": store.Field(store.one_of(*MODES)),
        "sites": store.Field(store.list_of(store.SITE, unique=True)),
        "n_sites": store.Field(store.INT, default=None),
        "space": store.Field(store.list_of(store.SITE, unique=True), default=[]),
        "scores": store.Field(store.ANY_DICT, default={}),
        "probabilities": store.Field(store.nullable(store.list_of(store.NUMBER)), default=None),
        "meta": store.Field(store.ANY_DICT, default={}),
        "task_data": store.Field(store.nullable(store.ANY_DICT), default=None),
        "learned": store.Field(store.nullable(store.ANY_DICT), default=None),  # written only for learned vectors
    },
    tensors=store.Tensors(listed_in="sites", ndim=2),  # one [positions_in_group, width] per site
    check=_consistent,
)


@dataclass(repr=False)
class TaskVector(TaskVectorView):
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
        task_data: the task written down (:meth:`nnvtv.tasks.Task.to_dict`: a word-pair task's
            pairs, options, source file and hash), or ``None`` when it is found by name.
        learned: for a learned task vector (:func:`nnvtv.learn`, ``strategy="learned"``) its
            training record (steps, lr, init, losses, forward passes, seconds, the extracted
            means' held-out score); ``None`` for values that are extracted means.
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
    task_data: dict[str, Any] | None = None
    learned: dict[str, Any] | None = None

    @property
    def is_learned(self) -> bool:
        """Whether the values were trained (:func:`nnvtv.learn`) rather than averaged."""
        return self.learned is not None

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

    def task_object(self) -> Task:
        """The task this vector was found on: rebuilt from :attr:`task_data` when it was saved
        with it, else the registered task of that name.

        Raises:
            UnknownTaskError: no task data and no registered task of that name (the message
                says to give the task explicitly).
            ConfigError: the saved task data is damaged.
        """
        from nnvtv import tasks

        if self.task_data is not None:
            return tasks.from_dict(self.task_data, where=f"the task saved with task vector ({self.task!r})")
        if self.task in tasks.TASKS:
            return tasks.get(self.task)
        raise UnknownTaskError(
            f"this task vector was found on task {self.task!r}, which is not registered here, and it was saved "
            "without the task's data (older nnvtv, or a task that cannot be written down); give the task: "
            "`nnvtv evaluate --vector DIR --task NAME_OR_FILE` or nnvtv.evaluate(model, task, vector)"
        )

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
        check_applicable(model, self.values, self.fingerprint, what="this task vector", made_for=self.model, transfer=transfer)

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
        """Write ``task_vector.json`` + ``task_vector.safetensors`` (float32) into ``directory``."""
        d = Path(directory)
        info = {
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
            "task_data": self.task_data,
        }
        if self.learned is not None:  # absent otherwise, so older nnvtv reads every other vector
            info["learned"] = self.learned
        tensors = {str(s): v.detach().to(torch.float32) for s, v in self.values.items()}
        store.save(d / STEM, SCHEMA, info, tensors)
        return d

    @classmethod
    def load(cls, directory: str | Path) -> TaskVector:
        """Read a directory :meth:`save` wrote (or either file in it); strict, see :mod:`nnvtv.store`.

        Raises:
            CheckpointError: a file is missing, corrupt or foreign, a field is missing or of the
                wrong kind, a listed site has no tensor, or a value is not finite.
        """
        d = Path(directory)
        if d.is_file():
            d = d.parent
        info, tensors = store.load(d / STEM, SCHEMA)
        return cls(
            values={Site.parse(n): tensors[n] for n in info["sites"]},
            mode=info["mode"],
            fingerprint=info["fingerprint"],
            model=info["model"],
            task=info["task"],
            strategy=info["strategy"],
            space=info["space"],
            scores=info["scores"],
            probabilities=info["probabilities"],
            meta=info["meta"],
            task_data=info["task_data"],
            learned=info["learned"],
        )


def check_applicable(
    model: Model, values: Mapping[Site, torch.Tensor], fingerprint: str, *, what: str, made_for: str, transfer: bool = False
) -> None:
    """Raise unless ``values`` (``{site: [positions, width]}``) recorded on the checkpoint
    ``fingerprint`` may be patched into ``model``: the same checkpoint, or with ``transfer=True``
    any model where every site exists with the same width."""
    if not transfer:
        check_fingerprint(
            model, fingerprint, what=what, made_for=made_for,
            fix="Use it on the model it came from, or pass transfer=True to apply it to another model on purpose.",
        )
        return
    for site, value in values.items():
        width = model.site_width(site)  # SiteError if the site does not exist there
        if value.dim() != 2 or value.shape[1] != width:
            raise ShapeMismatchError(
                f"cannot transfer {what} from {made_for!r} to {model.name!r}: site {site} holds "
                f"{tuple(value.shape)} values but is {width} wide there"
            )
