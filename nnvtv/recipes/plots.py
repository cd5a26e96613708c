"""Figures of the LLM recipes (report.py style, Agg backend): accuracy per layer, CIE heatmap."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from nnvtv.errors import EmptyDataError, ShapeMismatchError
from nnvtv.recipes.function_vectors import FunctionVector
from nnvtv.recipes.layer_sweeps import LayerSweep
from nnvtv.sites import Site

__all__ = ["plot_cie", "plot_layer_sweep"]


def plot_layer_sweep(sweeps: Sequence[LayerSweep], path: str | Path, *, fvs: Sequence[FunctionVector] = ()) -> Path:
    """Held-out accuracy against layer, one line per task (report.py style, Agg backend).

    Solid: residual replacement (task vector); dotted, if ``fvs`` are given: the function
    vector added at that layer. ICL accuracy of each task is marked on the right edge.
    """
    from nnvtv.report import plt  # Agg is selected there

    if not sweeps:
        raise EmptyDataError("plot_layer_sweep needs at least one LayerSweep")
    fig, ax = plt.subplots(figsize=(7, 4))
    fv_of = {f.task: f for f in fvs}
    for i, s in enumerate(sweeps):
        color = f"C{i % 10}"
        ax.plot(s.layers, s.accuracy, "-o", ms=3, color=color, label=f"{s.task} (ICL {s.icl:.2f})")
        ax.plot([s.layers[-1] + 0.8], [s.icl], "<", color=color, ms=6)
        f = fv_of.get(s.task)
        if f is not None and f.layer_accuracy:
            ax.plot(range(len(f.layer_accuracy)), f.layer_accuracy, ":", color=color, lw=1.2)
    ax.set_xlabel("layer (block output patched at the last token)")
    ax.set_ylabel("held-out zero-shot accuracy")
    ax.set_ylim(-0.02, 1.02)
    title = f"{sweeps[0].model}: task vector by residual replacement (solid)"
    if fvs:
        title += ", function vector added (dotted)"
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    path = Path(path)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_cie(cie: torch.Tensor, path: str | Path, *, heads: Sequence[Site] = (), title: str = "") -> Path:
    """Layer x head heatmap of causal indirect effects ``[n_layers, n_heads]``; ``heads`` outlined."""
    from nnvtv.report import plt

    a = cie.detach().float().cpu().numpy()
    if a.ndim != 2:
        raise ShapeMismatchError(f"cie must be [n_layers, n_heads], got {tuple(a.shape)}")
    lim = float(abs(a).max()) or 1.0
    fig, ax = plt.subplots(figsize=(max(5.0, 0.28 * a.shape[0] + 2), 0.3 * a.shape[1] + 1.6))
    im = ax.imshow(a.T, origin="lower", cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    for s in heads:
        ax.add_patch(plt.Rectangle((s.layer - 0.5, s.head - 0.5), 1, 1, fill=False, ec="black", lw=1.5))
    ax.set_xlabel("layer")
    ax.set_ylabel("head")
    ax.set_xticks(range(0, a.shape[0], max(1, a.shape[0] // 15)))
    ax.set_yticks(range(a.shape[1]))
    fig.colorbar(im, ax=ax, label="causal indirect effect (P(correct) gain)")
    ax.set_title(title or "causal indirect effect per head (outlined: function-vector heads)", fontsize=9)
    path = Path(path)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
