"""Every search strategy at equal forward-pass budgets, several seeds, on a shipped model.

    python benchmarks/strategies.py [--model toy-text] [--task toy-perm_a]
        [--budgets 128,512,1280] [--seeds 0,1,2] [--out benchmarks/results]

Writes ``strategies.md`` (table), ``strategies.json`` (every run) and ``strategies.png``
(held-out task-vector score / ICL vs forward passes used, mean and min-max over seeds). Each cell is the mean over seeds
of: held-out task-vector accuracy as a fraction of held-out ICL accuracy, sites selected,
forward passes actually spent (a strategy may stop early), wall time of the search. A second
table compares the site sets found (Jaccard overlap between seeds and strategies at the
largest budget, and where they sit by layer): do they agree on where the task lives?
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import nnvtv  # noqa: E402
from nnvtv.compare import jaccard  # noqa: E402

STRATEGIES = ("reinforce", "greedy", "cmaes", "ranking")


def _score(run: dict) -> float:
    """Task vector as a fraction of ICL (accuracy), or the share of the zero-shot -> ICL gap it
    closes (error metrics such as MSE, where a ratio to ICL means nothing)."""
    key = "fraction_of_icl" if run.get("metric", "accuracy") == "accuracy" else "gap_closed"
    return run[key] or 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="toy-text")
    ap.add_argument("--task", default=None)
    ap.add_argument("--budgets", default="128,512,1280")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--replot", action="store_true", help="rebuild tables and figure from OUT/strategies.json")
    args = ap.parse_args()
    budgets = [int(b) for b in args.budgets.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    torch.manual_seed(0)
    model = nnvtv.load(args.model)
    runs = json.loads((args.out / "strategies.json").read_text()) if args.replot else []
    for strategy, budget, seed in itertools.product(STRATEGIES, budgets, seeds):
        if args.replot:
            break
        r = nnvtv.find(model, args.task, strategy=strategy, budget=budget, seed=seed)
        row = {
            "strategy": strategy,
            "budget": budget,
            "seed": seed,
            "task": r.task_vector.task,
            "icl": r.scores.icl,
            "zero_shot": r.scores.zero_shot,
            "task_vector": r.scores.task_vector,
            "fraction_of_icl": r.scores.fraction_of_icl,
            "gap_closed": r.scores.gap_closed,
            "metric": r.scores.metric,
            "n_sites": r.n_sites,
            "total_sites": len(r.space),
            "sites": [str(s) for s in r.task_vector.sites],
            "forward_passes": r.forward_passes,
            "search_s": r.timings["search"],
            "curve": [(h.forward_passes, h.heldout) for h in r.history if h.heldout is not None],
        }
        runs.append(row)
        print(f"{strategy:9s} budget {budget:5d} seed {seed}: TV {row['task_vector']:.2f} / ICL {row['icl']:.2f}, {row['n_sites']} sites, {row['forward_passes']} passes, {row['search_s']:.1f}s", flush=True)

    label = "TV / ICL" if runs[0].get("metric", "accuracy") == "accuracy" else "gap closed (TV vs zero-shot -> ICL)"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "strategies.json").write_text(json.dumps(runs, indent=1))
    lines = [
        f"Command: `python benchmarks/strategies.py --model {args.model}"
        + (f" --task {args.task}" if args.task else "")
        + f" --budgets {args.budgets} --seeds {args.seeds}"
        + ("" if args.out == Path(__file__).parent / "results" else f" --out {args.out}")
        + "`  ",
        f"Model `{args.model}`, task `{runs[0]['task']}`, {runs[0]['total_sites']} head sites; "
        f"held-out ICL {runs[0]['icl']:.3f}, zero-shot {runs[0]['zero_shot']:.3f} ({runs[0].get('metric', 'accuracy')}). Mean over seeds {seeds} (min-max in brackets).",
        "",
        f"| strategy | budget | {label} | sites | passes used | search time (s) |",
        "|---|---|---|---|---|---|",
    ]
    for strategy, budget in itertools.product(STRATEGIES, budgets):
        cell = [r for r in runs if r["strategy"] == strategy and r["budget"] == budget]
        fr = [_score(r) for r in cell]
        lines.append(
            f"| {strategy} | {budget} | {statistics.mean(fr):.2f} [{min(fr):.2f}-{max(fr):.2f}] "
            f"| {statistics.mean(r['n_sites'] for r in cell):.1f} | {statistics.mean(r['forward_passes'] for r in cell):.0f} "
            f"| {statistics.mean(r['search_s'] for r in cell):.1f} |"
        )
    top = [r for r in runs if r["budget"] == max(budgets)]
    lines += ["", f"Agreement of site sets at budget {max(budgets)}:", "", "| strategy | Jaccard between seeds | Jaccard with other strategies | share of sites per layer |", "|---|---|---|---|"]
    # every (stream, layer) in forward order, labelled L3 (one stream) or enc.L3 / dec.L1
    layers = [(name, i) for name, info in model.streams.items() for i in range(info.n_layers)]
    for strategy in STRATEGIES:
        mine = [set(r["sites"]) for r in top if r["strategy"] == strategy]
        others = [set(r["sites"]) for r in top if r["strategy"] != strategy]
        within = [jaccard(a, b) for a, b in itertools.combinations(mine, 2)]
        across = [jaccard(a, b) for a in mine for b in others]
        per_layer = [0] * len(layers)
        for s in itertools.chain.from_iterable(mine):
            site = nnvtv.Site.parse(s)
            per_layer[layers.index((site.stream, site.layer))] += 1
        total = max(1, sum(per_layer))
        lines.append(
            f"| {strategy} | {statistics.mean(within) if within else float('nan'):.2f} | {statistics.mean(across):.2f} "
            f"| {' / '.join(f'{name + chr(46) if name else str()}L{i} {c / total:.0%}' for (name, i), c in zip(layers, per_layer, strict=True))} |"
        )
    (args.out / "strategies.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for i, strategy in enumerate(STRATEGIES):
        xs, ys, lo, hi = [], [], [], []
        for budget in budgets:
            cell = [r for r in runs if r["strategy"] == strategy and r["budget"] == budget]
            fr = [_score(r) for r in cell]
            xs.append(statistics.mean(r["forward_passes"] for r in cell))
            ys.append(statistics.mean(fr))
            lo.append(ys[-1] - min(fr))
            hi.append(max(fr) - ys[-1])
        ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o-", color=f"C{i}", capsize=3, label=strategy, alpha=0.85)
    ax.axhline(0.85, color="0.5", ls="--", lw=0.8, label="0.85")
    ax.set_xscale("log")
    ax.set_xlabel("forward passes used (candidate site sets evaluated; budgets " + args.budgets + ")")
    ax.set_ylabel(f"held-out {label}")
    ax.set_title(f"{args.model} / {runs[0]['task']}: search strategies ({len(seeds)} seeds)", fontsize=10)
    ax.legend(fontsize=8)
    fig.savefig(args.out / "strategies.png", dpi=110, bbox_inches="tight")
    print(f"wrote {args.out}/strategies.md, .json, .png")


if __name__ == "__main__":
    main()
