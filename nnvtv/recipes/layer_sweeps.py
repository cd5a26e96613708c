"""Task vector by residual replacement (Hendel et al., EMNLP 2023), swept over layers.

:func:`layer_sweep` replaces the zero-shot query's last-token residual at block ``L`` by its
mean over ICL prompts, for every ``L``, and scores held-out accuracy; :class:`LayerSweep`
holds the result and saves to ``<dir>/layer_sweep.json`` + ``<dir>/layer_sweep.safetensors``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from nnvtv import store
from nnvtv.activations import Means
from nnvtv.checks import positive_int
from nnvtv.errors import ConfigError
from nnvtv.model import Model
from nnvtv.patching import Patch
from nnvtv.progress import Progress, ProgressArg, with_progress
from nnvtv.recipes.common import (
    GROUP,
    RESULT_FIELDS,
    accuracy,
    check_text_model,
    default_shots,
    icl_means,
    masked_accuracy,
)
from nnvtv.sites import Site
from nnvtv.tasks import Task
from nnvtv.tasks import get as get_task
from nnvtv.vector import check_applicable
from nnvtv.views import LayerSweepView

__all__ = ["LayerSweep", "layer_sweep"]

STEM = "layer_sweep"


def _consistent(info: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> tuple[str, Any, str] | None:
    n = len(info["layers"])
    if n == 0:
        return ("layers", info["layers"], "at least one swept layer")
    if len(info["accuracy"]) != n:
        return ("accuracy", info["accuracy"], f"one accuracy per swept layer ({n})")
    rows = tensors["means"].shape[0]
    if rows != n:
        return ("layers", info["layers"], f"one layer per row of the 'means' tensor ({rows} rows)")
    return None


SCHEMA = store.Schema(
    "nnvtv.layer_sweep/1",
    what="layer sweep",
    writer="LayerSweep.save",
    fields={
        **RESULT_FIELDS,
        "layers": store.Field(store.list_of(store.at_least(store.INT, 0), unique=True)),
        "accuracy": store.Field(store.list_of(store.NUMBER)),
        "example_forwards": store.Field(store.at_least(store.INT, 0)),
    },
    tensors=store.Tensors(names=("means",), ndim=2),  # [n_layers_swept, d_model]
    check=_consistent,
)


@dataclass(repr=False)
class LayerSweep(LayerSweepView):
    """Residual-replacement task vector (Hendel et al.) at every layer.

    Attributes:
        accuracy: held-out zero-shot accuracy with layer ``layers[i]`` replaced, per layer.
        means: ``FloatTensor [n_layers_swept, d_model]``: the ICL mean residual at the last token.
        zero_shot, icl: held-out baselines on the same queries (``shots``-shot ICL).
        forward_passes: patched candidate site sets evaluated (one per layer).
        example_forwards: prompt rows run for them.
    """

    model: str
    fingerprint: str
    task: str
    layers: list[int]
    accuracy: list[float]
    means: torch.Tensor
    zero_shot: float
    icl: float
    shots: int
    n_queries: int
    n_mean_prompts: int
    forward_passes: int
    example_forwards: int
    seconds: float
    seed: int = 0

    @property
    def best_layer(self) -> int:
        """Layer with the highest accuracy (the earliest among ties)."""
        return self.layers[max(range(len(self.layers)), key=lambda i: (self.accuracy[i], -i))]

    @property
    def best_accuracy(self) -> float:
        return max(self.accuracy)

    def patch(self, layer: int | None = None, *, model: Model | None = None, transfer: bool = False) -> Patch:
        """The task vector at ``layer`` (default: the best) as a replace :class:`Patch`; with
        ``model``, first checked to belong to it (see :meth:`check_model`)."""
        layer = self.best_layer if layer is None else layer
        if layer not in self.layers:
            raise ConfigError(f"layer {layer} was not swept; swept layers: {self.layers}")
        patch = Patch({Site(layer, None, GROUP): self.means[self.layers.index(layer)][None]}, mode="replace")
        if model is not None:
            self.check_model(model, patch, transfer=transfer)
        return patch

    def check_model(self, model: Model, patch: Patch | None = None, *, transfer: bool = False) -> None:
        """Raise unless the sweep's vectors may be patched into ``model``: the checkpoint they were
        measured on (fingerprint), or with ``transfer=True`` any model with the same residual width."""
        values = (patch or self.patch()).values
        check_applicable(model, values, self.fingerprint, what="this layer sweep's task vector", made_for=self.model, transfer=transfer)

    def apply(self, model: Model, data: Any, layer: int | None = None, *, readout: bool = True, transfer: bool = False) -> Any:
        """Run ``data`` through ``model`` with the task vector of ``layer`` (default: the best) patched in."""
        return model.run(data, self.patch(layer, model=model, transfer=transfer), readout=readout)

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "means"}
        d.update(best_layer=self.best_layer, best_accuracy=self.best_accuracy)
        return d

    def save(self, directory: str | Path) -> Path:
        """Write ``layer_sweep.json`` + ``layer_sweep.safetensors`` (float32) into ``directory``."""
        info = {k: v for k, v in asdict(self).items() if k != "means"}
        store.save(Path(directory) / STEM, SCHEMA, info, {"means": self.means.detach().to(torch.float32)})
        return Path(directory)

    @classmethod
    def load(cls, directory: str | Path) -> LayerSweep:
        """Read what :meth:`save` wrote; strict (:class:`~nnvtv.errors.CheckpointError`, see :mod:`nnvtv.store`)."""
        info, tensors = store.load(Path(directory) / STEM, SCHEMA)
        return cls(means=tensors["means"], **info)


@with_progress
def layer_sweep(
    model: Model,
    task: Task | str,
    *,
    layers: Sequence[int] | None = None,
    shots: int | None = None,
    n_mean_prompts: int = 32,
    n_queries: int | None = None,
    seed: int = 0,
    max_rows: int = 256,
    means: Means | None = None,
    progress: ProgressArg = None,
) -> LayerSweep:
    """Replace the last-token residual of held-out zero-shot queries by its ICL mean, per layer.

    Args:
        model: a wrapped text model.
        task: task or name.
        layers: layers to sweep (default: all).
        shots: demonstrations per ICL prompt (default: the task's).
        n_mean_prompts: ICL prompts (train split) averaged into the means.
        n_queries: held-out queries scored (default: the whole test split).
        seed: seeds the split and the prompts.
        max_rows: rows per batched forward (memory bound).
        means: precomputed :class:`Means` covering the layer sites (skips collection).
        progress: ``None`` (default: a progress display), ``False`` (silent), ``True`` or a
            callback of :class:`~nnvtv.progress.Progress` events: ``means``, ``layers`` (one
            batched run: 0, then all), ``evaluate`` (the two baselines); see :mod:`nnvtv.progress`.
    """
    t0 = time.perf_counter()
    check_text_model(model)
    task = get_task(task)
    shots = default_shots(task, shots)
    space = model.sites("layer", layers=layers, groups=[GROUP])
    if means is None:
        positive_int("n_mean_prompts", n_mean_prompts)
        means = icl_means(model, task, space, shots=shots, n_prompts=n_mean_prompts, seed=seed, progress=progress or False)
    split = task.split(seed)
    queries = split.test if n_queries is None else split.test[: positive_int("n_queries", n_queries)]
    zs = task.zero_shot(model, queries)
    icl = task.icl(model, queries, split.train, shots=shots, seed=seed + 1)
    if progress:
        progress(Progress("layers", 0, len(space)))
    acc = masked_accuracy(model, task, zs, means, space, "replace", max_rows)
    if progress:
        progress(Progress("layers", len(space), len(space)))
        progress(Progress("evaluate", 0, 2))
    zero_shot = accuracy(model, task, zs)
    if progress:
        progress(Progress("evaluate", 1, 2))
    icl_accuracy = accuracy(model, task, icl)
    if progress:
        progress(Progress("evaluate", 2, 2))
    return LayerSweep(
        model=model.name, fingerprint=model.fingerprint, task=task.name,
        layers=[s.layer for s in space], accuracy=acc,
        means=torch.stack([means[s][0] for s in space]),
        zero_shot=zero_shot, icl=icl_accuracy,
        shots=shots, n_queries=len(zs), n_mean_prompts=means.count,
        forward_passes=len(space), example_forwards=len(space) * len(zs),
        seconds=time.perf_counter() - t0, seed=seed,
    )
