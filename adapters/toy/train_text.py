"""Train the ``toy-text`` models: natural in-context training, then a TVP curriculum.

Phase 1 (natural): next-answer cross-entropy on random ICL prompts (every demonstration's output
and the query's output are trained). Saved as ``toy-text-natural``.

Phase 2 (TVP curriculum, task-vector prompting): the same ICL loss plus losses that take the
ICL prompts' last-token activations (mean over the batch's prompts of each task) and write them
into zero-shot prompts (``<bos> q ->``, same task, another query), which must then answer
``task(q)``; gradients flow through both passes (see :func:`_tvp_losses`):

* ``replace``: the residual stream after block ``tvp_layer`` := the ICL vector (the prescribed
  ground truth);
* ``add``: the task-specific part of that vector (minus its mean over tasks) added to the
  zero-shot residual, so the answer depends on the task-specific part, not on a generic
  "in-context" signal;
* ``heads``: a random half of the head outputs of blocks ``0..tvp_layer`` := ICL head outputs.

With ``replace`` alone the residual task vector at block 1 reached 1.00 but greedy search needed
~6 of 16 heads; ``add`` and ``heads`` concentrate the task in a few block-1 heads. Saved as
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

from nnvtv.toys import ToyTrainer

from .text_data import (
    DEMO_TEMPLATE,
    EVAL_QUERY_SYMBOLS,
    N_SYMBOLS,
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
    tvp_steps=2000,
    batch_size=128,
    max_demos=5,
    lr=2e-3,
    tvp_lr=1e-3,
    weight_decay=0.01,
    warmup=100,
    tvp_weight=1.0,
    tvp_add_weight=1.0,
    tvp_head_weight=0.5,
    tvp_inject="task_mean",
    schedule="cosine",
    tvp_schedule="cosine",
)


def _lr_at(step: int, total: int, base: float, warmup: int, schedule: str = "cosine") -> float:
    """Linear warm-up, then cosine decay to 10% of ``base`` (or constant)."""
    if step < warmup:
        return base * (step + 1) / warmup
    if schedule == "constant":
        return base
    frac = (step - warmup) / max(1, total - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def _icl_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)


def _group_mean(x: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Replace each row of ``x`` (n, ...) by the mean of the rows in its group."""
    onehot = F.one_hot(groups, int(groups.max()) + 1).to(x.dtype)  # (n, g)
    flat = x.reshape(len(x), -1)
    means = (onehot.T @ flat) / onehot.sum(0).clamp_min(1.0)[:, None]
    return means[groups].reshape(x.shape)


def _tvp_losses(
    model,
    batch,
    icl_out,
    zgen: ToyTextGenerator,
    tvp_layer: int,
    *,
    inject: str = "task_mean",
    weights: dict[str, float],
    rng: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Task-vector-prompting losses: ICL last-token activations written into zero-shot prompts.

    Every loss runs a zero-shot prompt ``<bos> q ->`` of the row's task (``q`` differs from the
    ICL query) and takes the cross-entropy of the answer ``task(q)``. The ICL vectors are each
    row's own (``inject="row"``) or the mean over the batch's ICL rows of the same task
    (``"task_mean"``, what the evaluation patches in). Losses (``weights`` keys):

    * ``"replace"``: the zero-shot last-token output of block ``tvp_layer`` := the ICL vector
      (Hendel et al. task vectors; the prescribed ground truth);
    * ``"add"``: the zero-shot output of block ``tvp_layer`` += (ICL vector - mean ICL vector over
      all tasks), so the answer must follow the task-specific part alone, not a generic
      "in-context" signal;
    * ``"heads"``: a random half of the head outputs of blocks ``0..tvp_layer`` := the ICL head
      outputs (same prompts), so partial task information at those blocks must suffice.
    """
    use = batch.n_demos > 0
    rows = torch.nonzero(use).squeeze(1)
    losses: dict[str, torch.Tensor] = {}
    if len(rows) == 0:
        return losses
    tasks = batch.task_ids[rows]
    pos_icl = batch.last_pos[rows]
    if inject not in ("row", "task_mean"):
        raise ValueError(f"inject must be 'row' or 'task_mean', got {inject!r}")
    agg = (lambda x: _group_mean(x, tasks)) if inject == "task_mean" else (lambda x: x)
    vec = agg(icl_out.resid[tvp_layer][rows, pos_icl])  # (n, d), keeps the graph
    zs = zgen.sample(
        len(rows), task_ids=tasks.tolist(), n_demos=0, exclude=batch.queries[rows].tolist()
    )
    idx = torch.arange(len(rows))
    target = zs.labels[idx, zs.last_pos]

    def answer_loss(**patch) -> torch.Tensor:
        logits = run_gpt2(model, zs.input_ids, pos=zs.last_pos, **patch).logits
        return F.cross_entropy(logits[idx, zs.last_pos], target)

    if weights.get("replace", 0.0):
        losses["replace"] = answer_loss(resid_patch={tvp_layer: vec})
    if weights.get("add", 0.0):
        losses["add"] = answer_loss(resid_add={tvp_layer: vec - vec.mean(0, keepdim=True)})
    if weights.get("heads", 0.0):
        n_heads = icl_out.heads[0].shape[2]
        keep = torch.rand(len(rows), tvp_layer + 1, n_heads, generator=rng) < 0.5
        patch = {
            li: (keep[:, li], agg(icl_out.heads[li][rows, pos_icl])) for li in range(tvp_layer + 1)
        }
        losses["heads"] = answer_loss(head_patch=patch)
    return losses


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
    tvp_weights: dict[str, float],
    progress: Callable[[dict], None] | None,
    tvp_inject: str = "task_mean",
    schedule: str = "cosine",
    seed: int = 0,
    log_every: int = 100,
) -> list[dict]:
    """One training phase; TVP losses only when ``zgen`` (the zero-shot prompt source) is given."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=weight_decay)
    rng = torch.Generator().manual_seed(seed)
    model.train()
    log = []
    t0 = time.perf_counter()
    c0 = time.process_time()
    running: dict[str, float] = {}
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, steps, lr, warmup, schedule)
        batch = gen.sample(batch_size)
        out = run_gpt2(model, batch.input_ids, capture=zgen is not None)
        parts = {"icl": _icl_loss(out.logits, batch.labels)}
        loss = parts["icl"]
        if zgen is not None:
            tvp = _tvp_losses(
                model, batch, out, zgen, tvp_layer, inject=tvp_inject, weights=tvp_weights, rng=rng
            )
            for name, value in tvp.items():
                loss = loss + tvp_weights[name] * value
                parts[f"tvp_{name}"] = value
        for name, value in parts.items():
            running[name] = running.get(name, 0.0) + value.item()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if (step + 1) % log_every == 0 or step + 1 == steps:
            n = log_every if (step + 1) % log_every == 0 else (step + 1) % log_every
            rec = {"phase": phase, "step": step + 1, "steps": steps}
            rec.update({f"{k}_loss": round(v / n, 4) for k, v in running.items()})
            rec["seconds"] = round(time.perf_counter() - t0, 1)
            rec["cpu_seconds"] = round(time.process_time() - c0, 1)
            running = {}
            log.append(rec)
            if progress is not None:
                progress(rec)
    model.eval()
    return log


def _print_progress(rec: dict) -> None:
    losses = " ".join(f"{k} {v:.4f}" for k, v in rec.items() if k.endswith("_loss"))
    print(
        f"[{rec['phase']}] step {rec['step']}/{rec['steps']} {losses} "
        f"{rec['seconds']:.1f}s (cpu {rec['cpu_seconds']:.1f}s)",
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
    tvp_add_weight: float = DEFAULTS["tvp_add_weight"],
    tvp_head_weight: float = DEFAULTS["tvp_head_weight"],
    tvp_inject: str = DEFAULTS["tvp_inject"],
    schedule: str = DEFAULTS["schedule"],
    tvp_schedule: str = DEFAULTS["tvp_schedule"],
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
        tvp_add_weight=tvp_add_weight,
        tvp_head_weight=tvp_head_weight,
        tvp_inject=tvp_inject,
        schedule=schedule,
        tvp_schedule=tvp_schedule,
        optimizer="AdamW(betas=(0.9, 0.98)), grad clip 1.0; warm-up, then cosine to 10% or constant",
    )
    command = command or (
        "python -m nnvtv.adapters.toy.train_text --out "
        + str(out_dir)
        + f" --seed {seed} --natural-steps {natural_steps} --tvp-steps {tvp_steps}"
        + f" --tvp-layer {tvp_layer}"
    )
    common = dict(
        batch_size=batch_size,
        weight_decay=weight_decay,
        warmup=warmup,
        tvp_layer=tvp_layer,
        progress=progress,
        tvp_inject=tvp_inject,
        tvp_weights={"replace": tvp_weight, "add": tvp_add_weight, "heads": tvp_head_weight},
    )

    model = build_model(seed)
    t_start, c_start = time.perf_counter(), time.process_time()
    gen = ToyTextGenerator(seed * 1000 + 1, min_demos=0, max_demos=max_demos)
    log_nat = _run_phase(
        model,
        phase="natural",
        steps=natural_steps,
        gen=gen,
        zgen=None,
        lr=lr,
        schedule=schedule,
        **common,
    )
    t_nat, c_nat = time.perf_counter() - t_start, time.process_time() - c_start
    metrics_nat = evaluate_toy_text(model, tvp_layer=tvp_layer)
    results = {}
    results[NATURAL_NAME] = _save(
        model,
        out_dir / NATURAL_NAME,
        kind="natural",
        metrics=metrics_nat,
        hparams=hparams,
        log=log_nat,
        command=command,
        timing={"natural_seconds": round(t_nat, 1), "natural_cpu_seconds": round(c_nat, 1)},
    )

    t1, c1 = time.perf_counter(), time.process_time()
    tgen = ToyTextGenerator(seed * 1000 + 2, min_demos=1, max_demos=max_demos)
    # Zero-shot prompts of the TVP loss use every symbol as query: trained on s00..s15 only, the
    # injected task vector did not transfer to the other queries (measured: 1.00 vs 0.01).
    zgen = ToyTextGenerator(
        seed * 1000 + 3, min_demos=0, max_demos=0, query_symbols=range(N_SYMBOLS)
    )
    log_tvp = _run_phase(
        model,
        phase="tvp",
        steps=tvp_steps,
        gen=tgen,
        zgen=zgen,
        lr=tvp_lr,
        seed=seed,
        schedule=tvp_schedule,
        **common,
    )
    t_tvp, c_tvp = time.perf_counter() - t1, time.process_time() - c1
    metrics_tvp = evaluate_toy_text(model, tvp_layer=tvp_layer)
    results[TVP_NAME] = _save(
        model,
        out_dir / TVP_NAME,
        kind="tvp",
        metrics=metrics_tvp,
        hparams=hparams,
        log=log_nat + log_tvp,
        command=command,
        timing={
            "natural_seconds": round(t_nat, 1),
            "natural_cpu_seconds": round(c_nat, 1),
            "tvp_seconds": round(t_tvp, 1),
            "tvp_cpu_seconds": round(c_tvp, 1),
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
            "train_seconds": round(
                sum(v for k, v in timing.items() if k.endswith("_seconds") and "cpu" not in k), 1
            ),
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
        extra = []
        if hp.get("tvp_add_weight"):
            extra.append(
                f"{hp['tvp_add_weight']} x the same with the task-specific part of that vector "
                f"(minus the mean over tasks) *added* to the zero-shot residual instead"
            )
        if hp.get("tvp_head_weight"):
            extra.append(
                f"{hp['tvp_head_weight']} x a loss that writes a random half of the ICL head "
                f"outputs of blocks 0..{hp['tvp_layer']} into the zero-shot prompt"
            )
        extra_txt = ("; plus " + "; plus ".join(extra)) if extra else ""
        what = (
            f"**Ground-truth testbed (TVP curriculum).** Naturally trained for "
            f"{hp['natural_steps']} steps (= `{NATURAL_NAME}`), then fine-tuned {hp['tvp_steps']} "
            f"steps on the ICL loss + task-vector-prompting losses: {hp['tvp_weight']} x "
            f"the ICL prompts' residual stream at the last token after block {hp['tvp_layer']} "
            f"(mean over the batch's prompts of the task: `{hp['tvp_inject']}`) *replaces* that "
            f"of a zero-shot prompt of the same task (another query), which must then answer"
            f"{extra_txt}. The task is therefore *prescribed* to live in the residual stream at "
            f"block {hp['tvp_layer']} (last token); a task-vector search should rediscover that "
            f"place (blocks 0..{hp['tvp_layer']}). Its naturally trained sibling is "
            f"`{NATURAL_NAME}`."
        )
    else:
        what = (
            f"**Naturally trained.** {hp['natural_steps']} steps of plain next-answer training on "
            f"random ICL prompts, nothing else. How (and how locally) it encodes the task is "
            f"whatever training found; expect weak, non-local task vectors (Yang et al. 2025). "
            f"Its TVP-curriculum sibling, where the task is prescribed to a place, is `{TVP_NAME}`."
        )
    tasks = "\n".join(
        f"| `{t}` | "
        + ", ".join(f"{x}->{y}" for x, y in list(TOY_TASKS[t].items())[:4])
        + ", ... |"
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
    phases = ", ".join(
        f"{ph}: {tm[ph + '_seconds']} s wall / {tm[ph + '_cpu_seconds']} s CPU"
        for ph in ("natural", "tvp")
        if ph + "_seconds" in tm
    )
    tvp_line = (
        f"- TVP phase: {hp['tvp_steps']} steps, lr {hp['tvp_lr']} "
        f"({hp.get('tvp_schedule', 'cosine')}); loss = ICL + {hp['tvp_weight']} x replace + "
        f"{hp.get('tvp_add_weight', 0.0)} x add + {hp.get('tvp_head_weight', 0.0)} x heads at "
        f"block {hp['tvp_layer']}; injected vectors: `{hp.get('tvp_inject', 'row')}`\n"
        if tvp
        else ""
    )
    return f"""# {name}

{what}

A tiny GPT-2 (`GPT2LMHeadModel`) trained from scratch by `nnvtv` on in-context tasks over 32
symbols. Shipped as package data of `nnvtv.adapters.toy`; loads offline with
`GPT2LMHeadModel.from_pretrained(dir)` and `AutoTokenizer.from_pretrained(dir)`.

## Prompt format

`<bos> x1 -> y1 ; x2 -> y2 ; ... ; q ->` and the answer is the next token `task(q)`.
Text templates: demo `{DEMO_TEMPLATE!r}`, query `{QUERY_TEMPLATE!r}`, separator `{SEPARATOR!r}`;
the tokenizer (WordLevel, whitespace split) prepends `<bos>`. Symbols `{SYMBOLS[0]}`..`{SYMBOLS[-1]}`.

**At most {hp["max_demos"]} demonstrations.** Training prompts hold 0..{hp["max_demos"]} demos
({3 + 4 * hp["max_demos"]} tokens at most), so later positions are untrained: with
{hp["max_demos"] + 1} demos accuracy is {_fmt(m["icl_by_shots"].get(str(hp["max_demos"] + 1), float("nan")))}.
Build prompts with <= {hp["max_demos"]} demos for this model.

## Tasks (fixed bijections, `nnvtv.adapters.toy.text_data.TOY_TASKS`)

| task | first pairs |
|---|---|
{tasks}

## Data generator and split

`ToyTextGenerator` (numpy `default_rng`, seeded): random task, k demos with k uniform in
0..{hp["max_demos"]} (one k per batch, so no padding), distinct inputs; loss on every answer
token (each demo output and the query output). Training queries (the final slot) are
{SYMBOLS[TRAIN_QUERY_SYMBOLS[0]]}..{SYMBOLS[TRAIN_QUERY_SYMBOLS[-1]]}; all metrics below use
held-out queries {SYMBOLS[EVAL_QUERY_SYMBOLS[0]]}..{SYMBOLS[EVAL_QUERY_SYMBOLS[-1]]}
(demonstrations use any symbol, so the task maps themselves are all seen in training: ICL here
is task identification). TVP phase: ICL prompts with k in 1..{hp["max_demos"]} and queries from
the training half; its zero-shot prompts use all 32 symbols as queries (trained on the training
half only, the injected vector did not transfer to held-out queries: 1.00 vs 0.01), so the
held-out queries are *not* held out of the TVP loss.

## Training

- command: `{rec["command"]}`
- seed {hp["seed"]}; batch {hp["batch_size"]}; AdamW (betas 0.9, 0.98), weight decay
  {hp["weight_decay"]}, grad clip 1.0, {hp["warmup"]} warm-up steps per phase; `cosine` decays
  to 10% of the peak lr
- natural phase: {hp["natural_steps"]} steps, lr {hp["lr"]} ({hp.get("schedule", "cosine")})
{tvp_line}- time: {tm["train_seconds"]} s wall, {tm["train_cpu_seconds"]} s CPU (process time, summed over
  threads) for training ({phases}); {rec["versions"]["threads"]} torch threads on a 2-core
  machine; torch {rec["versions"]["torch"]}, transformers {rec["versions"]["transformers"]};
  evaluation and saving excluded
- config: `{json.dumps(cfg)}`

## Metrics (held-out queries, top-1 over the full vocabulary, mean over the 8 tasks)

- ICL 5-shot **{_fmt(m["icl_5shot"])}**, 1-shot **{_fmt(m["icl_1shot"])}**, zero-shot
  **{_fmt(m["zero_shot"])}** (chance ~{_fmt(1 / len(TOY_TASKS))} if it guesses one task)
- ICL by number of shots: {shots}
- zero-shot per task: {zs}
- residual task vector (last-token output of block l := mean over 50 five-shot ICL prompts of
  the task, in the zero-shot pass): {rtv}
- all 16 head outputs replaced by their ICL means: {_fmt(m["all_heads_replaced"])}
- greedy head search (replace, last token; selected on queries s00..s15, reported on s16..s31;
  recovery = accuracy / ICL 5-shot):

| heads | which (layer, head) | select acc | held-out acc | recovery |
|---|---|---|---|---|
{greedy}

All numbers: `nnvtv.adapters.toy.text_eval.evaluate_toy_text(model, tvp_layer={hp["tvp_layer"]})`;
full detail in `metrics.json`.
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Train the toy-text models (natural + TVP curriculum).")
    p.add_argument(
        "--out", required=True, help="output folder; writes toy-text-natural/ and toy-text/"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--natural-steps", type=int, default=DEFAULTS["natural_steps"])
    p.add_argument("--tvp-steps", type=int, default=DEFAULTS["tvp_steps"])
    p.add_argument("--tvp-layer", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    p.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    p.add_argument("--tvp-lr", type=float, default=DEFAULTS["tvp_lr"])
    p.add_argument(
        "--tvp-weight",
        type=float,
        default=DEFAULTS["tvp_weight"],
        help="weight of the residual replace TVP loss",
    )
    p.add_argument(
        "--tvp-add-weight",
        type=float,
        default=DEFAULTS["tvp_add_weight"],
        help="weight of the residual add (task-specific part) TVP loss",
    )
    p.add_argument(
        "--tvp-head-weight",
        type=float,
        default=DEFAULTS["tvp_head_weight"],
        help="weight of the random-half head-output TVP loss",
    )
    p.add_argument("--tvp-inject", choices=["task_mean", "row"], default=DEFAULTS["tvp_inject"])
    p.add_argument(
        "--schedule",
        choices=["constant", "cosine"],
        default=DEFAULTS["schedule"],
        help="learning-rate schedule of the natural phase",
    )
    p.add_argument(
        "--tvp-schedule",
        choices=["constant", "cosine"],
        default=DEFAULTS["tvp_schedule"],
        help="learning-rate schedule of the TVP phase",
    )
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
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
        tvp_add_weight=args.tvp_add_weight,
        tvp_head_weight=args.tvp_head_weight,
        tvp_inject=args.tvp_inject,
        schedule=args.schedule,
        tvp_schedule=args.tvp_schedule,
        num_threads=args.threads,
        progress=_print_progress,
        command=command,
    )
    for name, m in results.items():
        print(
            f"{name}: icl5 {m['icl_5shot']:.3f} icl1 {m['icl_1shot']:.3f} zero-shot "
            f"{m['zero_shot']:.3f} residual-TV {m['residual_tv_by_layer']} greedy {m['greedy_curve']}"
        )
    return 0



#: ``nnvtv train-toy text``
TRAINER = ToyTrainer(
    name="text",
    description="toy-text-natural (natural ICL training) then toy-text (+ task-vector-prompting curriculum)",
    train=train_text,
    models=(NATURAL_NAME, TVP_NAME),
    command="nnvtv train-toy text --out DIR",
)


if __name__ == "__main__":
    raise SystemExit(main())
