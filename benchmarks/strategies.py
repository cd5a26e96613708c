"""Every search strategy at equal forward-pass equivalents, on the shipped models, several seeds.

    python benchmarks/strategies.py [--models toy-text,toy-visual,toy-seggpt,smollm2-135m]
        [--tasks T1,T2] [--strategies reinforce,greedy,cmaes,ranking,attribution,gradient]
        [--budgets 32,128,512] [--seeds 0,1,2] [--learn] [--resume] [--out benchmarks/results]
    python benchmarks/strategies.py --replot          # tables and figure from OUT/strategies.json
    python benchmarks/strategies.py --model toy-text --task toy-perm_c   # one model (the old CLI)

Per model a preset (:data:`PRESETS`) gives the tasks, the budget grid and the seeds;
``--tasks``, ``--budgets`` and ``--seeds`` override it for every model selected. Every run is
``nnvtv.find(model, task, strategy=, budget=, seed=)`` with the strategy's defaults, except
where one step of a strategy would not fit the budget:

* ``greedy`` proposes ``candidates = max(4, (budget - 1) // 4)`` random sites per round when a
  full round over every site would not fit twice in the budget (the greedy random-search
  baseline for large spaces), so it gets at least four rounds;
* ``ranking`` costs exactly one pass per site; below that it is not run, and where no budget of
  the grid reaches it, it runs once at ``budget = n_sites``;
* a run of ``greedy``, ``ranking`` or ``attribution`` (strategies that never plan by the
  budget) that stopped on its own (``stop_reason == "strategy"``) below a smaller budget with the
  same options is the run at the larger budgets of the same seed too (recorded with
  ``reused_from``; ``--no-reuse`` reruns them).

The budget counts forward-pass equivalents of the training queries: an exact patched forward 1,
a gradient row (relaxed forward + backward) 3. For every run the JSON keeps: held-out task-vector
score, ICL and zero-shot scores, the score as a fraction of ICL (accuracy) or the share of the
zero-shot -> ICL gap closed (IoU, MSE: a ratio to ICL means little there), the sites selected,
forward-pass equivalents spent (exact and gradient rows), wall time per stage and the held-out
curve of the search (forward passes, score, wall time). ``--learn`` adds learned task vectors
(:func:`nnvtv.learn`, seed 0) for the models whose preset names them: at the sites
``attribution`` found (seed 0, its smallest budget) and at one residual layer, beside the
extracted means at the same sites.

Writes, under ``--out``: ``strategies.json`` (every run, rewritten after each one, so a partial
run leaves results and ``--resume`` continues it), ``strategies.md`` (tables and the issue-19
targets met or missed) and ``strategies.png`` (score vs forward-pass equivalents per strategy, one
panel per model and task; learned vectors as stars). Run long suites in the background, e.g.
``nice -n 10 python benchmarks/strategies.py --learn > strategies.log 2>&1 &``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import torch  # noqa: E402

import nnvtv  # noqa: E402
from nnvtv.compare import jaccard  # noqa: E402

STRATEGIES = ("reinforce", "greedy", "cmaes", "ranking", "attribution", "gradient")
DEFAULT_OUT = Path(__file__).parent / "results"
#: strategies that never plan by the budget: once one stops on its own (stop_reason "strategy")
#: below a budget, a larger budget gives the same run (reinforce, cmaes and gradient size their
#: steps or final phase by the budget)
REUSABLE = ("greedy", "ranking", "attribution")

#: per model: tasks, budget grid, seeds; ``learn``: learned vectors (steps, lr, residual layer per task)
PRESETS: dict[str, dict[str, Any]] = {
    "toy-text": {"tasks": ["toy-perm_c"], "budgets": [32, 128, 512], "seeds": [0, 1, 2],
                 "learn": {"steps": 100, "lr": 0.05, "layers": {"*": 0}}},
    "toy-visual": {"tasks": ["segmentation"], "budgets": [64, 256, 1024], "seeds": [0, 1]},
    "toy-seggpt": {"tasks": ["segmentation"], "budgets": [64, 256, 1024], "seeds": [0, 1]},
    # layers: the best layer of the SmolLM2 layer sweep (benchmarks/results/smollm2.md), chosen on
    # that sweep's test queries, as in the papers' layer plots
    "smollm2-135m": {"tasks": ["antonyms", "country_capital", "present_past"], "budgets": [256], "seeds": [0],
                     "learn": {"steps": 20, "lr": 0.05,
                               "layers": {"antonyms": 17, "country_capital": 21, "present_past": 20, "singular_plural": 20}}},
}  # fmt: skip
DEFAULT_MODELS = ("toy-text", "toy-visual", "toy-seggpt", "smollm2-135m")

#: issue 19's targets: (model, score needed, most forward-pass equivalents, tasks needed)
TARGETS = {"smollm2-135m": (0.90, 256, 3), "toy-text": (0.85, 128, 1), "toy-seggpt": (0.50, None, 1)}


def _score(run: dict) -> float:
    """Task vector as a fraction of ICL (accuracy), or the share of the zero-shot -> ICL gap it
    closes (IoU, MSE: error metrics and overlap scores, where a ratio to ICL means little)."""
    key = "fraction_of_icl" if run.get("metric", "accuracy") == "accuracy" else "gap_closed"
    v = run.get(key)
    return 0.0 if v is None else float(v)


def _ratio(run: dict, value: float) -> float | None:
    """A raw held-out value of ``run``'s metric as a fraction of ICL (accuracy) or of the gap
    closed (IoU, MSE); ``None`` where that is undefined (ICL 0, or no gap)."""
    if run.get("metric", "accuracy") == "accuracy":
        return value / run["icl"] if run["icl"] else None
    gain = run["icl"] - run["zero_shot"]
    return (value - run["zero_shot"]) / gain if gain else None


def _as_score(run: dict, value: float) -> float:
    """:func:`_ratio` on the scale of :func:`_score` (0 where undefined)."""
    r = _ratio(run, value)
    return 0.0 if r is None else r


def _score_name(metric: str) -> str:
    return "TV / ICL" if metric == "accuracy" else "gap closed"


def _options(strategy: str, budget: int, n_sites: int) -> dict[str, Any] | None:
    """Strategy options at this budget; ``None``: the strategy cannot run at this budget."""
    if strategy == "greedy" and 2 * (1 + n_sites) > budget:
        return {"candidates": max(4, (budget - 1) // 4)}
    if strategy == "ranking" and budget < n_sites:
        return None
    return {}


def _run_row(model_name: str, r: Any, strategy: str, budget: int, seed: int, options: dict, wall: float) -> dict:
    s = r.scores
    return {
        "model": model_name, "task": r.task_vector.task, "strategy": strategy, "budget": budget, "seed": seed,
        "options": options, "metric": s.metric, "icl": s.icl, "zero_shot": s.zero_shot, "task_vector": s.task_vector,
        "fraction_of_icl": s.fraction_of_icl, "gap_closed": s.gap_closed, "n_queries": s.n_queries, "shots": s.shots,
        "n_sites": r.n_sites, "total_sites": len(r.space), "sites": [str(x) for x in r.task_vector.sites],
        "forward_passes": r.forward_passes, "exact_rows": r.run.exact_rows, "gradient_rows": r.run.gradient_rows,
        "stop_reason": r.run.stop_reason, "timings": {k: round(v, 2) for k, v in r.timings.items()},
        "search_s": round(r.timings["search"], 2), "wall_s": round(wall, 2),
        "curve": [(h.forward_passes, h.heldout, round(h.wall_time, 2)) for h in r.history if h.heldout is not None],
        "warnings": list(r.warnings),
    }  # fmt: skip


def _key(d: dict) -> tuple:
    return (d["model"], d["task"], d["strategy"], d["budget"], d["seed"])


def _save(out: Path, data: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "strategies.json.tmp"
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(out / "strategies.json")


def _load(out: Path) -> dict:
    p = out / "strategies.json"
    if not p.exists():
        return {"runs": [], "learned": [], "skipped": [], "commands": []}
    data = json.loads(p.read_text())
    if isinstance(data, list):  # the one-model format of earlier versions
        data = {"runs": data, "learned": [], "skipped": [], "commands": []}
    for r in data["runs"]:
        r.setdefault("model", data.get("model", "toy-text"))
        r.setdefault("wall_s", r.get("search_s", 0.0))
    for k in ("learned", "skipped", "commands"):
        data.setdefault(k, [])
    return data


def merge(data: dict, other: dict) -> None:
    """Add ``other``'s runs, learned vectors, skips and commands to ``data`` (``other`` wins on equal keys)."""
    keys = {_key(r) for r in other["runs"]}
    data["runs"] = [r for r in data["runs"] if _key(r) not in keys] + other["runs"]
    keys = {(x["model"], x["task"], x["start"]) for x in other["learned"]}
    data["learned"] = [x for x in data["learned"] if (x["model"], x["task"], x["start"]) not in keys] + other["learned"]
    keys = {_key(x) for x in other["skipped"]}
    data["skipped"] = [x for x in data["skipped"] if _key(x) not in keys] + other["skipped"]
    data["commands"] += [c for c in other["commands"] if c not in data["commands"]]


def _log(msg: str) -> None:
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def run_model(name: str, cfg: dict, strategies: list[str], data: dict, out: Path, *, learn: bool, reuse: bool) -> None:
    """Every (task, strategy, budget, seed) of one model, then its learned vectors; JSON after each run."""
    model = nnvtv.load(name)
    done = {_key(r) for r in data["runs"]}
    for task in cfg["tasks"]:
        n_sites = len(model.sites("head"))
        vectors: dict[tuple, Any] = {}  # (strategy, budget, seed) -> task vector, for learning
        for strategy, seed in itertools.product(strategies, cfg["seeds"]):
            budgets = list(cfg["budgets"])
            if strategy == "ranking" and all(b < n_sites for b in budgets):
                budgets.append(n_sites)  # ranking's own cost: one pass per site
            for budget in budgets:
                key = (name, task, strategy, budget, seed)
                if key in done:
                    continue
                options = _options(strategy, budget, n_sites)
                if options is None:
                    data["skipped"].append({"model": name, "task": task, "strategy": strategy, "budget": budget,
                                            "seed": seed, "reason": f"needs >= {n_sites} passes (one per site)"})  # fmt: skip
                    done.add(key)
                    continue
                prior = [r for r in data["runs"] if r["model"] == name and r["task"] == task and r["strategy"] == strategy
                         and r["seed"] == seed and r["budget"] < budget and r["stop_reason"] == "strategy"
                         and r["options"] == options and r["forward_passes"] < r["budget"]]  # fmt: skip
                if reuse and prior and strategy in REUSABLE:
                    row = {**prior[-1], "budget": budget, "reused_from": prior[-1]["budget"]}
                    data["runs"].append(row)
                    done.add(key)
                    _log(f"{name} {task} {strategy:11s} budget {budget:5d} seed {seed}: = budget {prior[-1]['budget']} "
                         f"(stopped on its own at {prior[-1]['forward_passes']} passes)")  # fmt: skip
                    _save(out, data)
                    continue
                t = time.perf_counter()
                r = nnvtv.find(model, task, strategy=strategy, budget=budget, seed=seed, progress=False, **options)
                row = _run_row(name, r, strategy, budget, seed, options, time.perf_counter() - t)
                vectors[(strategy, budget, seed)] = r.task_vector
                data["runs"].append(row)
                done.add(key)
                _save(out, data)
                _log(f"{name} {task} {strategy:11s} budget {budget:5d} seed {seed}: {_score_name(row['metric'])} "
                     f"{_score(row):.2f} (TV {row['task_vector']:.3f}, ICL {row['icl']:.3f}, zero-shot {row['zero_shot']:.3f}), "
                     f"{row['n_sites']} sites, {row['forward_passes']} passes ({row['exact_rows']} exact + "
                     f"{row['gradient_rows']} gradient rows), {row['wall_s']:.0f} s")  # fmt: skip
        if learn and cfg.get("learn"):
            learn_task(name, model, task, cfg, data, out, vectors)


def learn_task(name: str, model: Any, task: str, cfg: dict, data: dict, out: Path, vectors: dict) -> None:
    """Learned vectors at attribution's sites (seed 0, smallest budget) and at one residual layer."""
    lc = cfg["learn"]
    have = {(x["model"], x["task"], x["start"]) for x in data["learned"]}
    starts: list[tuple[str, dict]] = []
    budget = min(cfg["budgets"])
    starts.append(("attribution", {}))
    layer = lc["layers"].get(task, lc["layers"].get("*"))
    if layer is not None:
        starts.append((f"layer {layer}", {"layer": layer}))
    for label, kw in starts:
        if (name, task, label) in have:
            continue
        find_passes, find_s = 0, 0.0
        if label == "attribution":
            tv = vectors.get(("attribution", budget, 0))
            row = next((r for r in data["runs"] if r["model"] == name and r["task"] == task and r["strategy"] == "attribution"
                        and r["budget"] == budget and r["seed"] == 0), None)  # fmt: skip
            if tv is None:  # not found in this process (e.g. --resume): find it again, same seed and budget
                t = time.perf_counter()
                r = nnvtv.find(model, task, strategy="attribution", budget=budget, seed=0, progress=False)
                tv, row = r.task_vector, _run_row(name, r, "attribution", budget, 0, {}, time.perf_counter() - t)
            find_passes, find_s = row["forward_passes"], row["wall_s"]
            kw = {"start": tv}
        t = time.perf_counter()
        res = nnvtv.learn(model, None if "start" in kw else task, steps=lc["steps"], lr=lc["lr"], seed=0, progress=False, **kw)
        wall = time.perf_counter() - t
        s = res.scores
        rec = res.task_vector.learned or {}
        row = {
            "model": name, "task": task, "start": label, "steps": rec.get("steps"), "best_step": rec.get("best_step"),
            "lr": lc["lr"], "metric": s.metric, "icl": s.icl, "zero_shot": s.zero_shot, "learned": s.task_vector,
            "extracted": res.extracted_score, "n_queries": s.n_queries, "n_sites": len(res.task_vector),
            "sites": [str(x) for x in res.task_vector.sites], "forward_passes": res.forward_passes,
            "find_passes": find_passes, "find_s": find_s, "wall_s": round(wall, 2), "fit_loss": res.fit_loss,
        }  # fmt: skip
        data["learned"].append(row)
        _save(out, data)
        _log(f"{name} {task} learned at {label}: {s.metric} extracted {row['extracted']:.3f} -> learned {row['learned']:.3f} "
             f"(ICL {row['icl']:.3f}), {row['steps']} steps, {row['forward_passes']} passes, {wall:.0f} s")  # fmt: skip


# ---------------------------------------------------------------------------------------------
# tables and figure (from the JSON alone)


def _groups(runs: list[dict]) -> list[tuple[str, str]]:
    return list(dict.fromkeys((r["model"], r["task"]) for r in runs))


def _cell(runs: list[dict], model: str, task: str, strategy: str, budget: int) -> list[dict]:
    return [r for r in runs if (r["model"], r["task"], r["strategy"], r["budget"]) == (model, task, strategy, budget)]


def _learned_score(x: dict) -> tuple[float | None, float | None]:
    """(extracted, learned) as fractions of ICL (accuracy) or gap closed."""
    return _ratio(x, x["extracted"]), _ratio(x, x["learned"])


def _fmt_range(v: list[float]) -> str:
    m = statistics.mean(v)
    return f"{m:.2f}" if len(v) == 1 or max(v) - min(v) < 0.005 else f"{m:.2f} [{min(v):.2f}-{max(v):.2f}]"


def tables(data: dict) -> list[str]:
    runs, learned = data["runs"], data["learned"]
    lines = ["# Search strategies at equal forward-pass equivalents", ""]
    for c in data.get("commands", []):
        said = [f"{c['wall_s'] / 60:.0f} min" if c.get("wall_s") else "", c.get("machine", ""), c.get("note", "")]
        lines.append(f"Command: `{c['command']}` ({', '.join(x for x in said if x)})  ")
    lines += [
        "",
        "Score: held-out task-vector accuracy as a fraction of held-out ICL accuracy (accuracy tasks), or the "
        "share of the zero-shot -> ICL gap the task vector closes (IoU / MSE tasks). Budgets and passes are "
        "forward-pass equivalents of the training queries (exact patched forward 1, gradient row 3). Mean over "
        "seeds, [min-max] where they differ.",
        "",
    ]
    strategies = [s for s in STRATEGIES if any(r["strategy"] == s for r in runs)]
    lines += ["## Summary", "", *summary(data, strategies), ""]
    for model, task in _groups(runs):
        g = [r for r in runs if (r["model"], r["task"]) == (model, task)]
        budgets = sorted({r["budget"] for r in g})
        seeds = sorted({r["seed"] for r in g})
        r0 = g[0]
        lines += [
            f"## {model} / {task}",
            "",
            f"{r0['total_sites']} head sites; held-out {r0['metric']} (seed {seeds[0]}): ICL {r0['icl']:.3f}, zero-shot "
            f"{r0['zero_shot']:.3f}, {r0['n_queries']} queries; seeds {', '.join(map(str, seeds))}.",
            "",
            f"| strategy | budget | {_score_name(r0['metric'])} | sites | passes used (exact + gradient rows) | wall s (search / total) | note |",
            "|---|---|---|---|---|---|---|",
        ]
        for strategy in strategies:
            for budget in budgets:
                cell = _cell(runs, model, task, strategy, budget)
                skipped = [s for s in data["skipped"] if (s["model"], s["task"], s["strategy"], s["budget"]) == (model, task, strategy, budget)]
                if not cell:
                    if skipped:
                        lines.append(f"| {strategy} | {budget} | - | - | - | - | not run: {skipped[0]['reason']} |")
                    continue
                notes = []
                if any(r.get("reused_from") for r in cell):
                    notes.append(f"= budget {cell[0]['reused_from']} (stopped on its own)")
                opts = {k: v for r in cell for k, v in r["options"].items()}
                if opts:
                    notes.append(", ".join(f"{k}={v}" for k, v in opts.items()))
                lines.append(
                    f"| {strategy} | {budget} | {_fmt_range([_score(r) for r in cell])} | {statistics.mean(r['n_sites'] for r in cell):.1f} "
                    f"| {statistics.mean(r['forward_passes'] for r in cell):.0f} ({statistics.mean(r.get('exact_rows', r['forward_passes']) for r in cell):.0f} + "
                    f"{statistics.mean(r.get('gradient_rows', 0) for r in cell):.0f}) "
                    f"| {statistics.mean(r['search_s'] for r in cell):.0f} / {statistics.mean(r['wall_s'] for r in cell):.0f} | {'; '.join(notes)} |"
                )
        grid = [b for b in budgets if any(r["budget"] == b and r["strategy"] != "ranking" for r in g)] or budgets
        lines += ["", *agreement(g, strategies, max(grid)), ""]
    if learned:
        lines += [
            "## Learned task vectors (`nnvtv.learn`, seed 0)",
            "",
            "Held-out scores of the same sites with the extracted ICL means and with learned values; steps of Adam "
            "(lr in units of each site's mean RMS), forward-pass equivalents of the training (step 3, validation and "
            "final passes 1; the search that found the sites is listed apart).",
            "",
            "| model / task | sites | steps (passes) | extracted | learned | ICL | learned / ICL (or gap closed) | wall s |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for x in learned:
            _, lf = _learned_score(x)
            where = f"{x['n_sites']} heads found by attribution ({x['find_passes']} passes)" if x["start"] == "attribution" else f"residual {x['start']}"
            lines.append(
                f"| {x['model']} / {x['task']} | {where} | {x['steps']} ({x['forward_passes']}) | {x['extracted']:.2f} | "
                f"**{x['learned']:.2f}** | {x['icl']:.2f} | {'-' if lf is None else f'{lf:.2f}'} | {x['wall_s']:.0f} |"
            )
        lines.append("")
    lines += ["## Issue 19 targets", "", *targets(data), ""]
    return lines


def _short(cell: list[dict], budget: int) -> str:
    """Mean score [min-max], and the passes used where a strategy stopped well inside the budget."""
    passes = statistics.mean(r["forward_passes"] for r in cell)
    return _fmt_range([_score(r) for r in cell]) + (f" ({passes:.0f} p)" if passes < 0.9 * budget else "")


def summary(data: dict, strategies: list[str]) -> list[str]:
    """Compact tables: models with several budgets (score per budget), then models with one
    budget per task (score, sites, passes, wall s)."""
    runs = data["runs"]
    groups = _groups(runs)
    grid = [(m, t) for m, t in groups if len({r["budget"] for r in runs if (r["model"], r["task"]) == (m, t) and r["strategy"] != "ranking"}) > 1]
    single = [g for g in groups if g not in grid]
    out: list[str] = []
    if grid:
        cols = [(m, t, b) for m, t in grid for b in sorted({r["budget"] for r in runs if (r["model"], r["task"]) == (m, t)})]
        out += ["Score per budget (forward-pass equivalents); in brackets the passes used where a strategy stopped well inside it:", "",
                "| strategy | " + " | ".join(f"{m} {t} {b}" if i == 0 or cols[i - 1][:2] != (m, t) else str(b) for i, (m, t, b) in enumerate(cols)) + " |",
                "|---|" + "---|" * len(cols)]  # fmt: skip
        for strategy in strategies:
            cells = []
            for m, t, b in cols:
                cell = _cell(runs, m, t, strategy, b)
                cells.append(_short(cell, b) if cell else "-")
            out.append(f"| {strategy} | " + " | ".join(cells) + " |")
        out.append("")
    if single:
        out += ["Score, sites, passes used, wall s of the whole `find` (means, search, held-out scores):", "",
                "| strategy | " + " | ".join(f"{m} {t}" for m, t in single) + " |", "|---|" + "---|" * len(single)]  # fmt: skip
        for strategy in strategies:
            cells = []
            for m, t in single:
                cell = [r for r in runs if (r["model"], r["task"], r["strategy"]) == (m, t, strategy)]
                if not cell:
                    cells.append("-")
                    continue
                cells.append("; ".join(
                    f"{_fmt_range([_score(r) for r in c])}, {statistics.mean(r['n_sites'] for r in c):.0f} sites, "
                    f"{statistics.mean(r['forward_passes'] for r in c):.0f} p, {statistics.mean(r['wall_s'] for r in c):.0f} s"
                    for b in sorted({r["budget"] for r in cell}) for c in [[r for r in cell if r["budget"] == b]]))  # fmt: skip
            out.append(f"| {strategy} | " + " | ".join(cells) + " |")
    return out


def agreement(g: list[dict], strategies: list[str], budget: int) -> list[str]:
    """Jaccard overlap of the site sets at ``budget`` (a strategy that has no run there: at its
    own largest budget, e.g. ranking's one pass per site) and the layers they sit in."""
    largest = {s: max(r["budget"] for r in g if r["strategy"] == s) for s in {r["strategy"] for r in g}}
    at = {s: budget if any(r["strategy"] == s and r["budget"] == budget for r in g) else b for s, b in largest.items()}
    top = [r for r in g if r["budget"] == at[r["strategy"]]]
    odd = [f"{s} at {b}" for s, b in at.items() if b != budget]
    out = [f"Site sets at budget {budget}{' (' + ', '.join(odd) + ')' if odd else ''}:", "", "| strategy | Jaccard between seeds | Jaccard with other strategies | layers holding most sites |", "|---|---|---|---|"]
    for strategy in strategies:
        mine = [set(r["sites"]) for r in top if r["strategy"] == strategy]
        if not mine:
            continue
        others = [set(r["sites"]) for r in top if r["strategy"] != strategy]
        within = [jaccard(a, b) for a, b in itertools.combinations(mine, 2)]
        across = [jaccard(a, b) for a in mine for b in others]
        per_layer: dict[tuple[str, int], int] = {}
        for s in itertools.chain.from_iterable(mine):
            site = nnvtv.Site.parse(s)
            per_layer[(site.stream, site.layer)] = per_layer.get((site.stream, site.layer), 0) + 1
        total = max(1, sum(per_layer.values()))
        # ties in stream and layer order: the sets' own order depends on the string hash seed
        top3 = [(f"{st + '.' if st else ''}L{layer}", c) for (st, layer), c in sorted(per_layer.items(), key=lambda kv: (-kv[1], kv[0]))[:3]]
        out.append(
            f"| {strategy} | {f'{statistics.mean(within):.2f}' if within else '- (one seed)'} | {f'{statistics.mean(across):.2f}' if across else '-'} "
            f"| {', '.join(f'{lab} {c / total:.0%}' for lab, c in top3)} |"
        )
    return out


def best_within(runs: list[dict], model: str, task: str, max_passes: int | None) -> tuple[float, str, int] | None:
    """Best cell (mean over seeds) whose budget is at most ``max_passes``: (score, strategy,
    budget); ties go to the cell that used fewer passes."""
    cands = []
    for strategy, budget in {(r["strategy"], r["budget"]) for r in runs if (r["model"], r["task"]) == (model, task)}:
        if max_passes is not None and budget > max_passes:
            continue
        cell = _cell(runs, model, task, strategy, budget)
        cands.append((-round(statistics.mean(_score(r) for r in cell), 6), statistics.mean(r["forward_passes"] for r in cell), budget, strategy))
    if not cands:
        return None
    v, _, budget, strategy = min(cands)
    return (-v, strategy, budget)


def targets(data: dict) -> list[str]:
    runs, learned = data["runs"], data["learned"]
    lines = []
    for model, (need, max_passes, n_tasks) in TARGETS.items():
        tasks = [t for m, t in _groups(runs) if m == model]
        if not tasks:
            continue
        met, parts = [], []
        for task in tasks:
            b = best_within(runs, model, task, max_passes)
            if b is None:
                continue
            parts.append(f"{task} {b[0]:.2f} ({b[1]} at {b[2]})")
            if b[0] >= need:
                met.append(task)
            overall = best_within(runs, model, task, None)
            if max_passes is not None and overall and overall[0] > b[0] + 1e-9:
                parts[-1] += f"; best at any budget {overall[0]:.2f} ({overall[1]} at {overall[2]})"
        what = "of ICL" if runs and next(r for r in runs if r["model"] == model)["metric"] == "accuracy" else "of the gap closed"
        within = f" within {max_passes} forward-pass equivalents" if max_passes else ""
        verdict = "**met**" if len(met) >= n_tasks else "**missed**"
        lines.append(f"- {model}: >= {need:.0%} {what}{within} on {n_tasks} task(s), searched vectors (extracted means): "
                     f"{verdict} ({len(met)} of {len(tasks)}). Best mean over seeds per task: {'; '.join(parts)}.")  # fmt: skip
        mine = [x for x in learned if x["model"] == model and (max_passes is None or x["forward_passes"] + x["find_passes"] <= max_passes)]
        if mine:
            best_l: dict[str, tuple[float, str, int]] = {}
            for x in mine:
                lf = _learned_score(x)[1]
                if lf is not None and (x["task"] not in best_l or lf > best_l[x["task"]][0]):
                    best_l[x["task"]] = (lf, x["start"], x["forward_passes"] + x["find_passes"])
            ok = [t for t, v in best_l.items() if v[0] >= need]
            lines.append(f"  With learned vectors (search + training{within}): {'**met**' if len(ok) >= n_tasks else '**missed**'} "
                         f"({len(ok)} of {len(tasks)}): " + "; ".join(f"{t} {v[0]:.2f} ({v[1]}, {v[2]} passes)" for t, v in best_l.items()) + ".")  # fmt: skip
    if learned:
        by_task: dict[tuple, list[dict]] = {}
        for x in learned:
            by_task.setdefault((x["model"], x["task"]), []).append(x)
        at_icl = []
        for (m, t), xs in by_task.items():
            ok = [f"{x['start']} {x['learned']:.2f}" for x in xs if x["learned"] >= x["icl"]]
            if ok:
                at_icl.append(f"{m}/{t} ({', '.join(ok)}; ICL {xs[0]['icl']:.2f})")
        verdict = "**met**" if len(at_icl) >= 2 else "**missed**"
        lines.append(f"- learned vectors at or above ICL on >= 2 tasks: {verdict} ({len(at_icl)} of {len(by_task)}: {'; '.join(at_icl) or 'none'}).")
    return lines


def figure(data: dict, path: Path) -> None:
    runs, learned = data["runs"], data["learned"]
    groups = _groups(runs)
    ncol = min(3, len(groups))
    nrow = math.ceil(len(groups) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.3 * ncol, 3.4 * nrow), squeeze=False)
    for ax, (model, task) in zip(axes.flat, groups, strict=False):
        g = [r for r in runs if (r["model"], r["task"]) == (model, task)]
        for i, strategy in enumerate(STRATEGIES):
            xs, ys, lo, hi = [], [], [], []
            for budget in sorted({r["budget"] for r in g if r["strategy"] == strategy}):
                cell = _cell(runs, model, task, strategy, budget)
                if cell and cell[0].get("reused_from"):
                    continue  # the same run as at a smaller budget: one point
                fr = [_score(r) for r in cell]
                xs.append(statistics.mean(r["forward_passes"] for r in cell))
                ys.append(statistics.mean(fr))
                lo.append(ys[-1] - min(fr))
                hi.append(max(fr) - ys[-1])
            for r in (r for r in g if r["strategy"] == strategy and r["budget"] == max(x["budget"] for x in g if x["strategy"] == strategy)):
                pts = [(p, _as_score(r, h)) for p, h, _ in r.get("curve", []) if h is not None]
                if len(pts) > 1:  # held-out score of the best mask so far, during the largest-budget runs
                    ax.plot(*zip(*pts, strict=True), color=f"C{i}", lw=0.7, alpha=0.35)
            if xs:
                ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o-", color=f"C{i}", capsize=3, label=strategy, alpha=0.85, ms=4)
        for x in (xl for xl in learned if (xl["model"], xl["task"]) == (model, task)):
            _, lf = _learned_score(x)
            if lf is not None:  # at its whole cost: the search that found the sites + the training
                at_sites = x["start"] == "attribution"
                ax.plot([x["forward_passes"] + x["find_passes"]], [lf], marker="*" if at_sites else "D", ms=12 if at_sites else 7,
                        ls="none", color="gold" if at_sites else "0.6", markeredgecolor="k", markeredgewidth=0.6,
                        label="learned, attribution's sites" if at_sites else "learned, one residual layer")  # fmt: skip
                ax.annotate(x["start"] if not at_sites else "", (x["forward_passes"] + x["find_passes"], lf), fontsize=6,
                            xytext=(-6, -3), textcoords="offset points", ha="right", va="top")  # fmt: skip
        need = TARGETS.get(model)
        if need:
            ax.axhline(need[0], color="0.4", ls="--", lw=0.8)
            if need[1]:
                ax.axvline(need[1], color="0.4", ls=":", lw=0.8)
        ax.axhline(1.0, color="0.75", lw=0.6)
        ax.set_xscale("log")
        # the budget grid (ranking's own one-pass-per-site budget would crowd its neighbour)
        ticks = sorted({r["budget"] for r in g if r["strategy"] != "ranking"} | {8, 16})
        lo_x = min([8.0] + [r["forward_passes"] * 0.8 for r in g])
        ax.set_xlim(lo_x, max(ticks) * 1.6)
        ax.set_xticks([t for t in ticks if t >= lo_x])
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:.0f}"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        y0, y1 = ax.get_ylim()
        ax.set_ylim(min(y0, -0.05), max(y1, 1.1))
        ax.set_title(f"{model} / {task} ({g[0]['total_sites']} heads)", fontsize=9)
        ax.set_xlabel("forward-pass equivalents used", fontsize=8)
        ax.set_ylabel(f"held-out {_score_name(g[0]['metric'])}", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(groups):]:
        ax.axis("off")
    handles, labels = {}, []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in handles:
                handles[lab] = h
                labels.append(lab)
    fig.legend([handles[lab] for lab in labels], labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False)
    fig.suptitle("Held-out score vs forward-pass equivalents: final vectors (mean, min-max over seeds); thin lines: best set\n"
                 "during the largest-budget runs; dashed: issue-19 target (dotted: its budget); grey: ICL", fontsize=9)
    fig.tight_layout(rect=(0, 0.03 + 0.035 * math.ceil(len(labels) / 4) / nrow, 1, 1 - 0.06 / nrow))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(data: dict, out: Path) -> None:
    lines = tables(data)
    (out / "strategies.md").write_text("\n".join(lines) + "\n")
    figure(data, out / "strategies.png")
    print("\n".join(lines))
    print(f"wrote {out}/strategies.md, strategies.json, strategies.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="one model (same as --models MODEL)")
    ap.add_argument("--models", default=None, help=f"comma-separated (default: {','.join(DEFAULT_MODELS)})")
    ap.add_argument("--task", default=None, help="one task (same as --tasks TASK)")
    ap.add_argument("--tasks", default=None, help="comma-separated; default: each model's preset (else its default task)")
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--budgets", default=None, help="comma-separated; default: each model's preset")
    ap.add_argument("--seeds", default=None, help="comma-separated; default: each model's preset")
    ap.add_argument("--learn", action="store_true", help="also learned task vectors (nnvtv.learn) where the preset names them")
    ap.add_argument("--no-reuse", action="store_true", help="rerun strategies that stopped on their own at a smaller budget")
    ap.add_argument("--resume", action="store_true", help="keep OUT/strategies.json and run only what it lacks")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--replot", action="store_true", help="rebuild tables and figure from OUT/strategies.json")
    ap.add_argument("--merge", default=None, help="comma-separated strategies.json files of other runs (e.g. run in parallel "
                    "with another --out): add their runs to OUT/strategies.json, replacing runs of the same model, task, "
                    "strategy, budget and seed, and rebuild tables and figure")  # fmt: skip
    args = ap.parse_args()
    if args.merge:
        data = _load(args.out)
        for path in args.merge.split(","):
            merge(data, _load(Path(path).parent))
        _save(args.out, data)
    if args.replot or args.merge:
        write_outputs(_load(args.out), args.out)
        return
    models = [m for m in (args.model or args.models or ",".join(DEFAULT_MODELS)).split(",") if m]
    tasks = args.task or args.tasks
    strategies = [s for s in args.strategies.split(",") if s]
    bad = [s for s in strategies if s not in STRATEGIES]
    if bad:
        ap.error(f"unknown strategies {bad}; choose from {','.join(STRATEGIES)}")
    data = _load(args.out) if args.resume else {"runs": [], "learned": [], "skipped": [], "commands": []}
    t0 = time.perf_counter()
    torch.manual_seed(0)
    for name in models:
        cfg = dict(PRESETS.get(name, {"tasks": [None], "budgets": [128, 512, 1280], "seeds": [0, 1, 2]}))
        if tasks:
            cfg["tasks"] = tasks.split(",")
        if args.budgets:
            cfg["budgets"] = [int(b) for b in args.budgets.split(",")]
        if args.seeds:
            cfg["seeds"] = [int(s) for s in args.seeds.split(",")]
        if cfg["tasks"] == [None]:
            e = nnvtv.catalog.entry(name)
            if e is None:
                ap.error(f"model {name} has no catalogue entry (no default task): pass --tasks")
            cfg["tasks"] = [e.default_task]
        run_model(name, cfg, strategies, data, args.out, learn=args.learn, reuse=not args.no_reuse)
    data["commands"].append({
        "command": "python benchmarks/strategies.py " + " ".join(sys.argv[1:]),
        "wall_s": round(time.perf_counter() - t0, 1),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}",
    })  # fmt: skip
    _save(args.out, data)
    write_outputs(data, args.out)


if __name__ == "__main__":
    main()
