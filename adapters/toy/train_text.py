"""Train the ``toy-text`` models: natural in-context training, then a TVP curriculum.

Phase 1 (natural): next-answer cross-entropy on random ICL prompts (every demonstration's output
and the query's output are trained). Saved as ``toy-text-natural``.

Phase 2 (TVP curriculum, task-vector prompting): the same ICL loss plus a loss that takes the ICL
prompt's residual stream at the last token after block ``tvp_layer`` and writes it into a
zero-shot prompt (``<bos> q ->``, same task, another query) at the same place; the zero-shot pass
must then answer ``task(q)``. Gradients flow through both passes. This localises the task in the
residual stream at block ``tvp_layer``: a ground-truth testbed for task-vector search. Saved as
``toy-text``.

Usage::

    python -m nnvtv.adapters.toy.train_text --out adapters/toy/weights

The injection runs the GPT-2 submodules explicitly (:func:`.text_model.run_gpt2`), no hooks.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from .text_data import (
    DEMO_TEMPLATE,
    EVAL_QUERY_SYMBOLS,
    QUERY_TEMPLATE,
    SEPARATOR,
    SYMBOLS,
    TOY_TASKS,
    TRAIN_QUERY_SYMBOLS,
    ToyTextGenerator,
    build_tokenizer,
)
from .text_eval import evaluate_toy_text
from .text_model import TOY_TEXT_CONFIG, build_model, run_gpt2

NATURAL_NAME = "toy-text-natural"
TVP_NAME = "toy-text"

DEFAULTS = dict(
    natural_steps=3000,
    tvp_steps=1000,
    batch_size=128,
    max_demos=5,
    lr=2e-3,
    tvp_lr=5e-4,
    weight_decay=0.01,
    warmup=100,
    tvp_weight=1.0,
)


def _lr_at(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10% of ``base``."""
    if step < warmup:
        return base * (step + 1) / warmup
    frac = (step - warmup) / max(1, total - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def _icl_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)


def _tvp_loss(model, batch, zgen: ToyTextGenerator, resid_icl: torch.Tensor, tvp_layer: int):
    """Inject each ICL row's last-token block output into a zero-shot prompt of its task."""
    use = batch.n_demos > 0
    if not bool(use.any()):
        return resid_icl.sum() * 0.0
    rows = torch.nonzero(use).squeeze(1)
    vec = resid_icl[rows, batch.last_pos[rows]]  # (n, d), keeps the graph
    zs = zgen.sample(
        len(rows),
        task_ids=batch.task_ids[rows].tolist(),
        n_demos=0,
        exclude=batch.queries[rows].tolist(),
    )
    logits = run_gpt2(model, zs.input_ids, pos=zs.last_pos, resid_patch={tvp_layer: vec}).logits
    last = logits[torch.arange(len(rows)), zs.last_pos]
    return F.cross_entropy(last, zs.labels[torch.arange(len(rows)), zs.last_pos])


def _run_phase(
    model,
    *,
    phase: str,
    steps: int,
    gen: ToyTextGenerator,
    zgen: ToyTextGenerator | None,
    batch_size: int,
    lr: float,
    weight_decay: float,
    warmup: int,
    tvp_layer: int,
    tvp_weight: float,
    progress: Callable[[dict], None] | None,
    log_every: int = 100,
) -> list[dict]:
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=weight_decay)
    model.train()
    log = []
    t0 = time.perf_counter()
    c0 = time.process_time()
    run_icl = run_tvp = 0.0
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, steps, lr, warmup)
        batch = gen.sample(batch_size)
        out = run_gpt2(model, batch.input_ids, capture=zgen is not None)
        loss_icl = _icl_loss(out.logits, batch.labels)
        loss = loss_icl
        if zgen is not None:
            loss_tvp = _tvp_loss(model, batch, zgen, out.resid[tvp_layer], tvp_layer)
            loss = loss + tvp_weight * loss_tvp
            run_tvp += loss_tvp.item()
        run_icl += loss_icl.item()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if (step + 1) % log_every == 0 or step + 1 == steps:
            n = log_every if (step + 1) % log_every == 0 else (step + 1) % log_every
            rec = {
                "phase": phase,
                "step": step + 1,
                "steps": steps,
                "icl_loss": round(run_icl / n, 4),
                "seconds": round(time.perf_counter() - t0, 1),
                "cpu_seconds": round(time.process_time() - c0, 1),
            }
            if zgen is not None:
                rec["tvp_loss"] = round(run_tvp / n, 4)
            run_icl = run_tvp = 0.0
            log.append(rec)
            if progress is not None:
                progress(rec)
    model.eval()
    return log


def _print_progress(rec: dict) -> None:
    extra = f" tvp_loss {rec['tvp_loss']:.4f}" if "tvp_loss" in rec else ""
    print(
        f"[{rec['phase']}] step {rec['step']}/{rec['steps']} icl_loss {rec['icl_loss']:.4f}"
        f"{extra} {rec['seconds']:.1f}s",
        flush=True,
    )


def train_text(
    out_dir: str | Path,
    *,
    seed: int = 0,
    natural_steps: int = DEFAULTS["natural_steps"],
    tvp_steps: int = DEFAULTS["tvp_steps"],
    tvp_layer: int = 1,
    batch_size: int = DEFAULTS["batch_size"],
    max_demos: int = DEFAULTS["max_demos"],
    lr: float = DEFAULTS["lr"],
    tvp_lr: float = DEFAULTS["tvp_lr"],
    weight_decay: float = DEFAULTS["weight_decay"],
    warmup: int = DEFAULTS["warmup"],
    tvp_weight: float = DEFAULTS["tvp_weight"],
    num_threads: int = 2,
    progress: Callable[[dict], None] | None = None,
    command: str | None = None,
) -> dict:
    """Train both toy-text models into ``out_dir/toy-text-natural`` and ``out_dir/toy-text``.

    Returns ``{"toy-text-natural": metrics, "toy-text": metrics}``.
    """
    if not 0 <= tvp_layer < TOY_TEXT_CONFIG["n_layer"] - 1:
        raise ValueError(
            f"tvp_layer must be in [0, {TOY_TEXT_CONFIG['n_layer'] - 2}] so a block follows it, "
            f"got {tvp_layer}"
        )
    torch.set_num_threads(num_threads)
    out_dir = Path(out_dir)
    hparams = dict(
        seed=seed,
        natural_steps=natural_steps,
        tvp_steps=tvp_steps,
        tvp_layer=tvp_layer,
        batch_size=batch_size,
        max_demos=max_demos,
        lr=lr,
        tvp_lr=tvp_lr,
        weight_decay=weight_decay,
        warmup=warmup,
        tvp_weight=tvp_weight,
        optimizer="AdamW(betas=(0.9, 0.98)), grad clip 1.0, warm-up then cosine to 10%",
    )
    command = command or (
        "python -m nnvtv.adapters.toy.train_text --out " + str(out_dir)
        + f" --seed {seed} --natural-steps {natural_steps} --tvp-steps {tvp_steps}"
        + f" --tvp-layer {tvp_layer}"
    )
    common = dict(
        batch_size=batch_size, weight_decay=weight_decay, warmup=warmup,
        tvp_layer=tvp_layer, tvp_weight=tvp_weight, progress=progress,
    )

    model = build_model(seed)
    t_start, c_start = time.perf_counter(), time.process_time()
    gen = ToyTextGenerator(seed * 1000 + 1, min_demos=0, max_demos=max_demos)
    log_nat = _run_phase(
        model, phase="natural", steps=natural_steps, gen=gen, zgen=None, lr=lr, **common
    )
    t_nat, c_nat = time.perf_counter() - t_start, time.process_time() - c_start
    metrics_nat = evaluate_toy_text(model, tvp_layer=tvp_layer)
    results = {}
    results[NATURAL_NAME] = _save(
        model, out_dir / NATURAL_NAME, kind="natural", metrics=metrics_nat,
        hparams=hparams, log=log_nat, command=command,
        timing={"natural_seconds": round(t_nat, 1), "natural_cpu_seconds": round(c_nat, 1)},
    )

    t1, c1 = time.perf_counter(), time.process_time()
    tgen = ToyTextGenerator(seed * 1000 + 2, min_demos=1, max_demos=max_demos)
    zgen = ToyTextGenerator(seed * 1000 + 3, min_demos=0, max_demos=0)
    log_tvp = _run_phase(
        model, phase="tvp", steps=tvp_steps, gen=tgen, zgen=zgen, lr=tvp_lr, **common
    )
    t_tvp, c_tvp = time.perf_counter() - t1, time.process_time() - c1
    metrics_tvp = evaluate_toy_text(model, tvp_layer=tvp_layer)
    results[TVP_NAME] = _save(
        model, out_dir / TVP_NAME, kind="tvp", metrics=metrics_tvp, hparams=hparams,
        log=log_nat + log_tvp, command=command,
        timing={
            "natural_seconds": round(t_nat, 1), "natural_cpu_seconds": round(c_nat, 1),
            "tvp_seconds": round(t_tvp, 1), "tvp_cpu_seconds": round(c_tvp, 1),
        },
    )
    return results


def _save(model, path: Path, *, kind, metrics, hparams, log, command, timing) -> dict:
    import transformers

    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    build_tokenizer(TOY_TEXT_CONFIG["n_positions"]).save_pretrained(path)
    record = {
        "model": TVP_NAME if kind == "tvp" else NATURAL_NAME,
        "kind": kind,
        "metrics": metrics,
        "timing": {
            **timing,
            "train_seconds": round(sum(v for k, v in timing.items() if k.endswith("_seconds")
                                       and "cpu" not in k), 1),
            "train_cpu_seconds": round(sum(v for k, v in timing.items() if "cpu" in k), 1),
        },
        "hparams": hparams,
        "command": command,
        "log": log,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "threads": torch.get_num_threads(),
        },
    }
    (path / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")
    (path / "MODEL_CARD.md").write_text(_model_card(record))
    return metrics


def _fmt(x: float) -> str:
    return f"{x:.3f}"


def _model_card(rec: dict) -> str:
    m, hp = rec["metrics"], rec["hparams"]
    tvp = rec["kind"] == "tvp"
    name = rec["model"]
    if tvp:
        what = (
            f"**Ground-truth testbed (TVP curriculum).** Naturally trained for "
            f"{hp['natural_steps']} steps, then fine-tuned {hp['tvp_steps']} steps on the ICL "
            f"loss + {hp['tvp_weight']} x a task-vector-prompting loss: the ICL prompt's residual "
            f"stream at the last token after block {hp['tvp_layer']} is written into a zero-shot "
            f"prompt of the same task (another query), which must then answer. The task is "
            f"therefore *prescribed* to live in the residual stream at block {hp['tvp_layer']} "
            f"(last token); a task-vector search should rediscover that place. Its naturally "
            f"trained sibling is `{NATURAL_NAME}`."
        )
    else:
        what = (
            f"**Naturally trained.** {hp['natural_steps']} steps of plain next-answer training on "
            f"random ICL prompts, nothing else. How (and how locally) it encodes the task is "
            f"whatever training found; expect weak, non-local task vectors (Yang et al. 2025). "
            f"Its TVP-curriculum sibling, where the task is prescribed to a place, is `{TVP_NAME}`."
        )
    tasks = "\n".join(
        f"| `{t}` | " + ", ".join(f"{x}->{y}" for x, y in list(TOY_TASKS[t].items())[:4]) + ", ... |"
        for t in TOY_TASKS
    )
    rtv = " / ".join(f"block {k}: {_fmt(v)}" for k, v in m["residual_tv_by_layer"].items())
    greedy = "\n".join(
        f"| {s['n_heads']} | {', '.join(f'L{a}H{b}' for a, b in s['heads'])} | "
        f"{_fmt(s['select_acc'])} | {_fmt(s['eval_acc'])} | {_fmt(r)} |"
        for s, r in zip(m["greedy_heads"], m["greedy_recovery_of_icl5"], strict=True)
    )
    zs = ", ".join(f"{t} {_fmt(v)}" for t, v in m["icl_per_task"]["0"].items())
    shots = " / ".join(f"{k}: {_fmt(v)}" for k, v in m["icl_by_shots"].items())
    cfg = {k: v for k, v in TOY_TEXT_CONFIG.items()}
    tm = rec["timing"]
    return f"""# {name}

{what}

A tiny GPT-2 (`GPT2LMHeadModel`) trained from scratch by `nnvtv` on in-context tasks over 32
symbols. Shipped as package data of `nnvtv.adapters.toy`; loads offline with
`GPT2LMHeadModel.from_pretrained(dir)` and `AutoTokenizer.from_pretrained(dir)`.

## Prompt format

`<bos> x1 -> y1 ; x2 -> y2 ; ... ; q ->` and the answer is the next token `task(q)`.
Text templates: demo `{DEMO_TEMPLATE!r}`, query `{QUERY_TEMPLATE!r}`, separator `{SEPARATOR!r}`;
the tokenizer (WordLevel, whitespace split) prepends `<bos>`. Symbols `{SYMBOLS[0]}`..`{SYMBOLS[-1]}`.

## Tasks (fixed bijections, `nnvtv.adapters.toy.text_data.TOY_TASKS`)

| task | first pairs |
|---|---|
{tasks}

## Data generator and split

`ToyTextGenerator` (numpy `default_rng`, seeded): random task, k demos with k uniform in
0..{hp['max_demos']} (one k per batch, so no padding), distinct inputs; loss on every answer
token (each demo output and the query output). Training queries (the final slot) are
{SYMBOLS[TRAIN_QUERY_SYMBOLS[0]]}..{SYMBOLS[TRAIN_QUERY_SYMBOLS[-1]]}; all metrics below use
held-out queries {SYMBOLS[EVAL_QUERY_SYMBOLS[0]]}..{SYMBOLS[EVAL_QUERY_SYMBOLS[-1]]}
(demonstrations use any symbol, so the task maps themselves are all seen in training: ICL here
is task identification). TVP phase: k in 1..{hp['max_demos']}, zero-shot queries also from the
training half.

## Training

- command: `{rec['command']}`
- seed {hp['seed']}; natural steps {hp['natural_steps']} (lr {hp['lr']}); TVP steps
  {hp['tvp_steps'] if tvp else 0} (lr {hp['tvp_lr']}, TVP weight {hp['tvp_weight']}, block
  {hp['tvp_layer']}); batch {hp['batch_size']}; weight decay {hp['weight_decay']}; warm-up
  {hp['warmup']}; {hp['optimizer']}
- time: {tm['train_seconds']} s wall, {tm['train_cpu_seconds']} s CPU (process time, all threads)
  in total ({', '.join(f'{k} {v}' for k, v in tm.items() if k.startswith(('natural', 'tvp')))}) with
  {rec['versions']['threads']} torch threads; torch {rec['versions']['torch']}, transformers
  {rec['versions']['transformers']}; this excludes evaluation and saving
- config: `{json.dumps(cfg)}`

## Metrics (held-out queries, top-1 over the full vocabulary, mean over the 8 tasks)

- ICL 5-shot **{_fmt(m['icl_5shot'])}**, 1-shot **{_fmt(m['icl_1shot'])}**, zero-shot
  **{_fmt(m['zero_shot'])}** (chance ~{_fmt(1 / len(TOY_TASKS))} if it guesses one task)
- ICL by number of shots: {shots}
- zero-shot per task: {zs}
- residual task vector (last-token output of block l := mean over 50 five-shot ICL prompts of
  the task, in the zero-shot pass): {rtv}
- all 16 head outputs replaced by their ICL means: {_fmt(m['all_heads_replaced'])}
- greedy head search (replace, last token; selected on queries s00..s15, reported on s16..s31;
  recovery = accuracy / ICL 5-shot):

| heads | which (layer, head) | select acc | held-out acc | recovery |
|---|---|---|---|---|
{greedy}

All numbers: `nnvtv.adapters.toy.text_eval.evaluate_toy_text(model, tvp_layer={hp['tvp_layer']})`;
full detail in `metrics.json`.
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Train the toy-text models (natural + TVP curriculum).")
    p.add_argument("--out", required=True, help="output folder; writes toy-text-natural/ and toy-text/")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--natural-steps", type=int, default=DEFAULTS["natural_steps"])
    p.add_argument("--tvp-steps", type=int, default=DEFAULTS["tvp_steps"])
    p.add_argument("--tvp-layer", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    p.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    p.add_argument("--tvp-lr", type=float, default=DEFAULTS["tvp_lr"])
    p.add_argument("--tvp-weight", type=float, default=DEFAULTS["tvp_weight"])
    args = p.parse_args(argv)
    command = "python -m nnvtv.adapters.toy.train_text " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    results = train_text(
        args.out,
        seed=args.seed,
        natural_steps=args.natural_steps,
        tvp_steps=args.tvp_steps,
        tvp_layer=args.tvp_layer,
        batch_size=args.batch_size,
        lr=args.lr,
        tvp_lr=args.tvp_lr,
        tvp_weight=args.tvp_weight,
        progress=_print_progress,
        command=command,
    )
    for name, m in results.items():
        print(
            f"{name}: icl5 {m['icl_5shot']:.3f} icl1 {m['icl_1shot']:.3f} zero-shot "
            f"{m['zero_shot']:.3f} residual-TV {m['residual_tv_by_layer']} greedy {m['greedy_curve']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
