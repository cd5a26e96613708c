"""Train the ``toy-text`` models: natural in-context training, then a TVP curriculum.

Phase 1 (natural): next-answer cross-entropy on random ICL prompts (every demonstration's output
and the query's output are trained). Saved as ``toy-text-natural``.

Phase 2 (TVP curriculum, task-vector prompting): the same ICL loss plus losses that take the
ICL prompts' last-token activations (mean over the batch's prompts of each task) and write them
into zero-shot prompts (``<bos> q ->``, same task, another query), which must then answer
``task(q)``; gradients flow through both passes (see :func:`.text_tvp.tvp_losses`):

* ``replace``: the residual stream after block ``tvp_layer`` := the ICL vector (the prescribed
  ground truth);
* ``add``: the task-specific part of that vector (minus its mean over tasks) added to the
  zero-shot residual, so the answer depends on the task-specific part, not on a generic
  "in-context" signal;
* ``heads``: a random half of the head outputs of blocks ``0..tvp_layer`` := ICL head outputs.

With ``replace`` alone the residual task vector at block 1 reached 1.00 but greedy search needed
~6 of 16 heads; ``add`` and ``heads`` concentrate the task in a few block-1 heads. Saved as
``toy-text``.

Every forward goes through the library's own site definition (:mod:`.text_tvp`): the GPT-2 is
wrapped once with :func:`nnvtv.wrap`; the ICL pass is :meth:`nnvtv.Model.capture` (logits + the
sites' activations with their graph), the zero-shot passes are :meth:`nnvtv.Model.run` with an
:class:`nnvtv.Patch` (``grad=True``). The model cards come from :mod:`.text_card`
(``nnvtv.find`` / ``nnvtv.evaluate`` on the saved weights).

Usage::

    python -m nnvtv.adapters.toy.train_text --out adapters/toy/weights
    python -m nnvtv.adapters.toy.train_text --card-only adapters/toy/weights   # no training
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import nnvtv
from nnvtv.toys import ToyTrainer

from . import text_card
from .text_data import N_SYMBOLS, ToyTextGenerator, build_tokenizer
from .text_model import TOY_TEXT_CONFIG, build_model
from .text_tvp import icl_loss, model_inputs, tvp_losses, tvp_sites, wrap_for_training

__all__ = ["DEFAULTS", "NATURAL_NAME", "TVP_NAME", "TRAINER", "main", "run_phase", "train_text"]

NATURAL_NAME = text_card.NATURAL_NAME
TVP_NAME = text_card.TVP_NAME

DEFAULTS: dict[str, Any] = dict(
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


def run_phase(
    model: nnvtv.Model,
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
    """One training phase of the wrapped model; TVP losses only when ``zgen`` is given.

    Returns the log: one record per ``log_every`` steps (mean losses, wall and CPU seconds).
    """
    net = model.module
    opt = torch.optim.AdamW(net.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=weight_decay)
    rng = torch.Generator().manual_seed(seed)
    sites = tvp_sites(tvp_layer, model.n_heads) if zgen is not None else []
    net.train()
    log = []
    t0 = time.perf_counter()
    c0 = time.process_time()
    running: dict[str, float] = {}
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, steps, lr, warmup, schedule)
        batch = gen.sample(batch_size)
        out, acts = model.capture(model_inputs(batch), sites, grad=True)
        parts = {"icl": icl_loss(out.logits, batch.labels)}
        loss = parts["icl"]
        if zgen is not None:
            tvp = tvp_losses(
                model, batch, acts, zgen, tvp_layer, inject=tvp_inject, weights=tvp_weights, rng=rng
            )
            for name, value in tvp.items():
                loss = loss + tvp_weights[name] * value
                parts[f"tvp_{name}"] = value
        for name, value in parts.items():
            running[name] = running.get(name, 0.0) + value.item()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
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
    net.eval()
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
    cards: bool = True,
) -> dict:
    """Train both toy-text models into ``out_dir/toy-text-natural`` and ``out_dir/toy-text``.

    Each folder gets the weights, the tokenizer, ``metrics.json`` and ``MODEL_CARD.md``
    (:func:`.text_card.write_card`: evaluated on the saved weights; ``cards=False`` writes only
    the training part of the record). Returns ``{"toy-text-natural": summary, "toy-text":
    summary}``: each card's means over the tasks (``{}`` each without cards).
    """
    if not 0 <= tvp_layer < TOY_TEXT_CONFIG["n_layer"] - 1:
        raise ValueError(
            f"tvp_layer must be in [0, {TOY_TEXT_CONFIG['n_layer'] - 2}] so a block follows it, "
            f"got {tvp_layer}"
        )
    torch.set_num_threads(num_threads)
    out_dir = Path(out_dir)
    hparams = dict(
        seed=seed, natural_steps=natural_steps, tvp_steps=tvp_steps, tvp_layer=tvp_layer,
        batch_size=batch_size, max_demos=max_demos, lr=lr, tvp_lr=tvp_lr,
        weight_decay=weight_decay, warmup=warmup, tvp_weight=tvp_weight,
        tvp_add_weight=tvp_add_weight, tvp_head_weight=tvp_head_weight, tvp_inject=tvp_inject,
        schedule=schedule, tvp_schedule=tvp_schedule,
        optimizer="AdamW(betas=(0.9, 0.98)), grad clip 1.0, linear warm-up, then cosine to 10% or constant",
    )  # fmt: skip
    command = command or (
        f"python -m nnvtv.adapters.toy.train_text --out {out_dir} --seed {seed} "
        f"--natural-steps {natural_steps} --tvp-steps {tvp_steps} --tvp-layer {tvp_layer}"
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

    gpt2 = build_model(seed)
    model = wrap_for_training(gpt2)
    t_start, c_start = time.perf_counter(), time.process_time()
    gen = ToyTextGenerator(seed * 1000 + 1, min_demos=0, max_demos=max_demos)
    log_nat = run_phase(
        model, phase="natural", steps=natural_steps, gen=gen, zgen=None, lr=lr, schedule=schedule,
        **common,
    )  # fmt: skip
    t_nat, c_nat = time.perf_counter() - t_start, time.process_time() - c_start
    timing = {"natural_seconds": round(t_nat, 1), "natural_cpu_seconds": round(c_nat, 1)}
    results = {}
    results[NATURAL_NAME] = _save(
        gpt2, out_dir / NATURAL_NAME, kind="natural", hparams=hparams, log=log_nat,
        command=command, timing=timing, card=cards,
    )  # fmt: skip

    t1, c1 = time.perf_counter(), time.process_time()
    tgen = ToyTextGenerator(seed * 1000 + 2, min_demos=1, max_demos=max_demos)
    # Zero-shot prompts of the TVP loss use every symbol as query: trained on s00..s15 only, the
    # injected task vector did not transfer to the other queries (measured: 1.00 vs 0.01).
    zgen = ToyTextGenerator(
        seed * 1000 + 3, min_demos=0, max_demos=0, query_symbols=range(N_SYMBOLS)
    )
    log_tvp = run_phase(
        model, phase="tvp", steps=tvp_steps, gen=tgen, zgen=zgen, lr=tvp_lr, seed=seed,
        schedule=tvp_schedule, **common,
    )  # fmt: skip
    t_tvp, c_tvp = time.perf_counter() - t1, time.process_time() - c1
    timing = {**timing, "tvp_seconds": round(t_tvp, 1), "tvp_cpu_seconds": round(c_tvp, 1)}
    results[TVP_NAME] = _save(
        gpt2, out_dir / TVP_NAME, kind="tvp", hparams=hparams, log=log_nat + log_tvp,
        command=command, timing=timing, card=cards,
    )  # fmt: skip
    return results


def _save(
    gpt2: torch.nn.Module,
    path: Path,
    *,
    kind: str,
    hparams: dict,
    log: list[dict],
    command: str,
    timing: dict[str, float],
    card: bool,
) -> dict:
    """Save weights + tokenizer, then the record (and, with ``card``, its evaluation and card);
    returns the card's means over the tasks (``{}`` without ``card``)."""
    import transformers

    path.mkdir(parents=True, exist_ok=True)
    gpt2.save_pretrained(path)
    build_tokenizer(TOY_TEXT_CONFIG["n_positions"]).save_pretrained(path)
    wall = sum(v for k, v in timing.items() if k.endswith("_seconds") and "cpu" not in k)
    record = {
        "model": TVP_NAME if kind == "tvp" else NATURAL_NAME,
        "kind": kind,
        "metrics": {},
        "timing": {
            **timing,
            "train_seconds": round(wall, 1),
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
    if not card:
        text_card.write_record(path, record)
        return {}
    return text_card.write_card(path, record)["metrics"]["mean"]


#: CLI help of the hyper-parameters (each is ``--name-with-dashes``, default from DEFAULTS)
_HELP = {
    "tvp_weight": "weight of the residual replace TVP loss",
    "tvp_add_weight": "weight of the residual add (task-specific part) TVP loss",
    "tvp_head_weight": "weight of the random-half head-output TVP loss",
    "schedule": "learning-rate schedule of the natural phase",
    "tvp_schedule": "learning-rate schedule of the TVP phase",
}
_CHOICES = {"tvp_inject": ["task_mean", "row"], "schedule": ["constant", "cosine"],
            "tvp_schedule": ["constant", "cosine"]}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """``python -m nnvtv.adapters.toy.train_text``: train (``--out``) or rewrite cards (``--card-only``)."""
    p = argparse.ArgumentParser(description="Train the toy-text models (natural + TVP curriculum).")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--out", help="output folder; writes toy-text-natural/ and toy-text/")
    what.add_argument(
        "--card-only",
        metavar="DIR",
        help="no training: re-evaluate the weights in DIR (a model folder, or a folder holding "
        "toy-text-natural/ and toy-text/) and rewrite metrics.json and MODEL_CARD.md",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tvp-layer", type=int, default=1)
    for key, default in DEFAULTS.items():
        p.add_argument("--" + key.replace("_", "-"), type=type(default), default=default,
                       choices=_CHOICES.get(key), help=_HELP.get(key))  # fmt: skip
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = p.parse_args(argv)
    if args.card_only is not None:
        torch.set_num_threads(args.threads)
        for folder in text_card.model_folders(args.card_only):
            print(text_card.summary_line(text_card.write_card(folder)), flush=True)
        return 0
    command = "python -m nnvtv.adapters.toy.train_text " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    train_text(
        args.out, seed=args.seed, tvp_layer=args.tvp_layer, num_threads=args.threads,
        progress=_print_progress, command=command, **{k: getattr(args, k) for k in DEFAULTS},
    )  # fmt: skip
    for name in (NATURAL_NAME, TVP_NAME):
        print(text_card.summary_line(text_card.read_record(Path(args.out) / name)), flush=True)
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
