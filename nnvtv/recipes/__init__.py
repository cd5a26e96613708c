"""The LLM task-vector recipes of the papers, for any wrapped text model (group ``last``).

* :func:`layer_sweep` — task vector by residual replacement (Hendel et al., EMNLP 2023): the
  mean residual stream at the last token of ICL prompts, taken at block ``L``, replaces the
  zero-shot query's; swept over every ``L`` -> held-out accuracy per layer and the best layer.
* :func:`causal_indirect_effects` and :func:`function_vector` — function vectors (Todd et al.,
  ICLR 2024): every head's clean mean output at the last token is patched, one head at a time,
  into shuffled-label ICL prompts; the causal indirect effect (CIE) is the gain in probability
  of the correct answer. The top-``k`` heads' means, mapped through the attention output
  projection and summed, are *added* to the residual stream near depth/3.
* :func:`head_search` — head-level search with each strategy through :func:`nnvtv.find`.

Everything runs through :func:`nnvtv.run_masks` / :class:`nnvtv.Patch` (no hooks). Results are
small dataclasses that save to ``<dir>/<kind>.json`` + ``<dir>/<kind>.safetensors`` through
:mod:`nnvtv.store`.

CIE cost: a head patched at the last token changes nothing at earlier positions (causal
attention), so :func:`run_masks` runs the prompt prefix once and every candidate head set only
re-runs the last token against a copy of its key/value cache (``fast=True`` = ``share_prefix``;
exact up to float rounding; tested against the full run).

Modules: ``common`` (text-model check, ICL means, accuracy), ``layer_sweeps``,
``function_vectors`` (CIE, head vectors, the function vector), ``head_searches``, ``plots``.
"""

from nnvtv.recipes.common import icl_means
from nnvtv.recipes.function_vectors import (
    FunctionVector,
    causal_indirect_effects,
    function_vector,
    head_vector,
)
from nnvtv.recipes.head_searches import SearchSummary, head_search
from nnvtv.recipes.layer_sweeps import LayerSweep, layer_sweep
from nnvtv.recipes.plots import plot_cie, plot_layer_sweep

__all__ = [
    "LayerSweep",
    "FunctionVector",
    "SearchSummary",
    "layer_sweep",
    "causal_indirect_effects",
    "function_vector",
    "head_search",
    "icl_means",
    "head_vector",
    "plot_layer_sweep",
    "plot_cie",
]
