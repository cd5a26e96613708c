"""Figures of the LLM recipes: accuracy per layer, CIE heatmap (:mod:`nnvtv.figures` style).

The ``*_figure`` functions return a :class:`nnvtv.figures.Figure` (what ``sweep.plot()`` and
``function_vector.plot()`` return; it shows itself in Jupyter); ``plot_*`` write files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from nnvtv.errors import EmptyDataError, ShapeMismatchError
from nnvtv.figures import Figure, save_figure

if TYPE_CHECKING:  # the figures read the results' fields only (the results' own plot() call here)
    from nnvtv.recipes.function_vectors import FunctionVector
    from nnvtv.recipes.layer_sweeps import LayerSweep
    from nnvtv.sites import Site

__all__ = ["plot_cie", "plot_layer_sweep", "layer_sweep_figure", "cie_figure", "function_vector_figure"]


def _ticks(n: int, most: int = 16) -> list[int]:
    return list(range(0, n, max(1, -(-n // most))))


def draw_layer_sweep(ax: object, sweeps: Sequence[LayerSweep], fvs: Sequence[FunctionVector] = ()) -> None:
    """Accuracy against layer on ``ax``: one solid line per sweep, a dotted one per function vector."""
    fv_of = {f.task: f for f in fvs}
    right = 0
    for i, s in enumerate(sweeps):
        color = f"C{i % 10}"
        ax.plot(s.layers, s.accuracy, "-o", ms=3, color=color, label=f"{s.task} (ICL {s.icl:.2f}, zero-shot {s.zero_shot:.2f})")
        ax.plot([s.layers[-1] + 0.8], [s.icl], "<", color=color, ms=6)
        right = max(right, s.layers[-1] + 1)
        f = fv_of.get(s.task)
        if f is not None and f.layer_accuracy:
            ax.plot(range(len(f.layer_accuracy)), f.layer_accuracy, ":", color=color, lw=1.2)
    ax.set_xlabel("layer (block output patched at the last token)")
    ax.set_ylabel("held-out zero-shot accuracy")
    ax.set_xticks(_ticks(right))
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7, loc="upper left")


def layer_sweep_figure(sweeps: LayerSweep | Sequence[LayerSweep], *, fvs: Sequence[FunctionVector] = ()) -> Figure:
    """Held-out accuracy against layer, one line per task; the ICL accuracy of each task marked
    on the right edge (``<``); dotted, if ``fvs`` are given: the function vector added there."""
    sweeps = list(sweeps) if isinstance(sweeps, Sequence) else [sweeps]
    if not sweeps:
        raise EmptyDataError("plot_layer_sweep needs at least one LayerSweep")
    fig = Figure(figsize=(7, 4), layout="constrained")
    draw_layer_sweep(fig.subplots(), sweeps, fvs)
    title = f"{sweeps[0].model}: task vector by residual replacement (solid)"
    if fvs:
        title += ", function vector added (dotted)"
    fig.suptitle(title, fontsize=9)
    return fig


def plot_layer_sweep(sweeps: Sequence[LayerSweep], path: str | Path, *, fvs: Sequence[FunctionVector] = ()) -> Path:
    """:func:`layer_sweep_figure` written to ``path``."""
    return save_figure(layer_sweep_figure(sweeps, fvs=fvs), path)


def draw_cie(fig: object, ax: object, cie: torch.Tensor, heads: Sequence[Site] = ()) -> None:
    """Layer x head heatmap of ``cie [n_layers, n_heads]`` on ``ax``, ``heads`` outlined."""
    from matplotlib.patches import Rectangle

    a = cie.detach().float().cpu().numpy()
    if a.ndim != 2:
        raise ShapeMismatchError(f"cie must be [n_layers, n_heads], got {tuple(a.shape)}")
    lim = float(abs(a).max()) or 1.0
    im = ax.imshow(a.T, origin="lower", cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto", interpolation="nearest")
    for s in heads:
        ax.add_patch(Rectangle((s.layer - 0.5, s.head - 0.5), 1, 1, fill=False, ec="black", lw=1.5))
    ax.set_xlabel("layer")
    ax.set_ylabel("head")
    ax.set_xticks(_ticks(a.shape[0]))
    ax.set_yticks(_ticks(a.shape[1]))
    fig.colorbar(im, ax=ax, label="causal indirect effect (P(correct) gain)")


def cie_figure(cie: torch.Tensor, *, heads: Sequence[Site] = (), title: str = "") -> Figure:
    """Layer x head heatmap of causal indirect effects ``[n_layers, n_heads]``; ``heads`` outlined."""
    shape = tuple(cie.shape)
    if len(shape) != 2:
        raise ShapeMismatchError(f"cie must be [n_layers, n_heads], got {shape}")
    fig = Figure(figsize=(min(10.0, max(5.0, 0.28 * shape[0] + 2)), min(6.0, 0.3 * shape[1] + 1.6)), layout="constrained")
    draw_cie(fig, fig.subplots(), cie, heads)
    fig.suptitle(title or "causal indirect effect per head (outlined: function-vector heads)", fontsize=9)
    return fig


def plot_cie(cie: torch.Tensor, path: str | Path, *, heads: Sequence[Site] = (), title: str = "") -> Path:
    """:func:`cie_figure` written to ``path``."""
    return save_figure(cie_figure(cie, heads=heads, title=title), path)


def function_vector_figure(fv: FunctionVector) -> Figure:
    """A function vector at a glance: its CIE heatmap (chosen heads outlined) and, if it was
    swept, zero-shot accuracy with the vector added at each layer (its own layer marked)."""
    n_layers, n_heads = tuple(fv.cie.shape)
    swept = bool(fv.layer_accuracy)
    width = min(7.0, max(5.0, 0.28 * n_layers + 2))  # at most 14 in (~1400 px at 100 dpi) for two panels
    fig = Figure(figsize=(2 * width if swept else width, min(6.0, 0.3 * n_heads + 1.9)), layout="constrained")
    axes = fig.subplots(1, 2 if swept else 1, squeeze=False)[0]
    draw_cie(fig, axes[0], fv.cie, fv.heads)
    axes[0].set_title(f"causal indirect effect (outlined: the {len(fv.heads)} heads)", fontsize=9)
    if swept:
        ax = axes[1]
        ax.plot(range(len(fv.layer_accuracy)), fv.layer_accuracy, "-o", ms=3, color="C0", label="zero-shot + function vector")
        ax.axhline(fv.icl, color="C2", ls="--", label=f"ICL {fv.shots}-shot ({fv.icl:.2f})")
        ax.axhline(fv.zero_shot, color="C3", ls=":", label=f"zero-shot ({fv.zero_shot:.2f})")
        ax.axvline(fv.layer, color="0.5", lw=0.8)
        ax.set_xlabel("layer the vector is added to (last token)")
        ax.set_ylabel("held-out accuracy")
        ax.set_xticks(_ticks(len(fv.layer_accuracy)))
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=7)
        ax.set_title(f"added at layer {fv.layer}: zero-shot {fv.zero_shot:.2f} -> {fv.zero_shot_fv:.2f}", fontsize=9)
    fig.suptitle(f"{fv.model} / {fv.task}: function vector", fontsize=10)
    return fig
