"""Plain-torch evaluation of ``toy-text`` models (the numbers in the model cards).

* :func:`icl_accuracy`: top-1 accuracy of the answer token with ``k`` demonstrations, queries
  ``s16`` .. ``s31`` (held out of the query slot in training), demos any other symbol.
* :func:`task_means`: per task, the mean over ICL prompts (``k`` demos, queries ``s00`` ..
  ``s15``) of every block output and every head output at the last token.
* :func:`residual_tv_accuracy`: zero-shot prompts whose last-token output of block ``l`` is
  replaced by the task's mean (Hendel et al. task vectors), per layer.
* :func:`greedy_head_search`: greedily add the head whose last-token output, replaced by the task's
  ICL mean in the zero-shot pass, raises accuracy most; heads are *selected* on the training
  queries ``s00`` .. ``s15`` and *reported* on the held-out queries ``s16`` .. ``s31``.

Accuracy is the argmax over the whole vocabulary, averaged over the tasks (equal weight).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from .text_data import (
    EVAL_QUERY_SYMBOLS,
    N_SYMBOLS,
    TOY_TASK_NAMES,
    TRAIN_QUERY_SYMBOLS,
    ToyTextBatch,
    ToyTextGenerator,
    _collate,
    prompt_ids,
)
from .text_model import run_gpt2


def _task_index(tasks) -> list[int]:
    names = TOY_TASK_NAMES if tasks is None else tasks
    return [TOY_TASK_NAMES.index(t) for t in names]


def icl_batch(task_ids: list[int], k: int, queries, n_per_query: int, seed: int) -> ToyTextBatch:
    """Every (task, query) pair ``n_per_query`` times with ``k`` random distinct demos."""
    rng = np.random.default_rng(seed)
    rows, ts, ks, qs = [], [], [], []
    reps = 1 if k == 0 else n_per_query
    for t in task_ids:
        for q in queries:
            for _ in range(reps):
                others = np.delete(np.arange(N_SYMBOLS), q)
                rows.append(prompt_ids(rng.permutation(others)[:k], t, q))
                ts.append(t)
                ks.append(k)
                qs.append(q)
    return _collate(rows, ts, ks, qs)


def _last_token_correct(model, batch: ToyTextBatch, **patch) -> torch.Tensor:
    logits = run_gpt2(model, batch.input_ids, pos=batch.last_pos, **patch).logits
    pred = logits[torch.arange(len(batch.last_pos)), batch.last_pos].argmax(-1)
    target = batch.labels[torch.arange(len(batch.last_pos)), batch.last_pos]
    return pred == target


def _per_task(correct: torch.Tensor, task_ids: torch.Tensor, tasks: list[int]) -> dict[str, float]:
    return {TOY_TASK_NAMES[t]: float(correct[task_ids == t].float().mean()) for t in tasks}


def _summary(per_task: dict[str, float]) -> dict:
    return {"mean": float(np.mean(list(per_task.values()))), "per_task": per_task}


@torch.no_grad()
def icl_accuracy(
    model, k: int, *, tasks=None, queries=EVAL_QUERY_SYMBOLS, n_per_query: int = 8, seed: int = 1234
) -> dict:
    """``{"mean": acc, "per_task": {task: acc}}`` with ``k`` demos (``k = 0``: zero-shot)."""
    tids = _task_index(tasks)
    batch = icl_batch(tids, k, queries, n_per_query, seed + k)
    correct = _last_token_correct(model, batch)
    return _summary(_per_task(correct, batch.task_ids, tids))


@torch.no_grad()
def task_means(
    model,
    *,
    tasks=None,
    k: int = 5,
    n_prompts: int = 50,
    queries=TRAIN_QUERY_SYMBOLS,
    seed: int = 99,
) -> dict[str, torch.Tensor]:
    """Per-task means at the last token: ``resid`` (n_tasks, L, d), ``heads`` (n_tasks, L, H, hd)."""
    tids = _task_index(tasks)
    gen = ToyTextGenerator(seed, min_demos=k, max_demos=k, query_symbols=queries)
    resid, heads = [], []
    for t in tids:
        b = gen.sample(n_prompts, task_ids=[t] * n_prompts)
        out = run_gpt2(model, b.input_ids, capture=True)
        rows = torch.arange(n_prompts)
        resid.append(torch.stack([r[rows, b.last_pos].mean(0) for r in out.resid]))
        heads.append(torch.stack([a[rows, b.last_pos].mean(0) for a in out.heads]))
    return {
        "resid": torch.stack(resid),
        "heads": torch.stack(heads),
        "task_ids": torch.tensor(tids),
    }


def _zero_shot(tids: list[int], queries) -> ToyTextBatch:
    return icl_batch(tids, 0, queries, 1, 0)


@torch.no_grad()
def residual_tv_accuracy(
    model, means: dict[str, torch.Tensor], *, layers=None, queries=EVAL_QUERY_SYMBOLS
) -> dict[int, dict]:
    """Per layer: accuracy of zero-shot prompts with the last-token block output := task mean."""
    tids = means["task_ids"].tolist()
    zs = _zero_shot(tids, queries)
    row_task = torch.tensor([tids.index(int(t)) for t in zs.task_ids])
    n_layers = means["resid"].shape[1]
    out = {}
    for layer in range(n_layers) if layers is None else layers:
        values = means["resid"][row_task, layer]
        correct = _last_token_correct(model, zs, resid_patch={layer: values})
        out[layer] = _summary(_per_task(correct, zs.task_ids, tids))
    return out


@torch.no_grad()
def head_patch_accuracy(
    model,
    means: dict[str, torch.Tensor],
    heads: list[tuple[int, int]],
    *,
    queries=EVAL_QUERY_SYMBOLS,
) -> dict:
    """Accuracy of zero-shot prompts with the given (layer, head) outputs := task ICL means."""
    tids = means["task_ids"].tolist()
    zs = _zero_shot(tids, queries)
    correct = _heads_correct(model, means, zs, tids, [heads])[0]
    return _summary(_per_task(correct, zs.task_ids, tids))


def _heads_correct(model, means, zs: ToyTextBatch, tids, head_sets) -> list[torch.Tensor]:
    """Evaluate several head sets in one batched forward; returns a correctness vector per set."""
    n_sets, n = len(head_sets), len(zs.task_ids)
    L, H = means["heads"].shape[1:3]
    row_task = torch.tensor([tids.index(int(t)) for t in zs.task_ids]).repeat(n_sets)
    mask = torch.zeros(n_sets, L, H, dtype=torch.bool)
    for s, hs in enumerate(head_sets):
        for layer, head in hs:
            mask[s, layer, head] = True
    mask = mask.repeat_interleave(n, dim=0)  # (n_sets * n, L, H)
    patch = {layer: (mask[:, layer], means["heads"][row_task, layer]) for layer in range(L)}
    rep = ToyTextBatch(
        input_ids=zs.input_ids.repeat(n_sets, 1),
        attention_mask=zs.attention_mask.repeat(n_sets, 1),
        labels=zs.labels.repeat(n_sets, 1),
        last_pos=zs.last_pos.repeat(n_sets),
        task_ids=zs.task_ids.repeat(n_sets),
        n_demos=zs.n_demos.repeat(n_sets),
        queries=zs.queries.repeat(n_sets),
    )
    correct = _last_token_correct(model, rep, head_patch=patch)
    return list(correct.view(n_sets, n))


@torch.no_grad()
def greedy_head_search(
    model,
    means: dict[str, torch.Tensor],
    *,
    max_heads: int = 4,
    select_queries=TRAIN_QUERY_SYMBOLS,
    eval_queries=EVAL_QUERY_SYMBOLS,
) -> list[dict]:
    """Greedy forward selection of heads (replace mode, last token).

    Returns one entry per step: ``{"n_heads", "heads": [[layer, head], ...], "select_acc",
    "eval_acc", "eval_per_task"}``.
    """
    tids = means["task_ids"].tolist()
    L, H = means["heads"].shape[1:3]
    zs_sel = _zero_shot(tids, select_queries)
    chosen: list[tuple[int, int]] = []
    steps = []
    for _ in range(max_heads):
        cands = [(lh // H, lh % H) for lh in range(L * H) if (lh // H, lh % H) not in chosen]
        accs = [
            float(c.float().mean())
            for c in _heads_correct(model, means, zs_sel, tids, [chosen + [c] for c in cands])
        ]
        best = int(np.argmax(accs))  # first best: ties go to the earlier (lower) head
        chosen = chosen + [cands[best]]
        ev = head_patch_accuracy(model, means, chosen, queries=eval_queries)
        steps.append(
            {
                "n_heads": len(chosen),
                "heads": [list(h) for h in chosen],
                "select_acc": accs[best],
                "eval_acc": ev["mean"],
                "eval_per_task": ev["per_task"],
            }
        )
    return steps


@torch.no_grad()
def evaluate_toy_text(model, *, tvp_layer: int = 1, max_heads: int = 4, seed: int = 1234) -> dict:
    """All model-card metrics (a few seconds on CPU)."""
    t0 = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        icl = {k: icl_accuracy(model, k, seed=seed) for k in range(0, 7)}
        means = task_means(model)
        rtv = residual_tv_accuracy(model, means)
        L, H = means["heads"].shape[1:3]
        all_heads = head_patch_accuracy(model, means, [(a, b) for a in range(L) for b in range(H)])
        greedy = greedy_head_search(model, means, max_heads=max_heads)
    finally:
        model.train(was_training)
    icl5 = icl[5]["mean"]
    return {
        "icl_1shot": icl[1]["mean"],
        "icl_5shot": icl5,
        "zero_shot": icl[0]["mean"],
        "icl_by_shots": {str(k): v["mean"] for k, v in icl.items()},
        "icl_per_task": {str(k): v["per_task"] for k, v in icl.items()},
        "residual_tv_by_layer": {str(k): v["mean"] for k, v in rtv.items()},
        "residual_tv_per_task": {str(k): v["per_task"] for k, v in rtv.items()},
        "residual_tv_at_tvp_layer": rtv[tvp_layer]["mean"],
        "all_heads_replaced": all_heads["mean"],
        "greedy_heads": greedy,
        "greedy_curve": [s["eval_acc"] for s in greedy],
        "greedy_recovery_of_icl5": [s["eval_acc"] / icl5 if icl5 > 0 else 0.0 for s in greedy],
        "eval_setup": {
            "accuracy": "top-1 over the full vocabulary at the last token, mean over tasks",
            "eval_queries": "s16..s31 (each task x query, 8 random demo sets for k > 0)",
            "means": "50 five-shot ICL prompts per task, queries s00..s15, last token",
            "greedy_selection_queries": "s00..s15 (zero-shot); reported on s16..s31",
            "patch": "replace, last token",
            "tvp_layer": tvp_layer,
        },
        "eval_seconds": round(time.perf_counter() - t0, 2),
    }
