"""nnvtv on a GPU at real scale: a random-init Llama-shaped model of about 1B parameters in bfloat16.

    python benchmarks/gpu.py [--repeats 5] [--out benchmarks/results/gpu.md]
    python benchmarks/gpu.py --tiny --allow-cpu      # the same code on a tiny model, to check it

Exits with a message on a machine without CUDA (unless ``--allow-cpu``). Measured side by side
in one run (each ratio interleaves its two arms; medians):

1. one patched forward through nnvtv (32 head sites replaced at the last token) vs the same patch
   done with raw torch forward pre-hooks (ratio nnvtv / hooks), batch 16 x 64 tokens;
2. ``run_masks`` throughput in candidate site sets per second, 256 candidates over 16 queries,
   tiling whole prompts (``share_prefix=False``) and sharing the prompt prefix (the default),
   with ``max_rows`` from free device memory; peak CUDA memory of each;
3. ``nnvtv.find`` end to end over the 16 layers x 32 heads = 512 head sites at the last token
   (REINFORCE, budget 1024 forward passes) on a synthetic word-pair task: wall time and forward
   passes per second (a random model learns nothing in context: this measures cost, not quality).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

import nnvtv

ONE_B = dict(vocab_size=32000, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
             num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=2048)
TINY = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)


def _tokenizer(words: int) -> PreTrainedTokenizerFast:
    vocab = {"[PAD]": 0, "[UNK]": 1, "[BOS]": 2, **{f"w{i}": i + 3 for i in range(words)}, "->": words + 3, ";": words + 4}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", bos_token="[BOS]", padding_side="left")


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _interleaved(a: Callable[[], object], b: Callable[[], object], repeats: int) -> tuple[float, float]:
    a(), b()  # warm-up
    ta, tb = [], []
    for _ in range(repeats):
        for fn, acc in ((a, ta), (b, tb)):
            _sync()
            t = time.perf_counter()
            fn()
            _sync()
            acc.append(time.perf_counter() - t)
    return statistics.median(ta), statistics.median(tb)


def _hooked_run(model: nnvtv.Model, ids: torch.Tensor, patch: nnvtv.Patch) -> torch.Tensor:
    """Reference: the same replace-patch with raw torch forward pre-hooks (benchmark only)."""
    d = model.head_dim
    by_layer: dict[int, list[tuple[int, torch.Tensor]]] = {}
    for site, value in patch.values.items():
        by_layer.setdefault(site.layer, []).append((site.head, value))
    handles = []
    for layer, items in by_layer.items():
        def pre(mod, args, items=items):
            x = args[0].clone()
            for h, v in items:
                x[:, -1, h * d : (h + 1) * d] = v[0].to(x)
            return (x, *args[1:])
        handles.append(model.module.get_submodule(model.stream().attn_out_paths[layer]).register_forward_pre_hook(pre))
    try:
        with torch.no_grad():
            return model.module(input_ids=ids).logits[:, -1]
    finally:
        for h in handles:
            h.remove()


def _peak(fn: Callable[[], object]) -> tuple[float, float]:
    """(seconds, peak GB of CUDA memory above the baseline) of one call."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    _sync()
    t = time.perf_counter()
    fn()
    _sync()
    dt = time.perf_counter() - t
    peak = (torch.cuda.max_memory_allocated() - base) / 2**30 if torch.cuda.is_available() else float("nan")
    return dt, peak


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tiny", action="store_true", help="a 2-layer model: check the script, not the GPU")
    ap.add_argument("--allow-cpu", action="store_true", help="run without CUDA (with --tiny, to check the script)")
    ap.add_argument("--budget", type=int, default=1024)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "gpu.md")
    args = ap.parse_args()
    if not torch.cuda.is_available() and not args.allow_cpu:
        print("benchmarks/gpu.py measures nnvtv on a CUDA GPU and this machine has none "
              "(torch.cuda.is_available() is False); nothing was measured.", file=sys.stderr)
        return 1
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = LlamaConfig(**(TINY if args.tiny else ONE_B), bos_token_id=2, eos_token_id=2, pad_token_id=0)
    torch.manual_seed(0)
    with torch.device(device):
        module = LlamaForCausalLM(cfg).to(torch.bfloat16).eval()
    n_params = sum(p.numel() for p in module.parameters())
    tok = _tokenizer(min(400, cfg.vocab_size - 8))
    model = nnvtv.wrap(module, tok, name="llama-1b-random" if not args.tiny else "llama-tiny-random")
    print(f"{model!r}: {n_params / 1e9:.2f} B parameters, {device}, bfloat16", flush=True)

    # 1. patched forward vs raw hooks
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 400, (16, 64), generator=g).to(device)
    space = model.sites("head")
    means = nnvtv.mean_activations(model, [ids[:8], ids[8:]], space)
    chosen = [space[i] for i in torch.randperm(len(space), generator=g)[:32].tolist()]
    patch = means.patch(chosen)
    inputs = model.inputs(ids)
    ours, hooks = _interleaved(lambda: model.run(inputs, patch, readout=True), lambda: _hooked_run(model, ids, patch), args.repeats)
    diff = (model.run(inputs, patch, readout=True).float() - _hooked_run(model, ids, patch).float()).abs().max().item()

    # 2. run_masks throughput, whole prompts vs shared prefix
    masks = torch.rand(256, len(space), generator=g) < 0.1
    queries = inputs.rows(slice(0, 16))
    t_whole, m_whole = _peak(lambda: nnvtv.run_masks(model, queries, means, space, masks, share_prefix=False))
    t_shared, m_shared = _peak(lambda: nnvtv.run_masks(model, queries, means, space, masks))

    # 3. find end to end over every head at the last token
    words = [f"w{i}" for i in range(3, 203)]
    task = nnvtv.tasks.WordPairTask("synthetic", list(zip(words[:100], words[100:], strict=True)))
    model.meta["prompt_format"] = {"demo": "{input} -> {output}", "query": "{input} ->", "separator": " ; "}
    t = time.perf_counter()
    result = nnvtv.find(model, task, strategy="reinforce", budget=args.budget, seed=0, progress=None)
    _sync()
    t_find = time.perf_counter() - t

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU (script check only)"
    rows = [
        ("model", f"Llama-shaped, random init, {cfg.num_hidden_layers} layers x {cfg.num_attention_heads} heads, "
                  f"d {cfg.hidden_size}, {n_params / 1e9:.2f} B parameters, bfloat16"),
        ("device", f"{gpu}; torch {torch.__version__}"),
        ("patched forward, 16 x 64 tokens, 32 head sites", f"{ours * 1e3:.1f} ms vs raw hooks {hooks * 1e3:.1f} ms: "
                                                           f"**{ours / hooks:.2f}x** (max |logit diff| {diff:.3g})"),
        ("run_masks, 256 site sets x 16 queries, whole prompts", f"{t_whole:.2f} s = **{256 / t_whole:.0f} site sets/s**, peak {m_whole:.1f} GB"),
        ("run_masks, shared prefix", f"{t_shared:.2f} s = **{256 / t_shared:.0f} site sets/s**, peak {m_shared:.1f} GB "
                                     f"({t_whole / t_shared:.1f}x)"),
        (f"nnvtv.find, {len(result.space)} head sites, REINFORCE budget {args.budget}",
         f"{t_find:.1f} s end to end, {result.forward_passes / max(result.timings['search'], 1e-9):.0f} forward passes/s in the search"),
    ]
    table = "| measure | result |\n|---|---|\n" + "\n".join(f"| {a} | {b} |" for a, b in rows)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(f"Command: `python benchmarks/gpu.py --repeats {args.repeats}{' --tiny --allow-cpu' if args.tiny else ''}`\n\n{table}\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
