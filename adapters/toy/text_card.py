"""The toy-text models' evaluation record and model cards, measured by the library itself.

Every number of a card comes from :func:`evaluate_toy_text`, which runs nnvtv's public API on
the registered symbol tasks ``toy-copy`` .. ``toy-perm_c`` (held-out queries ``s16`` ..
``s31``, demonstrations and means from the train queries ``s00`` .. ``s15``):

* ``nnvtv.evaluate(model, task, shots=k, seed=0)``: zero-shot and ``k``-shot ICL accuracy;
* ``nnvtv.recipes.layer_sweep(model, task, ...)``: the residual task vector at every block
  (Hendel et al.: the last-token block output := its mean over ICL prompts);
* ``nnvtv.find(model, task, strategy="greedy", sites="head", ...)``: a head search (selected on
  the zero-shot train queries, scored on the held-out ones); its means also give "all 16 heads
  replaced" and the held-out accuracy after each greedy addition.

A model folder's ``metrics.json`` holds the record (training part from the trainer, optional
``notes`` (strings, e.g. how the weights were reproduced), ``metrics`` from here) and
``MODEL_CARD.md`` is :func:`model_card` of that record, nothing else.
:func:`write_card` (re)writes both for a folder without retraining::

    python -m nnvtv.adapters.toy.train_text --card-only adapters/toy/weights
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

import nnvtv

from .catalog import load_toy_text
from .text_data import (
    DEMO_TEMPLATE,
    EVAL_QUERY_SYMBOLS,
    QUERY_TEMPLATE,
    SEPARATOR,
    SYMBOLS,
    TOY_TASK_NAMES,
    TOY_TASKS,
    TRAIN_QUERY_SYMBOLS,
)
from .text_model import TOY_TEXT_CONFIG

__all__ = [
    "NATURAL_NAME",
    "TVP_NAME",
    "TASKS",
    "SETUP",
    "evaluate_toy_text",
    "evaluate_task",
    "model_card",
    "model_folders",
    "read_record",
    "summary_line",
    "write_card",
    "write_record",
]

NATURAL_NAME = "toy-text-natural"
TVP_NAME = "toy-text"
#: the registered symbol tasks the cards are measured on
TASKS: tuple[str, ...] = tuple(f"toy-{t}" for t in TOY_TASK_NAMES)
#: how the card numbers are measured (stored in the record as ``metrics.setup``)
SETUP: dict[str, Any] = dict(
    seed=0,
    shots=[1, 2, 3, 4, 5, 6],
    mean_shots=5,
    n_mean_prompts=64,
    strategy="greedy",
    budget=256,
    group="last",
    mode="replace",
    threads=1,
)


def _score(model: nnvtv.Model, task: nnvtv.tasks.Task, batch: nnvtv.tasks.TaskBatch,
           patch: nnvtv.Patch | None = None) -> float:  # fmt: skip
    """Mean task metric of ``batch`` (``N`` prompts, one forward), optionally patched."""
    out = model.run(batch.inputs, patch, readout=True)  # [N, vocab] next-token logits
    return float(task.score(out, batch.targets).mean())


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def evaluate_task(model: nnvtv.Model, task: str, setup: dict[str, Any] = SETUP) -> dict[str, Any]:
    """One task's card numbers (accuracy in [0, 1], held-out queries).

    Returns:
        ``{"zero_shot", "icl": {k: acc}, "residual_tv": [acc per block], "all_heads",
        "search": {"sites", "accuracy", "order", "curve", "forward_passes", ...}}``.
    """
    seed, k_means = setup["seed"], setup["mean_shots"]
    scores = {k: nnvtv.evaluate(model, task, shots=k, seed=seed) for k in setup["shots"]}
    sweep = nnvtv.recipes.layer_sweep(
        model, task, shots=k_means, n_mean_prompts=setup["n_mean_prompts"], seed=seed
    )
    found = nnvtv.find(
        model, task, strategy=setup["strategy"], budget=setup["budget"], seed=seed,
        shots=k_means, sites="head", groups=[setup["group"]], mode=setup["mode"],
        n_mean_prompts=setup["n_mean_prompts"],
    )  # fmt: skip
    t = nnvtv.tasks.get(task)
    zs = t.zero_shot(model, t.split(seed).test)
    order = [found.space[i] for i in found.run.extra.get("order", [])]
    curve = [_score(model, t, zs, found.means.patch(order[: i + 1])) for i in range(len(order))]
    return {
        "zero_shot": scores[k_means].zero_shot,
        "icl": {str(k): s.icl for k, s in scores.items()},
        "n_queries": scores[k_means].n_queries,
        "residual_tv": list(sweep.accuracy),
        "all_heads": _score(model, t, zs, found.means.patch()),
        "search": {
            "sites": [str(s) for s in found.task_vector.sites],
            "accuracy": found.scores.task_vector,
            "order": [str(s) for s in order],
            "curve": curve,
            "forward_passes": found.forward_passes,
            "stop_reason": found.run.stop_reason,
        },
    }


def evaluate_toy_text(model: nnvtv.Model, setup: dict[str, Any] = SETUP) -> dict[str, Any]:
    """Every card number of a wrapped toy-text model (a few CPU seconds): per task
    (:func:`evaluate_task`) and their means over the tasks, plus ``setup`` and timing.

    Runs on ``setup["threads"]`` torch threads (restored afterwards), so a record measured
    inside a training run and one measured by the tests or ``--card-only`` agree exactly.
    """
    t0, c0 = time.perf_counter(), time.process_time()
    threads = torch.get_num_threads()
    torch.set_num_threads(setup["threads"])
    try:
        per_task = {task: evaluate_task(model, task, setup) for task in TASKS}
    finally:
        torch.set_num_threads(threads)
    rows = list(per_task.values())
    n_layers = len(rows[0]["residual_tv"])
    n_sites = [len(r["search"]["sites"]) for r in rows]
    by_layer: dict[str, int] = {str(i): 0 for i in range(n_layers)}
    for r in rows:
        for s in r["search"]["sites"]:
            by_layer[str(nnvtv.Site.parse(s).layer)] += 1
    versions = {"nnvtv": nnvtv.__version__, "torch": torch.__version__, "python": platform.python_version()}
    return {
        "setup": {
            **setup,
            "tasks": list(TASKS),
            "versions": versions,
            "seconds": round(time.perf_counter() - t0, 1),
            "cpu_seconds": round(time.process_time() - c0, 1),
        },
        "mean": {
            "zero_shot": _mean([r["zero_shot"] for r in rows]),
            "icl": {k: _mean([r["icl"][k] for r in rows]) for k in rows[0]["icl"]},
            "residual_tv": [_mean([r["residual_tv"][i] for r in rows]) for i in range(n_layers)],
            "all_heads": _mean([r["all_heads"] for r in rows]),
            "search_accuracy": _mean([r["search"]["accuracy"] for r in rows]),
            "search_n_sites": _mean([float(n) for n in n_sites]),
            "search_sites_by_layer": by_layer,
        },
        "tasks": per_task,
    }


def read_record(folder: str | Path) -> dict[str, Any]:
    """The record (``metrics.json``) of a model folder."""
    return json.loads((Path(folder) / "metrics.json").read_text())


def write_record(folder: str | Path, record: dict[str, Any]) -> Path:
    """Write ``record`` to ``folder/metrics.json``."""
    path = Path(folder) / "metrics.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


def write_card(folder: str | Path, record: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate the weights in ``folder`` and write ``metrics.json`` + ``MODEL_CARD.md``.

    Args:
        folder: a toy-text model folder (weights, config, tokenizer).
        record: its training record (the trainer's); default: the folder's ``metrics.json``,
            whose training part is kept and whose ``metrics`` are measured again.

    Returns:
        The record written.
    """
    folder = Path(folder)
    record = dict(read_record(folder) if record is None else record)
    model = load_toy_text(record["model"], folder)
    record["metrics"] = evaluate_toy_text(model)
    write_record(folder, record)
    (folder / "MODEL_CARD.md").write_text(model_card(record))
    return record


def model_folders(path: str | Path) -> list[Path]:
    """``path`` itself if it holds a ``metrics.json``, else its ``toy-text-natural/`` and
    ``toy-text/`` subfolders that do (a trainer's ``--out``)."""
    path = Path(path)
    if (path / "metrics.json").exists():
        return [path]
    found = [path / n for n in (NATURAL_NAME, TVP_NAME) if (path / n / "metrics.json").exists()]
    if not found:
        raise FileNotFoundError(f"no metrics.json in {path} or in its {NATURAL_NAME}/, {TVP_NAME}/")
    return found


def summary_line(record: dict[str, Any]) -> str:
    """One line of a record's headline numbers (mean over tasks)."""
    m = record["metrics"]["mean"]
    rtv = " ".join(f"{v:.2f}" for v in m["residual_tv"])
    return (
        f"{record['model']}: icl5 {m['icl']['5']:.3f} icl1 {m['icl']['1']:.3f} zero-shot "
        f"{m['zero_shot']:.3f} residual-TV by block [{rtv}] all-heads {m['all_heads']:.3f} "
        f"greedy {m['search_accuracy']:.3f} with {m['search_n_sites']:.1f} heads"
    )


def _fmt(x: float) -> str:
    return f"{x:.3f}"


def _short(site: str) -> str:
    """``"L1.H0@last"`` -> ``"L1H0"``."""
    return site.split("@")[0].replace(".", "")


def _what(rec: dict[str, Any]) -> str:
    hp = rec["hparams"]
    if rec["kind"] != "tvp":
        return (
            f"**Naturally trained.** {hp['natural_steps']} steps of plain next-answer training on "
            f"random ICL prompts, nothing else. How (and how locally) it encodes the task is "
            f"whatever training found; expect weak, non-local task vectors (Yang et al. 2025). "
            f"Its TVP-curriculum sibling, where the task is prescribed to a place, is `{TVP_NAME}`."
        )
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
    return (
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


def _training(rec: dict[str, Any]) -> str:
    hp, tm, v = rec["hparams"], rec["timing"], rec["versions"]
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
        if rec["kind"] == "tvp"
        else ""
    )
    notes = "".join(f"\n- {n}" for n in rec.get("notes", []))
    return f"""- command: `{rec["command"]}`
- every forward through the library's site definition (`nnvtv.wrap`; the ICL pass is
  `Model.capture(..., grad=True)`, the TVP passes `Model.run(..., nnvtv.Patch(...), grad=True)`)
- seed {hp["seed"]}; batch {hp["batch_size"]}; AdamW (betas 0.9, 0.98), weight decay
  {hp["weight_decay"]}, grad clip 1.0, {hp["warmup"]} warm-up steps per phase; `cosine` decays
  to 10% of the peak lr
- natural phase: {hp["natural_steps"]} steps, lr {hp["lr"]} ({hp.get("schedule", "cosine")})
{tvp_line}- time: {tm["train_seconds"]} s wall, {tm["train_cpu_seconds"]} s CPU (process time, summed over
  threads) for training ({phases}); {v["threads"]} torch threads on a 2-core
  machine; torch {v["torch"]}, transformers {v["transformers"]};
  evaluation and saving excluded
- config: `{json.dumps(TOY_TEXT_CONFIG)}`{notes}"""


def _metrics(rec: dict[str, Any]) -> str:
    m, hp = rec["metrics"], rec["hparams"]
    su, mean, tasks = m["setup"], m["mean"], m["tasks"]
    k = str(su["mean_shots"])
    shots = " / ".join([f"0: {_fmt(mean['zero_shot'])}"] + [f"{s}: {_fmt(v)}" for s, v in mean["icl"].items()])
    rtv = " / ".join(f"block {i}: {_fmt(v)}" for i, v in enumerate(mean["residual_tv"]))
    layers = ", ".join(f"block {i}: {n}" for i, n in mean["search_sites_by_layer"].items())
    rows = []
    for name, r in tasks.items():
        s = r["search"]
        best = max(range(len(r["residual_tv"])), key=lambda i: (r["residual_tv"][i], -i))
        order = ", ".join(_short(x) for x in s["order"]) or "(none)"
        curve = " / ".join(_fmt(x) for x in s["curve"]) or "-"
        rows.append(
            f"| `{name}` | {_fmt(r['zero_shot'])} | {_fmt(r['icl']['1'])} | {_fmt(r['icl'][k])} | "
            f"{_fmt(r['residual_tv'][best])} (block {best}) | {_fmt(r['all_heads'])} | {order} | "
            f"{curve} | **{_fmt(s['accuracy'])}** |"
        )
    table = "\n".join(rows)
    args = f"seed={su['seed']}"
    return f"""## Metrics (measured by nnvtv on the registered tasks `{su["tasks"][0]}` .. `{su["tasks"][-1]}`)

Top-1 accuracy of the answer token over the full vocabulary on the {tasks[su["tasks"][0]]["n_queries"]}
held-out queries of each task (s16..s31); ICL demonstrations come from the train queries
(s00..s15); means are taken at the last token of {su["n_mean_prompts"]} ICL prompts ({k} shots) on the
train queries. Means over the {len(tasks)} tasks:

- ICL {k}-shot **{_fmt(mean["icl"][k])}**, 1-shot **{_fmt(mean["icl"]["1"])}**, zero-shot
  **{_fmt(mean["zero_shot"])}** (chance ~{_fmt(1 / len(tasks))} if it guesses one task);
  with {hp["max_demos"] + 1} demos (never trained): {_fmt(mean["icl"].get(str(hp["max_demos"] + 1), float("nan")))}
- by number of shots (`nnvtv.evaluate(model, task, shots=k, {args})`): {shots}
- residual task vector (`nnvtv.recipes.layer_sweep(model, task, shots={k}, n_mean_prompts={su["n_mean_prompts"]}, {args})`:
  the last-token output of block l := its ICL mean, in the zero-shot pass): {rtv}
- all 16 head outputs replaced by their ICL means: {_fmt(mean["all_heads"])}
- head search (`nnvtv.find(model, task, strategy="{su["strategy"]}", sites="head", groups=["{su["group"]}"],
  mode="{su["mode"]}", budget={su["budget"]}, shots={k}, n_mean_prompts={su["n_mean_prompts"]}, {args})`: heads added
  while the cross-entropy on the zero-shot train queries drops, scored on the held-out ones):
  **{_fmt(mean["search_accuracy"])}** with {mean["search_n_sites"]:.2f} heads on average; heads
  found per block over the {len(tasks)} tasks: {layers}

| task | zero-shot | ICL 1 | ICL {k} | residual TV (best block) | all heads | greedy heads (in order) | held-out after each | task vector |
|---|---|---|---|---|---|---|---|---|
{table}

Measured in {su["seconds"]} s ({su["cpu_seconds"]} s CPU, {su["threads"]} torch thread(s)) by
`nnvtv.adapters.toy.text_card.evaluate_toy_text` (nnvtv {su["versions"]["nnvtv"]}); full detail in
`metrics.json`. Rewrite with `python -m nnvtv.adapters.toy.train_text --card-only DIR`."""


def model_card(record: dict[str, Any]) -> str:
    """``MODEL_CARD.md`` of a record (``metrics.json``), from the record alone."""
    hp = record["hparams"]
    tasks = "\n".join(
        f"| `{t}` | " + ", ".join(f"{x}->{y}" for x, y in list(TOY_TASKS[t].items())[:4]) + ", ... |"
        for t in TOY_TASKS
    )
    first, last = SYMBOLS[TRAIN_QUERY_SYMBOLS[0]], SYMBOLS[TRAIN_QUERY_SYMBOLS[-1]]
    efirst, elast = SYMBOLS[EVAL_QUERY_SYMBOLS[0]], SYMBOLS[EVAL_QUERY_SYMBOLS[-1]]
    return f"""# {record["model"]}

{_what(record)}

A tiny GPT-2 (`GPT2LMHeadModel`) trained from scratch by `nnvtv` on in-context tasks over 32
symbols. Shipped as package data of `nnvtv.adapters.toy`; loads offline with
`nnvtv.load("{record["model"]}")`, or `GPT2LMHeadModel.from_pretrained(dir)` and
`AutoTokenizer.from_pretrained(dir)`.

## Prompt format

`<bos> x1 -> y1 ; x2 -> y2 ; ... ; q ->` and the answer is the next token `task(q)`.
Text templates: demo `{DEMO_TEMPLATE!r}`, query `{QUERY_TEMPLATE!r}`, separator `{SEPARATOR!r}`;
the tokenizer (WordLevel, whitespace split) prepends `<bos>`. Symbols `{SYMBOLS[0]}`..`{SYMBOLS[-1]}`.

**At most {hp["max_demos"]} demonstrations.** Training prompts hold 0..{hp["max_demos"]} demos
({3 + 4 * hp["max_demos"]} tokens at most), so later positions are untrained. Build prompts with
<= {hp["max_demos"]} demos for this model.

## Tasks (fixed bijections, `nnvtv.adapters.toy.text_data.TOY_TASKS`; registered as `toy-<task>`)

| task | first pairs |
|---|---|
{tasks}

## Data generator and split

`ToyTextGenerator` (numpy `default_rng`, seeded): random task, k demos with k uniform in
0..{hp["max_demos"]} (one k per batch, so no padding), distinct inputs; loss on every answer
token (each demo output and the query output). Training queries (the final slot) are
{first}..{last}; all metrics below use held-out queries {efirst}..{elast} (demonstrations use any
symbol, so the task maps themselves are all seen in training: ICL here is task
identification). TVP phase: ICL prompts with k in 1..{hp["max_demos"]} and queries from the
training half; its zero-shot prompts use all 32 symbols as queries (trained on the training
half only, the injected vector did not transfer to held-out queries: 1.00 vs 0.01), so the
held-out queries are *not* held out of the TVP loss.

## Training

{_training(record)}

{_metrics(record)}
"""
