"""Streaming mean activations per site, kept per token position of each group.

:func:`mean_activations` walks an iterable of batches once (it never holds more than one
batch), accumulates sums in float64 on the CPU (each batch is summed on the model's device, then
moved), and returns :class:`Means`: for every site a
``[positions_in_group, width]`` float32 mean (``width`` = ``head_dim`` or ``d_model``).
Means save to ``<path>.safetensors`` + ``<path>.json`` (never pickles).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from nnvtv import store
from nnvtv.errors import (
    EmptyDataError,
    ShapeMismatchError,
    SiteError,
)
from nnvtv.fingerprint import check_fingerprint
from nnvtv.inputs import ModelInputs
from nnvtv.patching import Patch
from nnvtv.progress import Progress, ProgressArg, ProgressSink, with_progress
from nnvtv.sites import Site, SiteSpace
from nnvtv.tracing import Visit, group_sites, read_heads, where_of
from nnvtv.views import MeansView

if TYPE_CHECKING:
    from nnvtv.model import Model

__all__ = ["Means", "mean_activations"]

MEANS_SCHEMA = store.Schema(
    "nnvtv.means/1",
    what="set of means",
    writer="Means.save",
    fields={
        "count": store.Field(store.at_least(store.INT, 1)),
        "fingerprint": store.Field(store.STR),
        "sites": store.Field(store.list_of(store.SITE, unique=True)),
        "meta": store.Field(store.ANY_DICT, default={}),
    },
    tensors=store.Tensors(listed_in="sites", ndim=2),  # one [positions_in_group, width] per site
)


class Means(MeansView, Mapping[Site, torch.Tensor]):
    """Per-site mean activations ``{site: FloatTensor[positions_in_group, width]}``.

    Attributes:
        count: number of prompts averaged.
        fingerprint: :attr:`nnvtv.Model.fingerprint` of the model they came from.
        meta: free-form provenance (task, prompts, shots ...), JSON-serialisable.
    """

    def __init__(self, values: Mapping[Site, torch.Tensor], *, count: int, fingerprint: str, meta: Mapping[str, Any] | None = None):
        self._values = dict(values)
        self.count = int(count)
        self.fingerprint = fingerprint
        self.meta = dict(meta or {})

    def __getitem__(self, site: Site) -> torch.Tensor:
        try:
            return self._values[site]
        except KeyError:
            raise SiteError(f"no mean for site {site}; these means cover {len(self)} sites") from None

    def __iter__(self) -> Iterator[Site]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    @property
    def space(self) -> SiteSpace:
        return SiteSpace(self._values)

    def check_covers(self, model: Model, space: Iterable[Site]) -> None:
        """Raise unless these means were taken on ``model`` and cover every site of ``space``."""
        check_fingerprint(model, self.fingerprint, what="these means", made_for=self.meta.get("model", "?"),
                          fix="Collect means on this model.")
        missing = [s for s in space if s not in self._values]
        if missing:
            raise SiteError(f"means are missing {len(missing)} site(s) of the space, e.g. {[str(s) for s in missing[:3]]}")

    def patch(self, sites: Iterable[Site] | None = None, mode: str = "replace") -> Patch:
        """A :class:`Patch` with these means at ``sites`` (default: all)."""
        chosen = list(self._values) if sites is None else list(sites)
        return Patch({s: self[s] for s in chosen}, mode=mode)

    def subset(self, sites: Iterable[Site]) -> Means:
        return Means({s: self[s] for s in sites}, count=self.count, fingerprint=self.fingerprint, meta=self.meta)

    def save(self, path: str | Path) -> Path:
        """Write ``path.safetensors`` and ``path.json``; returns the safetensors path.

        Written through :func:`nnvtv.store.save` (temporary files renamed into place; a set of
        means that :meth:`load` would refuse, e.g. with NaN values, is never written).
        """
        base = Path(path).with_suffix("")
        info = {"count": self.count, "fingerprint": self.fingerprint, "sites": [str(s) for s in self._values], "meta": self.meta}
        store.save(base, MEANS_SCHEMA, info, {str(s): v for s, v in self._values.items()})
        return Path(str(base) + ".safetensors")

    @classmethod
    def load(cls, path: str | Path) -> Means:
        """Read what :meth:`save` wrote (``path`` with or without a suffix); strict, see :mod:`nnvtv.store`.

        Raises:
            CheckpointError: a file is missing, corrupt or foreign, a field is missing or of the
                wrong kind, a listed site has no tensor, or a value is not finite.
        """
        info, tensors = store.load(Path(path).with_suffix(""), MEANS_SCHEMA)
        values = {Site.parse(n): tensors[n] for n in info["sites"]}
        return cls(values, count=info["count"], fingerprint=info["fingerprint"], meta=info["meta"])


def _float64_sum(values: torch.Tensor) -> torch.Tensor:
    """``values [batch, ...]`` summed over the batch in float64, on the CPU (where Means keep their
    sums: float64 is exact enough for any number of prompts, and MPS has no float64)."""
    v = values.detach()
    if v.device.type == "mps":
        v = v.cpu()
    return v.to(torch.float64).sum(0).cpu()


@with_progress(events=False)
def mean_activations(
    model: Model,
    batches: Iterable[Any],
    space: Iterable[Site],
    *,
    meta: Mapping[str, Any] | None = None,
    progress: ProgressArg | Callable[[int], None] = None,
    total: int | None = None,
) -> Means:
    """Mean activation of every site of ``space`` over all rows of ``batches``.

    Args:
        model: the wrapped model.
        batches: iterable of batches (prompt lists or :class:`ModelInputs`); streamed once.
        space: sites to collect (a :class:`SiteSpace` or any iterable of sites).
        meta: provenance stored with the means.
        progress: ``None`` (default: report stage ``"means"`` on a progress display, or to the
            enclosing call's, see :mod:`nnvtv.progress`), ``False`` (silent), ``True``, or a
            callback called with the number of rows after each batch.
        total: rows ``batches`` will give, if known (the bar's length).

    Returns:
        :class:`Means` with ``[positions_in_group, width]`` float32 values.
    """
    sites = list(space)
    if not sites:
        raise EmptyDataError("the site space is empty; nothing to collect")
    for s in sites:
        model.check_site(s)
    needed: dict[tuple[str, int, str], set[str]] = {}
    for key, group in group_sites(sites):
        needed.setdefault(key, set()).add(group)
    sums: dict[tuple[tuple[str, int, str], str], torch.Tensor] = {}
    count = 0

    def job(inputs: ModelInputs) -> tuple[ModelInputs, list[Visit], list[tuple[str, int, str]]]:
        # readers RETURN per-group sums (so they also work inside a remote request)
        visits = model.visits(sites)
        for key, groups in needed.items():
            positions = {g: inputs.group_positions(key[0], g) for g in sorted(groups)}

            def reader(x: torch.Tensor, layout: Any, where: str = key[2], n_heads: int = model.streams[key[0]].n_heads, positions: dict[str, torch.Tensor] = positions) -> dict[str, torch.Tensor]:
                # {group: [P, heads, width] float64 sum over the batch}
                if layout is None:
                    raise ShapeMismatchError(f"the adapter cannot fold this model's value of shape {tuple(x.shape)} onto [batch, pos, width]")
                return {g: _float64_sum(read_heads(x, p, where, n_heads, layout)) for g, p in positions.items()}

            visits[key].reader = reader
        return inputs, list(visits.values()), list(visits)

    def accumulate(key: tuple[str, int, str], totals: dict[str, torch.Tensor]) -> None:
        for g, total in totals.items():
            prev = sums.get((key, g))
            if prev is not None and prev.shape != total.shape:
                raise ShapeMismatchError(
                    f"group {g!r} has {total.shape[0]} positions in this batch but "
                    f"{prev.shape[0]} before; every prompt must give the group the same size"
                )
            sums[(key, g)] = total if prev is None else prev + total

    def report(rows: int) -> None:
        if isinstance(progress, ProgressSink):
            progress(Progress("means", rows, total or 0))
        elif progress is not None:
            progress(rows)

    if isinstance(progress, ProgressSink):
        report(0)
    # locally one traced forward per batch; remotely `remote_batches` batches per request
    per_call = max(1, int(getattr(model, "remote_batches", 1))) if model.remote else 1
    pending: list[tuple[ModelInputs, list[Visit], list[tuple[str, int, str]]]] = []

    def flush() -> None:
        nonlocal count
        results = model.trace_jobs([(inputs, visits) for inputs, visits, _ in pending], output=False)
        for (inputs, _, keys), (_, reads) in zip(pending, results, strict=True):
            for i, key in enumerate(keys):
                accumulate(key, reads[i])
            count += inputs.batch_size
            report(count)
        pending.clear()

    for batch in batches:
        pending.append(job(model.inputs(batch)))
        if len(pending) >= per_call:
            flush()
    if pending:
        flush()
    if count == 0:
        raise EmptyDataError("mean_activations got no batches (the iterable was empty)")
    values = {}
    for s in sites:
        total = sums[((s.stream, s.layer, where_of(s)), s.group)]
        values[s] = (total[:, 0 if s.head is None else s.head] / count).to(torch.float32)
    return Means(values, count=count, fingerprint=model.fingerprint, meta={"model": model.name, **dict(meta or {})})
