"""Task-vector-prompting (TVP) losses of the toy-text curriculum, through the library's sites.

The toy GPT-2 is wrapped once (:func:`wrap_for_training`); an ICL batch runs through
:meth:`nnvtv.Model.capture` (logits + the activations of :func:`tvp_sites`, with their graph)
and :func:`tvp_losses` writes those activations into zero-shot prompts with
:meth:`nnvtv.Model.run` and an :class:`nnvtv.Patch` (``grad=True``), so the losses train the
model through exactly the sites a search later patches: head outputs (``head_dim`` slices of
the input of ``attn.c_proj``) and the residual stream (block outputs), at the last token.

The captured positions are gathered after the forward and patches are written with the same
operations as the hand-written GPT-2 forward the shipped weights were first trained with, so
losses and gradients are bitwise the same: retraining through these functions reproduces the
shipped ``toy-text-natural`` and ``toy-text`` weights byte for byte (2 torch threads; the
thread count changes float reduction order).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import nnvtv

from .text_data import ToyTextBatch, ToyTextGenerator, build_tokenizer
from .text_model import TOY_TEXT_CONFIG

__all__ = ["GROUP", "icl_loss", "model_inputs", "tvp_losses", "tvp_sites", "wrap_for_training"]

GROUP = "last"


def wrap_for_training(gpt2: torch.nn.Module) -> nnvtv.Model:
    """Wrap a toy GPT-2 once for training (no validation forward) and put it back in train mode."""
    model = nnvtv.wrap(gpt2, build_tokenizer(TOY_TEXT_CONFIG["n_positions"]), validate=False)
    gpt2.train()  # wrap puts it in eval mode; the toy has no dropout, so only the flag changes
    return model


def model_inputs(batch: ToyTextBatch) -> nnvtv.ModelInputs:
    """The generator's right-padded batch as library inputs: ``input_ids [B, T]`` (no attention
    mask: attention is causal, so real tokens never see the padding) and group ``last`` at
    ``last_pos [B]``."""
    return nnvtv.ModelInputs(
        kwargs={"input_ids": batch.input_ids}, positions={"": {GROUP: batch.last_pos[:, None]}}
    )


def icl_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of every answer: ``logits [B, T, V]``, ``labels [B, T]`` (-100: none)."""
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)


def _group_mean(x: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Replace each row of ``x [n, ...]`` by the mean of the rows in its group (``groups [n]``)."""
    onehot = F.one_hot(groups, int(groups.max()) + 1).to(x.dtype)  # (n, g)
    flat = x.reshape(len(x), -1)
    means = (onehot.T @ flat) / onehot.sum(0).clamp_min(1.0)[:, None]
    return means[groups].reshape(x.shape)


def tvp_sites(tvp_layer: int, n_heads: int) -> list[nnvtv.Site]:
    """The ICL-pass sites the TVP losses read: the residual after block ``tvp_layer``, then every
    head output of blocks ``0..tvp_layer`` (all at the last token)."""
    heads = [nnvtv.Site(li, h, GROUP) for li in range(tvp_layer + 1) for h in range(n_heads)]
    return [nnvtv.Site(tvp_layer, None, GROUP), *heads]


def tvp_losses(
    model: nnvtv.Model,
    batch: ToyTextBatch,
    acts: dict[nnvtv.Site, torch.Tensor],
    zgen: ToyTextGenerator,
    tvp_layer: int,
    *,
    inject: str = "task_mean",
    weights: dict[str, float],
    rng: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Task-vector-prompting losses: ICL last-token activations written into zero-shot prompts.

    Args:
        model: the wrapped toy GPT-2 (:func:`wrap_for_training`).
        batch: the ICL batch (``B`` rows) whose activations ``acts`` holds.
        acts: ``{site: [B, 1, width]}`` from :meth:`nnvtv.Model.capture` with the graph, for
            :func:`tvp_sites` (``width`` = 128 for the residual, 32 for a head).
        zgen: source of zero-shot prompts (``<bos> q ->``).
        tvp_layer: the block whose output carries the task.
        inject: ``"row"`` (each row's own vectors) or ``"task_mean"`` (the mean over the batch's
            ICL rows of the same task, what the evaluation patches in).
        weights: ``{"replace" | "add" | "heads": weight}``; a loss with weight 0 is not computed.
        rng: draws the random half of heads (``"heads"``).

    Returns:
        ``{name: scalar loss}``: the cross-entropy of ``task(q)`` at the zero-shot prompt's last
        token, with (``"replace"``) the zero-shot output of block ``tvp_layer`` := the ICL vector
        (Hendel et al. task vectors; the prescribed ground truth); (``"add"``) that output +=
        ICL vector - its mean over all rows, so the answer must follow the task-specific part,
        not a generic "in-context" signal; (``"heads"``) a random half of the head outputs of
        blocks ``0..tvp_layer`` := the ICL head outputs, so partial information must suffice.
    """
    use = batch.n_demos > 0
    rows = torch.nonzero(use).squeeze(1)
    losses: dict[str, torch.Tensor] = {}
    if len(rows) == 0:
        return losses
    tasks = batch.task_ids[rows]
    if inject not in ("row", "task_mean"):
        raise ValueError(f"inject must be 'row' or 'task_mean', got {inject!r}")

    def agg(x: torch.Tensor) -> torch.Tensor:
        return _group_mean(x, tasks) if inject == "task_mean" else x

    resid = nnvtv.Site(tvp_layer, None, GROUP)
    vec = agg(acts[resid][rows, 0])  # (n, d), keeps the graph
    zs = zgen.sample(
        len(rows), task_ids=tasks.tolist(), n_demos=0, exclude=batch.queries[rows].tolist()
    )
    zin = model_inputs(zs)
    idx = torch.arange(len(rows))
    target = zs.labels[idx, zs.last_pos]

    def answer_loss(patch: nnvtv.Patch) -> torch.Tensor:
        logits = model.run(zin, patch, grad=True).logits
        return F.cross_entropy(logits[idx, zs.last_pos], target)

    if weights.get("replace", 0.0):
        losses["replace"] = answer_loss(nnvtv.Patch({resid: vec[:, None]}, mode="replace"))
    if weights.get("add", 0.0):
        delta = vec - vec.mean(0, keepdim=True)
        losses["add"] = answer_loss(nnvtv.Patch({resid: delta[:, None]}, mode="add"))
    if weights.get("heads", 0.0):
        n_heads = model.n_heads
        keep = torch.rand(len(rows), tvp_layer + 1, n_heads, generator=rng) < 0.5
        values: dict[nnvtv.Site, torch.Tensor] = {}
        which: dict[nnvtv.Site, torch.Tensor] = {}
        for li in range(tvp_layer + 1):
            sites = [nnvtv.Site(li, h, GROUP) for h in range(n_heads)]
            heads = agg(torch.stack([acts[s] for s in sites], dim=2)[rows, 0])  # (n, H, hd)
            for h, s in enumerate(sites):
                values[s], which[s] = heads[:, h][:, None], keep[:, li, h]
        losses["heads"] = answer_loss(nnvtv.Patch(values, mode="replace", rows=which))
    return losses
