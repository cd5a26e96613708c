"""``nnvtv.compare``: one task across several models or seeds, side by side.

>>> cmp = nnvtv.compare(["toy-text", "toy-text-natural"], "toy-perm_c", strategy="greedy", budget=256)
>>> cmp.table()          # rich table: scores, sites, depth, overlap, transfer
>>> cmp.save("runs/compare")   # compare.json (reload with Comparison.load), compare.png, vectors/

For every (model, seed) *run* it calls :func:`nnvtv.find` and reports:

* scores: zero-shot, ICL and task vector on held-out queries (the task's own metric);
* how many sites the vector uses, of how many searched;
* where they sit: the fraction of each layer's sites selected, placed at the layer's
  **relative depth** ``(index + 0.5) / n_layers`` so models of different depth line up.
  Streams (``enc``, ``dec`` ...) count as one stack in forward order;
* overlap: Jaccard ``|A & B| / |A | B|`` of the site sets of two runs whose site spaces are
  identical (same site names), else ``None``;
* transfer: the score of run *i*'s task vector applied to run *j*'s model on *j*'s held-out
  zero-shot queries (``TaskVector.apply(..., transfer=True)``), where every site exists
  with the same width; otherwise ``None`` with the reason in ``transfer_notes``. The
  diagonal is each run's own task-vector score.

Nothing here knows a modality: tasks score readouts, models describe their own streams.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nnvtv import catalog, store
from nnvtv.checks import int_at_least, positive_int
from nnvtv.errors import ConfigError, EmptyDataError, NnvtvError
from nnvtv.find import Progress, SearchResult, check_find, find, load_reporting, score_batch
from nnvtv.model import Model
from nnvtv.progress import ProgressArg, ProgressSink, with_progress
from nnvtv.sites import Site
from nnvtv.tasks import Task
from nnvtv.tasks import get as get_task
from nnvtv.vector import TaskVector
from nnvtv.views import ComparisonView

__all__ = ["Comparison", "RunSummary", "compare", "depth_profile", "jaccard"]

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


def _label(name: str, seed: int, several_seeds: bool, taken: set[str]) -> str:
    label = f"{name}#{seed}" if several_seeds else name
    base, k = label, 2
    while label in taken:
        label, k = f"{base}({k})", k + 1
    taken.add(label)
    return label


@with_progress(events=False)
def compare(
    models: Sequence[Model | str],
    task: Task | str | None = None,
    *,
    seeds: Sequence[int] = (0,),
    strategy: str = "reinforce",
    budget: int | None = None,
    transfer: bool = True,
    progress: ProgressArg | Callable[[str, Progress], None] = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    **find_options: Any,
) -> Comparison:
    """Run :func:`nnvtv.find` for ``task`` on every model x seed and compare the results.

    Args:
        models: wrapped models or catalogue names / local folders (at least one).
        task: task or task name; default: the first model's catalogue default task.
        seeds: seeds per model (each seeds the split, the prompts and the search).
        strategy, budget: passed to :func:`nnvtv.find` (same for every run: equal cost).
        transfer: also apply every run's task vector to every other run's model.
        progress: ``None`` (default: one progress display for every run, each stage labelled
            with its run, see :mod:`nnvtv.progress`), ``False`` (silent), ``True``, or a
            callback ``progress(label, event)`` for each :class:`~nnvtv.progress.Progress` event.
        device, dtype: where and in what dtype models given by name are loaded (:func:`nnvtv.load`).
        **find_options: further options of :func:`nnvtv.find` (``sites``, ``shots`` ...).

    Returns:
        A :class:`Comparison`.
    """
    if isinstance(models, (str, Model)):
        models = [models]
    models = list(models)
    if not models:
        raise ConfigError("compare needs at least one model, got none")
    bad = [m for m in models if not isinstance(m, (str, Model))]
    if bad:
        raise ConfigError(f"models must be catalogue names, local folders or nnvtv.Model objects; got {bad[0]!r} ({type(bad[0]).__name__})")
    if isinstance(seeds, (str, int)):
        raise ConfigError(f"seeds must be a list of ints >= 0 such as [0, 1], got {seeds!r}")
    seeds = [int_at_least("seeds[]", s, 0) for s in seeds]
    if not seeds:
        raise ConfigError("compare needs at least one seed, got none")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds must be distinct (a repeated seed repeats the same run), got {seeds}")
    positive_int("budget", budget, allow_none=True)
    if not isinstance(transfer, bool):
        raise ConfigError(f"transfer must be True or False, got {transfer!r}")
    if isinstance(strategy, str):
        from nnvtv.search import STRATEGIES

        STRATEGIES.get(strategy)  # UnknownStrategyError listing them
    if task is not None:
        task = get_task(task)  # a bad name or file fails before any model loads

    def events(label: str) -> Callable[[Progress], None] | None:
        """Where the events of run ``label`` go: the display, the caller's callback, or nowhere."""
        if isinstance(progress, ProgressSink):
            return lambda p: progress(dataclasses.replace(p, label=label))
        if progress is not None:
            return lambda p: progress(label, p)
        return None  # silent: find inherits the silence

    loaded = [load_reporting(m, events(m), device=device, dtype=dtype) if isinstance(m, str) else m for m in models]
    if task is None:
        e = catalog.entry(loaded[0].name)
        if e is None:
            raise ConfigError(f"no default task for model {loaded[0].name!r}; pass task=")
        task = e.default_task
    task = get_task(task)
    for model in loaded:  # every run's arguments and the task's fit, before the first search
        for seed in seeds:
            check_find(model, task, strategy=strategy, budget=budget, seed=seed, **find_options)

    runs: list[RunSummary] = []
    results: list[SearchResult] = []
    owners: list[Model] = []
    taken: set[str] = set()
    for model in loaded:
        for seed in seeds:
            label = _label(model.name, seed, len(seeds) > 1, taken)

            r = find(model, task, strategy=strategy, budget=budget, seed=seed, progress=events(label), **find_options)
            layers = {name: info.n_layers for name, info in model.streams.items()}
            runs.append(
                RunSummary(
                    label=label,
                    model=model.name,
                    fingerprint=model.fingerprint,
                    seed=seed,
                    layers=layers,
                    scores=r.scores.as_dict(),
                    sites=[str(s) for s in r.task_vector.sites],
                    space=r.space.to_list(),
                    forward_passes=r.forward_passes,
                    depth=depth_profile(r.space, r.task_vector.sites, layers),
                )
            )
            results.append(r)
            owners.append(model)

    n = len(runs)
    overlap: list[list[float | None]] = [
        [jaccard(runs[i].sites, runs[j].sites) if runs[i].space == runs[j].space else None for j in range(n)]
        for i in range(n)
    ]
    moved: list[list[float | None]] = [[None] * n for _ in range(n)]
    notes: dict[str, str] = {}
    for i in range(n):
        moved[i][i] = runs[i].scores.get("task_vector")
    if transfer and n > 1:
        report, done = events("all runs"), 0
        if report:
            report(Progress("transfer", 0, n * (n - 1)))
        for i in range(n):
            for j in range(n):
                if i == j:
                    continue
                try:
                    moved[i][j] = transfer_score(results[i].task_vector, owners[j], task, seed=runs[j].seed)
                except NnvtvError as exc:
                    notes[f"{runs[i].label}->{runs[j].label}"] = str(exc)
                done += 1
                if report:
                    report(Progress("transfer", done, n * (n - 1)))
    return Comparison(
        task=task.name,
        metric=task.metric,
        strategy=strategy,
        budget=budget,
        runs=runs,
        jaccard=overlap,
        transfer=moved,
        transfer_notes=notes,
        vectors=[r.task_vector for r in results],
    )


def transfer_score(vector: TaskVector, model: Model, task: Task | str, *, seed: int = 0) -> float:
    """Held-out zero-shot score of ``task`` on ``model`` with ``vector`` patched in.

    The vector may come from another model of the same shape (explicit transfer, see
    :meth:`TaskVector.check_model`); raises :class:`~nnvtv.errors.SiteError` /
    :class:`~nnvtv.errors.ShapeMismatchError` where it does not fit.
    """
    task = get_task(task)
    vector.check_model(model, transfer=True)
    zs = task.zero_shot(model, task.split(seed).test)
    return score_batch(model, task, zs, vector.patch())

