"""Differentiable losses where the task metric has none (issue 19): gradient strategies run on
every shipped toy, and the surrogate's gradient points the way the real metric goes.

* toy-text: the task loss (cross-entropy) is differentiable already;
* toy-visual (MAE-VQGAN): the readout decodes argmax codes, so the family's I/O offers a
  surrogate: cross-entropy of the answer patches' code logits against the VQGAN codes of the
  ground-truth answer cell in the canvas;
* toy-seggpt: the readout is continuous, the IoU metric thresholds it, so the visual task
  offers soft IoU on the readout.
"""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F

import nnvtv
from nnvtv.activations import mean_activations
from nnvtv.canvas import denormalize
from nnvtv.objective import MaskObjective
from nnvtv.surrogate import GradientLoss, gradient_loss
from nnvtv.tasks.base import cycle
from nnvtv.tasks.image_metrics import quantize

VISUAL_TOYS = ("toy-visual", "toy-seggpt")


@functools.cache
def _toy(name: str) -> nnvtv.Model:
    return nnvtv.load(name)


@functools.cache
def _setup(name: str) -> tuple[nnvtv.Model, object, MaskObjective]:
    """The toy, its default task, and the objective find builds (32 mean prompts, seed 0)."""
    model = _toy(name)
    task = nnvtv.tasks.get(nnvtv.catalog.entry(name).default_task)
    split = task.split(0)
    space = model.sites("head")
    icl = task.icl(model, cycle(split.train, 32), split.train, shots=task.default_shots, seed=0)
    means = mean_activations(model, icl.chunks(64), space)
    zs = task.zero_shot(model, split.train)
    objective = MaskObjective(model, zs.inputs, means, space, lambda out: task.loss(out, zs.targets),
                              gradient_loss=gradient_loss(model, task, zs.targets))  # fmt: skip
    return model, task, objective


@pytest.mark.parametrize(
    ("name", "source"),
    [("toy-text", "task loss"), ("toy-visual", "model surrogate"), ("toy-seggpt", "task surrogate")],
)
def test_each_toy_gets_a_differentiable_loss_from_its_io_or_its_task(name, source):
    model = _toy(name)
    task = nnvtv.tasks.get(nnvtv.catalog.entry(name).default_task)
    gl = gradient_loss(model, task, torch.zeros(1))
    assert isinstance(gl, GradientLoss) and gl.source == source and gl.description
    assert (gl.output_fn is not None) == (source == "model surrogate")  # only a family reads the raw output


@pytest.mark.parametrize("name", VISUAL_TOYS)
def test_the_surrogate_gradient_is_nonzero_and_points_the_way_the_real_metric_goes(name):
    model, task, objective = _setup(name)
    n = objective.n_sites
    loss0, grad = objective.value_and_grad(torch.zeros(1, n))
    g = grad[0]
    assert bool(torch.isfinite(g).all()) and int((g != 0).sum()) >= n // 2
    # the surrogate decreases along its own gradient (weights stay in [0, 1])
    step = (-g / g.abs().max() * 0.3).clamp(0, 1)
    loss1, _ = objective.value_and_grad(step[None])
    assert float(loss1) < float(loss0)
    # the sites the surrogate prefers help the REAL metric (exact patched forwards, task.loss):
    # measured on seed 0, 1 - IoU: toy-visual top-8 0.61 < none 0.74 < bottom-8 0.99;
    # toy-seggpt top-8 0.46 < none 0.61 < bottom-8 0.72
    order = torch.argsort(g)
    masks = torch.zeros(3, n, dtype=torch.bool)
    masks[1, order[:8]] = True
    masks[2, order[-8:]] = True
    none, top, bottom = objective(masks).tolist()
    assert top < none < bottom


def test_mae_vqgan_surrogate_is_the_cross_entropy_against_the_vqgan_codes_of_the_answer():
    task = nnvtv.tasks.get("segmentation")
    split = task.split(0)
    full, answer = nnvtv.load("toy-visual", readout="full"), _toy("toy-visual")
    assert answer.io.readout_mode == "answer" and full.io.readout_mode == "full"
    zs = task.zero_shot(answer, split.train[:4])
    logits = answer.run(zs.inputs)  # [4, M, V]: the answer readout's raw output
    codes = answer.module.target_codes(denormalize(zs.inputs.kwargs["imgs"]).clamp(0, 1))
    want = F.cross_entropy(logits.flatten(0, 1), codes.gather(1, zs.inputs.kwargs["target"]).flatten(), reduction="none")
    got = answer.io.surrogate_loss(logits, zs.inputs)
    torch.testing.assert_close(got, want.view(4, -1).mean(-1))
    # the same loss under the official full readout (logits at every slot, answer slots taken)
    zs_full = task.zero_shot(full, split.train[:4])
    torch.testing.assert_close(full.io.surrogate_loss(full.run(zs_full.inputs), zs_full.inputs), got, atol=1e-4, rtol=1e-4)
    # it measures the task: one-shot prompts score lower than zero-shot (2.75 vs 2.99 measured)
    gl = gradient_loss(answer, task, zs.targets)
    icl = task.icl(answer, split.train[:4], split.train, shots=1, seed=1)
    assert float(gl.per_query(answer, icl.inputs).mean()) < float(gl.per_query(answer, zs.inputs).mean())


def test_visual_task_surrogate_is_soft_iou_or_unrounded_mse():
    seg, low = nnvtv.tasks.get("segmentation"), nnvtv.tasks.get("low-light")
    target = torch.zeros(2, 3, 8, 8)
    target[0, :, 2:6, 2:6] = 1.0  # a white square; row 1: an empty mask
    right = seg.surrogate_loss(target[None], target)[0]
    wrong = seg.surrogate_loss(1 - target[None], target)[0]
    assert right.shape == (2,) and float(right.max()) < 0.01  # empty of empty scores like IoU 1
    assert float(wrong.min()) > 0.95
    readout = target.clone().requires_grad_(True)
    seg.surrogate_loss((readout * 0.9 + 0.05)[None], target).sum().backward()
    assert readout.grad is not None and bool(readout.grad.any())
    # MSE tasks: the metric itself, without the uint8 rounding
    pred = quantize(torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)))
    torch.testing.assert_close(low.surrogate_loss(pred, target), low.loss(pred, target))
    assert not bool((low.surrogate_loss(pred + 1e-3, target) == low.loss(pred + 1e-3, target)).all())
    assert seg.surrogate and low.surrogate == seg.surrogate


@pytest.mark.parametrize("name", VISUAL_TOYS)
@pytest.mark.parametrize(("strategy", "budget", "options"), [("attribution", 16, {}), ("gradient", 16, {"samples": 2, "checks": 4})])
def test_gradient_strategies_run_on_the_visual_toys(name, strategy, budget, options):
    result = nnvtv.find(_toy(name), strategy=strategy, budget=budget, **options)
    data = result.as_dict()
    assert data["gradient_rows"] >= 1 and 1 <= data["n_sites"] <= len(result.space)
    assert data["forward_passes"] == data["exact_rows"] + 3 * data["gradient_rows"] <= budget
    assert result.task_vector.meta["gradient_loss"]["source"] == ("model surrogate" if name == "toy-visual" else "task surrogate")
    assert result.scores.task_vector is not None  # held-out scores use the real metric
    assert result.task_vector.meta["mean_prompts"] == "random"


def test_cli_find_attribution_on_toy_visual():
    import json

    from typer.testing import CliRunner

    from nnvtv.cli import app

    res = CliRunner().invoke(app, ["find", "--model", "toy-visual", "--strategy", "attribution", "--budget", "12", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["strategy"] == "attribution" and data["gradient_rows"] == 1 and data["n_sites"] >= 1
