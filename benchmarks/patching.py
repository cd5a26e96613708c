"""Patching overhead and batched-mask speed-up, measured side by side in one run.

    python benchmarks/patching.py [--repeats 5] [--out benchmarks/results/patching.md]

Two regimes (the machines are noisy, so each comparison interleaves its two arms and
reports the ratio of medians):

* ``gpt2-small``: random-init GPT-2-small shape (12 layers, d 768, 12 heads), batch
  16 x 32 tokens: a compute-bound CPU forward.
* ``toy``: GPT-2 4 x 4, d 128 (the shipped toy shape), 16 zero-shot prompts of 3 tokens:
  an overhead-bound forward (per-trace and per-call costs dominate).

Measured:
1. one patched forward through nnvtv (12 head sites replaced at the last token) vs the same
   patch done with raw torch forward pre-hooks (ratio nnvtv / hooks; target <= 1.15);
2. 64 candidate site sets through ``run_masks`` vs 64 separate ``model.run(..., patch)``
   calls (ratio separate / batched; target >= 5x), with ``run_masks`` both tiling whole
   prompts (``share_prefix=False``: one traced forward of 64 x 16 rows) and sharing the
   prompts' prefix (default: the prefix runs once with a key/value cache, only the last
   token is tiled per candidate).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

import nnvtv


def _median_time(fn: Callable[[], object], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def _interleaved(a: Callable[[], object], b: Callable[[], object], repeats: int) -> tuple[float, float]:
    a(), b()  # warm-up
    ta, tb = [], []
    for _ in range(repeats):
        ta += _median_time(a, 1)
        tb += _median_time(b, 1)
    return statistics.median(ta), statistics.median(tb)


def _hooked_run(model: nnvtv.Model, ids: torch.Tensor, patch: nnvtv.Patch) -> torch.Tensor:
    """Reference: the same replace-patch with raw torch hooks (benchmark only)."""
    module = model.module
    handles = []
    by_layer: dict[int, list[tuple[int, torch.Tensor]]] = {}
    for site, value in patch.values.items():
        by_layer.setdefault(site.layer, []).append((site.head, value))
    d = model.head_dim
    for layer, items in by_layer.items():
        def pre(mod, args, items=items):
            x = args[0].clone()
            for h, v in items:
                x[:, -1, h * d : (h + 1) * d] = v[0]
            return (x,) + args[1:]
        handles.append(module.get_submodule(model.stream().attn_out_paths[layer]).register_forward_pre_hook(pre))
    try:
        with torch.no_grad():
            return module(input_ids=ids).logits[:, -1]
    finally:
        for h in handles:
            h.remove()


def bench(name: str, config: GPT2Config, batch: int, seq: int, repeats: int, n_masks: int = 64) -> dict[str, float]:
    torch.manual_seed(0)
    model = nnvtv.wrap(GPT2LMHeadModel(config), name=name)
    ids = torch.randint(0, config.vocab_size, (batch, seq))
    space = model.sites("head")
    means = nnvtv.mean_activations(model, [ids], space)
    g = torch.Generator().manual_seed(0)
    chosen = [space[i] for i in torch.randperm(len(space), generator=g)[:12].tolist()]
    patch = means.patch(chosen)
    inputs = model.inputs(ids)
    ours, hooks = _interleaved(lambda: model.run(inputs, patch, readout=True), lambda: _hooked_run(model, ids, patch), repeats)
    assert torch.allclose(model.run(inputs, patch, readout=True), _hooked_run(model, ids, patch), atol=1e-4)
    masks = torch.rand(n_masks, len(space), generator=g) < 0.25
    patches = [means.patch(space.select(m)) for m in masks]
    rows = batch * n_masks
    shared, separate = _interleaved(
        lambda: nnvtv.run_masks(model, inputs, means, space, masks, max_rows=rows),
        lambda: [model.run(inputs, p, readout=True) for p in patches],
        max(1, repeats // 2),
    )
    whole, _ = _interleaved(
        lambda: nnvtv.run_masks(model, inputs, means, space, masks, max_rows=rows, share_prefix=False),
        lambda: None,
        max(1, repeats // 2),
    )
    return {"patched_ms": ours * 1e3, "hooks_ms": hooks * 1e3, "shared_s": shared, "whole_s": whole, "separate_s": separate}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "patching.md")
    args = ap.parse_args()
    torch.set_num_threads(2)
    regimes = {
        "gpt2-small (12x12, d 768), 16 x 32 tokens": (GPT2Config(n_layer=12, n_head=12, n_embd=768), 16, 32),
        "toy (4x4, d 128), 16 x 3 tokens": (GPT2Config(n_layer=4, n_head=4, n_embd=128, vocab_size=64, n_positions=64), 16, 3),
    }
    rows = []
    for label, (cfg, b, t) in regimes.items():
        r = bench(label, cfg, b, t, args.repeats)
        rows.append(
            f"| {label} | {r['patched_ms']:.1f} | {r['hooks_ms']:.1f} | **{r['patched_ms'] / r['hooks_ms']:.2f}** "
            f"| {r['separate_s']:.2f} | {r['whole_s']:.2f} | **{r['separate_s'] / r['whole_s']:.1f}x** "
            f"| {r['shared_s']:.2f} | **{r['separate_s'] / r['shared_s']:.1f}x** |"
        )
        print(rows[-1], flush=True)
    table = "\n".join(
        [
            "| regime | nnvtv patched forward (ms) | raw hooks (ms) | ratio (target <= 1.15) "
            "| 64 separate runs (s) | run_masks, whole prompts tiled (s) | speed-up "
            "| run_masks, shared prefix (s) | speed-up (target >= 5x) |",
            "|---|---|---|---|---|---|---|---|---|",
            *rows,
        ]
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        f"Command: `python benchmarks/patching.py --repeats {args.repeats}` "
        f"(torch {torch.__version__}, {torch.get_num_threads()} threads)\n\n{table}\n"
    )
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
