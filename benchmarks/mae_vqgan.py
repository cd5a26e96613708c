"""CPU cost of the official-size MAE-VQGAN: one forward (batch 8) and one batched search step.

    flock /tmp/nnvtv-heavy.lock python benchmarks/mae_vqgan.py [--threads 2] [--repeats 3] \\
        [--out benchmarks/results/mae_vqgan.md]

Random weights of the official config (ViT-L/16 encoder 24 x 1024, decoder 8 x 512, VQGAN
f16; 401.8M parameters), 224-px canvases. Measured, median of ``--repeats`` (wall seconds and
process CPU seconds, which count every thread):

1. ``forward``: code logits of 8 ICL canvases (encoder 148 tokens, decoder 197);
2. ``forward+render``: the same plus the VQGAN decode of the 8 answer quadrants (the
   readout tasks score);
3. ``zero-shot``: 8 zero-shot prompts (encoder 50, decoder 99 tokens) + render;
4. ``search step``: ``run_masks`` with 4 candidate site sets over 2 zero-shot queries
   (8 rows, one traced forward) patching means into all 1152 head sites' positions
   (each candidate selects ~22% of them, as the paper's final sets).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from nnvtv.adapters.mae_vqgan import MaeVqgan, official

import nnvtv
from nnvtv.canvas import OFFICIAL, CanvasPrompts


def _measure(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    walls, cpus = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    module = MaeVqgan(official()).eval()
    model = nnvtv.wrap(module, name="mae-vqgan-random", validate=False)
    build = time.perf_counter() - t0
    g = torch.Generator().manual_seed(0)
    px = torch.rand(8, 3, 224, 224, generator=g)
    icl = model.inputs(CanvasPrompts(px, False, OFFICIAL))
    zs = model.inputs(CanvasPrompts(px, True, OFFICIAL))
    rows: list[tuple[str, float, float]] = []
    with torch.no_grad():
        rows.append(("forward (8 ICL canvases, logits)", *_measure(lambda: module(**icl.kwargs), a.repeats)))
        rows.append(("forward+render (8 ICL canvases)", *_measure(lambda: model.run(icl, readout=True), a.repeats)))
        rows.append(("zero-shot forward+render (8)", *_measure(lambda: model.run(zs, readout=True), a.repeats)))
    space = model.sites("head")
    means = nnvtv.mean_activations(model, [icl.rows(slice(0, 4))], space)
    masks = torch.rand(4, len(space), generator=g) < 0.22
    queries = zs.rows(slice(0, 2))
    rows.append((f"search step (run_masks: 4 sets x 2 queries, {len(space)} sites)",
                 *_measure(lambda: nnvtv.run_masks(model, queries, means, space, masks), a.repeats)))
    lines = [
        f"# MAE-VQGAN official size on CPU ({a.threads} torch threads, median of {a.repeats})",
        "",
        f"{module.num_parameters():,} parameters, random init; built and wrapped in {build:.1f} s. "
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}.",
        "",
        "| what | wall s | CPU s |",
        "|---|---:|---:|",
        *[f"| {n} | {w:.2f} | {c:.2f} |" for n, w, c in rows],
        "",
        "Command: `flock /tmp/nnvtv-heavy.lock python benchmarks/mae_vqgan.py "
        f"--threads {a.threads} --repeats {a.repeats}`",
    ]
    text = "\n".join(lines)
    print(text)
    if a.out is not None:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
