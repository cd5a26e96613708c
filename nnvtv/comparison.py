"""The result of :func:`nnvtv.compare`: :class:`Comparison` (runs, overlap, transfer) and how it is saved.

Also the two measures it is built from: :func:`depth_profile` (where a run's sites sit, by
relative depth) and :func:`jaccard` (overlap of two site sets).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nnvtv import store
from nnvtv.errors import ConfigError, EmptyDataError
from nnvtv.sites import Site
from nnvtv.vector import TaskVector
from nnvtv.views import ComparisonView

__all__ = ["FORMAT", "SCHEMA", "Comparison", "RunSummary", "depth_profile", "jaccard"]


FORMAT = "nnvtv.compare/1"
STEM = "compare"  # compare.json; the task vectors go to vectors/<label>/

_DEPTH_ROW = store.Record(
    {
        "stream": store.Field(store.STR),
        "layer": store.Field(store.at_least(store.INT, 0)),
        "depth": store.Field(store.NUMBER),
        "selected": store.Field(store.at_least(store.INT, 0)),
        "total": store.Field(store.at_least(store.INT, 0)),
    },
    expected="a depth row {stream, layer, depth, selected, total}",
)
_RUN = store.Record(
    {
        "label": store.Field(store.STR),
        "model": store.Field(store.STR),
        "fingerprint": store.Field(store.STR),
        "seed": store.Field(store.INT),
        "layers": store.Field(store.dict_of(store.at_least(store.INT, 0))),
        "scores": store.Field(store.ANY_DICT),
        "sites": store.Field(store.list_of(store.SITE, unique=True)),
        "space": store.Field(store.list_of(store.SITE, unique=True)),
        "forward_passes": store.Field(store.at_least(store.INT, 0)),
        "depth": store.Field(store.list_of(_DEPTH_ROW)),
        "n_sites": store.Field(store.at_least(store.INT, 0), default=None),  # derived, written for readers
        "mean_depth": store.Field(store.nullable(store.NUMBER), default=None),  # derived
    },
    expected="a run {label, model, fingerprint, seed, layers, scores, sites, space, forward_passes, depth}",
)
_MATRIX = store.list_of(store.list_of(store.nullable(store.NUMBER)))


def _consistent(info: Mapping[str, Any], tensors: Mapping[str, Any]) -> tuple[str, Any, str] | None:
    n = len(info["runs"])
    labels = [r["label"] for r in info["runs"]]
    if len(set(labels)) != n:
        return ("runs", labels, "runs with distinct labels")
    for name in ("jaccard", "transfer"):
        rows = info[name]
        if len(rows) != n or any(len(r) != n for r in rows):
            return (name, rows, f"a {n} x {n} matrix (one row and one column per run)")
    return None


SCHEMA = store.Schema(
    FORMAT,
    what="comparison",
    writer="Comparison.save",
    fields={
        "task": store.Field(store.STR),
        "metric": store.Field(store.STR),
        "strategy": store.Field(store.STR),
        "budget": store.Field(store.nullable(store.INT)),
        "runs": store.Field(store.list_of(_RUN)),
        "jaccard": store.Field(_MATRIX),
        "transfer": store.Field(_MATRIX),
        "transfer_notes": store.Field(store.dict_of(store.STR), default={}),
    },
    check=_consistent,
)


@dataclass
class RunSummary:
    """One (model, seed) run of a comparison.

    Attributes:
        label: unique display label (``"toy-text"``, or ``"toy-text#1"`` with several seeds).
        model: model display name; fingerprint: its fingerprint.
        seed: the seed of :func:`nnvtv.find`.
        layers: ``{stream: n_layers}`` in forward order.
        scores: :meth:`nnvtv.Scores.as_dict` (zero-shot, ICL, task vector ...).
        sites: names of the selected sites; space: names of the searched sites.
        forward_passes: budget spent by the search.
        depth: :func:`depth_profile` rows.
    """

    label: str
    model: str
    fingerprint: str
    seed: int
    layers: dict[str, int]
    scores: dict[str, Any]
    sites: list[str]
    space: list[str]
    forward_passes: int
    depth: list[dict[str, Any]]

    @property
    def n_sites(self) -> int:
        return len(self.sites)

    @property
    def mean_depth(self) -> float | None:
        """Mean relative depth of the selected sites (``None`` if none are selected)."""
        picked = [(r["depth"], r["selected"]) for r in self.depth if r["selected"]]
        n = sum(k for _, k in picked)
        return sum(d * k for d, k in picked) / n if n else None


@dataclass(repr=False)
class Comparison(ComparisonView):
    """What :func:`compare` returns (and :meth:`load` reads back).

    Attributes:
        task: task name; metric: its metric; strategy, budget: search settings.
        runs: one :class:`RunSummary` per (model, seed).
        jaccard: ``[i][j]`` overlap of the site sets of runs i and j (``None``: different spaces).
        transfer: ``[i][j]`` score of run i's vector on run j's model (``None``: shapes differ).
        transfer_notes: ``{"i->j": reason}`` where transfer was not possible.
        vectors: the task vectors, in run order (not stored in the JSON; :meth:`save`
            writes them under ``vectors/``).
    """

    task: str
    metric: str
    strategy: str
    budget: int | None
    runs: list[RunSummary]
    jaccard: list[list[float | None]]
    transfer: list[list[float | None]]
    transfer_notes: dict[str, str] = field(default_factory=dict)
    vectors: list[TaskVector] = field(default_factory=list, repr=False)

    @property
    def labels(self) -> list[str]:
        return [r.label for r in self.runs]

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "task": self.task,
            "metric": self.metric,
            "strategy": self.strategy,
            "budget": self.budget,
            "runs": [
                {**r.__dict__, "n_sites": r.n_sites, "mean_depth": r.mean_depth} for r in self.runs
            ],
            "jaccard": self.jaccard,
            "transfer": self.transfer,
            "transfer_notes": self.transfer_notes,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Comparison:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            got = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ConfigError(f"not an nnvtv comparison (format={got!r}, expected {FORMAT!r})")
        fields = RunSummary.__dataclass_fields__
        runs = [RunSummary(**{k: v for k, v in r.items() if k in fields}) for r in data["runs"]]
        return cls(
            task=data["task"],
            metric=data["metric"],
            strategy=data["strategy"],
            budget=data["budget"],
            runs=runs,
            jaccard=data["jaccard"],
            transfer=data["transfer"],
            transfer_notes=dict(data.get("transfer_notes") or {}),
        )

    def save(self, directory: str | Path, *, figure: bool = True) -> Path:
        """Write ``compare.json``, ``compare.png`` and ``vectors/<label>/`` into ``directory``."""
        d = Path(directory)
        info = {k: v for k, v in self.as_dict().items() if k != "format"}
        path = store.save(d / STEM, SCHEMA, info)
        for run, vector in zip(self.runs, self.vectors, strict=False):
            vector.save(d / "vectors" / _safe(run.label))
        if figure:
            from nnvtv.report import plot_comparison

            plot_comparison(self, d / "compare.png")
        return path

    @classmethod
    def load(cls, path: str | Path) -> Comparison:
        """Read ``compare.json`` (or the directory holding it); vectors load from ``vectors/``.

        Strict (:class:`~nnvtv.errors.CheckpointError`, see :mod:`nnvtv.store`): a missing,
        corrupt or foreign file, or a missing or mistyped field, is refused with the field named.
        """
        p = Path(path)
        if p.is_dir():
            p = p / "compare.json"
        info, _ = store.load(p.with_suffix("") if p.suffix == ".json" else p, SCHEMA)
        cmp = cls.from_dict({"format": FORMAT, **info})
        vec_dir = p.parent / "vectors"
        if vec_dir.is_dir():
            cmp.vectors = [TaskVector.load(vec_dir / _safe(r.label)) for r in cmp.runs if (vec_dir / _safe(r.label)).is_dir()]
        return cmp

    def table(self) -> Any:
        """The comparison as rich tables (a ``rich.console.Group``)."""
        from nnvtv.report import comparison_table

        return comparison_table(self)


def _safe(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label)


def depth_profile(space: Sequence[Site], selected: Sequence[Site], layers: dict[str, int]) -> list[dict[str, Any]]:
    """Per layer: ``{"stream", "layer", "depth", "selected", "total"}`` in forward order.

    ``depth = (offset + layer + 0.5) / total_layers`` where streams are stacked in the order
    of ``layers`` (``{stream: n_layers}``); ``total`` counts the layer's sites in ``space``.
    """
    offsets, total_layers = {}, 0
    for stream, n in layers.items():
        offsets[stream] = total_layers
        total_layers += n
    if total_layers == 0:
        raise EmptyDataError("the model has no layers")
    chosen = set(selected)
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for s in space:
        key = (s.stream, s.layer)
        if key not in rows:
            depth = (offsets[s.stream] + s.layer + 0.5) / total_layers
            rows[key] = {"stream": s.stream, "layer": s.layer, "depth": depth, "selected": 0, "total": 0}
        rows[key]["total"] += 1
        rows[key]["selected"] += int(s in chosen)
    return sorted(rows.values(), key=lambda r: r["depth"])


def jaccard(a: Sequence[Any], b: Sequence[Any]) -> float:
    """``|A & B| / |A | B|`` (1.0 when both are empty)."""
    sa, sb = set(a), set(b)
    union = sa | sb
    return len(sa & sb) / len(union) if union else 1.0
