"""How well does attribution patching rank sites? Its first-order estimates against exact one-site patching.

    python benchmarks/attribution_vs_exact.py [--models toy-text,toy-visual,toy-seggpt,smollm2-135m] [--seeds 0,1]

Per model and task, two runs of :func:`nnvtv.find` with the same seed (so the same mean
activations, training queries and objective):

* ``strategy="ranking"`` with one pass per site: the exact loss change of patching each site
  alone, ``effects[i] - base`` (``SearchRun.extra["effects"]``), on the task's own loss;
* ``strategy="attribution", budget=3, refine=False``: one forward + backward, the estimate
  ``(mean - activation) . dLoss/dactivation`` per site (``SearchRun.extra["estimates"]``), on the
  loss the gradients follow (:func:`nnvtv.surrogate.gradient_loss`: the task loss for text, a
  surrogate for the visual models).

Reports the Spearman rank correlation between estimates and exact effects, and how many of the
exact top-k sites (k = a quarter of the space, ranking's default) attribution's top-k holds.
Writes ``OUT/attribution_vs_exact.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

import nnvtv

DEFAULT_OUT = Path(__file__).parent / "results"
TASKS = {"toy-text": "toy-perm_c", "toy-visual": "segmentation", "toy-seggpt": "segmentation", "smollm2-135m": "antonyms"}


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Rank correlation of two 1-D tensors (ties broken by position)."""
    ra = torch.argsort(torch.argsort(a)).double()
    rb = torch.argsort(torch.argsort(b)).double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


def compare(model: nnvtv.Model, task: str, seed: int) -> dict:
    """Exact one-site effects and attribution estimates of one (model, task, seed)."""
    n = len(model.sites("head"))
    t = time.perf_counter()
    exact = nnvtv.find(model, task, strategy="ranking", budget=n, seed=seed, progress=False)
    t_exact = time.perf_counter() - t
    t = time.perf_counter()
    att = nnvtv.find(model, task, strategy="attribution", budget=3, refine=False, seed=seed, progress=False)
    t_att = time.perf_counter() - t
    base = att.run.extra["base_loss"]
    effects = torch.as_tensor(exact.run.extra["effects"], dtype=torch.float64) - base
    estimates = torch.as_tensor(att.run.extra["estimates"], dtype=torch.float64)
    k = max(1, n // 4)
    top_exact = set(torch.argsort(effects)[:k].tolist())  # most negative: patching lowers the loss most
    top_att = set(torch.argsort(estimates)[:k].tolist())
    return {
        "model": model.name, "task": task, "seed": seed, "n_sites": n, "k": k,
        "spearman": round(spearman(effects, estimates), 4), "top_k_overlap": len(top_exact & top_att),
        "exact_passes": exact.forward_passes, "attribution_passes": att.forward_passes,
        "exact_s": round(t_exact, 1), "attribution_s": round(t_att, 1),
    }  # fmt: skip


def table(rows: list[dict], command: str) -> str:
    lines = [
        "# Attribution patching vs exact one-site patching",
        "",
        f"Command: `{command}` ({platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__})",
        "",
        "Spearman rank correlation between attribution's first-order estimates (one forward + backward, on the "
        "loss the gradients follow) and the exact loss change of patching each head alone (one forward per head, "
        "on the task loss); top-k: how many of the k heads whose exact patch lowers the loss most are among "
        "attribution's k (k = a quarter of the heads).",
        "",
        "| model / task | seed | heads | Spearman | top-k overlap | passes (exact / attribution) | wall s (exact / attribution) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} / {r['task']} | {r['seed']} | {r['n_sites']} | {r['spearman']:.2f} | {r['top_k_overlap']} of {r['k']} "
            f"| {r['exact_passes']} / {r['attribution_passes']} | {r['exact_s']:.0f} / {r['attribution_s']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=",".join(TASKS))
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    torch.manual_seed(0)
    rows = []
    for name in [m for m in args.models.split(",") if m]:
        model = nnvtv.load(name)
        task = TASKS.get(name) or nnvtv.catalog.entry(name).default_task
        for seed in (int(s) for s in args.seeds.split(",")):
            rows.append(compare(model, task, seed))
            r = rows[-1]
            print(f"{name} {task} seed {seed}: Spearman {r['spearman']:.2f}, top-{r['k']} overlap {r['top_k_overlap']}", flush=True)
    command = "python benchmarks/attribution_vs_exact.py" + (f" --models {args.models}" if args.models != ",".join(TASKS) else "") + (
        f" --seeds {args.seeds}" if args.seeds != "0,1" else "")  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "attribution_vs_exact.json").write_text(json.dumps({"command": command, "rows": rows}, indent=1) + "\n")
    md = table(rows, command)
    (args.out / "attribution_vs_exact.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
