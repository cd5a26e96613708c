"""Head-level search with each strategy through :func:`nnvtv.find`, reduced to table rows."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from nnvtv.errors import ConfigError
from nnvtv.find import SearchResult, find
from nnvtv.model import Model
from nnvtv.progress import ProgressArg, with_progress
from nnvtv.recipes.common import GROUP, check_text_model
from nnvtv.tasks import Task

__all__ = ["SearchSummary", "head_search"]


@dataclass
class SearchSummary:
    """One :func:`nnvtv.find` run, reduced to what a benchmark table needs."""

    model: str
    task: str
    strategy: str
    budget: int
    accuracy: float
    zero_shot: float
    icl: float
    n_sites: int
    total_sites: int
    sites: list[str]
    forward_passes: int
    example_forwards: int
    seconds: float

    @classmethod
    def from_result(cls, result: SearchResult) -> SearchSummary:
        s = result.scores
        return cls(
            model=result.task_vector.model, task=result.task_vector.task, strategy=result.task_vector.strategy,
            budget=result.run.budget, accuracy=float(s.task_vector if s.task_vector is not None else math.nan),
            zero_shot=s.zero_shot, icl=s.icl, n_sites=result.n_sites, total_sites=len(result.space),
            sites=[str(x) for x in result.task_vector.sites], forward_passes=result.forward_passes,
            example_forwards=result.example_forwards, seconds=result.timings["total"],
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@with_progress
def head_search(
    model: Model,
    task: Task | str,
    strategies: Sequence[str] = ("reinforce", "greedy", "cmaes", "ranking"),
    *,
    budget: int = 256,
    seed: int = 0,
    options: dict[str, dict[str, Any]] | None = None,
    progress: ProgressArg = None,
    **find_options: Any,
) -> list[SearchSummary]:
    """Head-level search (group ``last``, mean replacement) with each strategy at ``budget``.

    Args:
        strategies: strategy names, each run once through :func:`nnvtv.find`.
        budget: forward passes (candidate site sets) per strategy.
        options: per-strategy options, ``{"greedy": {"candidates": 32}}``.
        progress: ``None`` (default: one progress display), ``False``, ``True`` or a callback
            of :class:`~nnvtv.progress.Progress` events, each labelled with its strategy.
        **find_options: passed to :func:`nnvtv.find` (``shots``, ``n_mean_prompts``, ``sites`` as
            an explicit :class:`SiteSpace` ...).
    """
    check_text_model(model)
    if not strategies:
        raise ConfigError("head_search needs at least one strategy")
    out = []
    for name in strategies:
        opts = dict((options or {}).get(name, {}))
        kw = {"sites": "head", "groups": [GROUP], **find_options, **opts}
        if not isinstance(kw["sites"], str):
            kw.pop("groups", None)  # an explicit SiteSpace already names its groups
        labelled = (lambda p, name=name: progress(dataclasses.replace(p, label=name))) if progress else False
        res = find(model, task, strategy=name, budget=budget, seed=seed, progress=labelled, **kw)
        out.append(SearchSummary.from_result(res))
    return out
