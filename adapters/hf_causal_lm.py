"""Hugging Face causal LMs, as one table.

Head outputs live at the input of each layer's attention output projection
(``c_proj`` / ``dense`` / ``out_proj`` / ``o_proj``), shape ``[batch, pos, n_heads * head_dim]``.
``n_heads`` is the number of *query* heads: grouped-query models (Llama, Mistral, Qwen2,
Gemma) share key/value heads, but every query head still writes its own ``head_dim``
slice into the output projection, so that is the unit we patch.

A new decoder-only family is one more row of ``ROWS`` here, plus a tiny config in
``tests/conftest.py`` (``tests/test_table_coverage.py`` fails without one).
"""

from __future__ import annotations

from dataclasses import dataclass

from nnvtv.adapter import AdapterSpec, StreamSpec
from nnvtv.text_io import TextIO

from .discover import CAUSAL_LM_DISCOVERY

__all__ = ["CAUSAL_LM_ADAPTERS", "PLUGIN", "ROWS", "Row", "adapter_spec"]

_LAYERS = ("num_hidden_layers", "n_layer", "num_layers")
_HEADS = ("num_attention_heads", "n_head")
_WIDTH = ("hidden_size", "n_embd", "d_model")


def _stream(block: str, attn_out: str, *, head_dim: tuple[str, ...] = ()) -> StreamSpec:
    # Each path is given with and without the LM-head wrapper prefix, so the bare
    # backbone (e.g. LlamaModel) works too.
    def variants(path: str) -> tuple[str, ...]:
        return (path, path.split(".", 1)[1])

    return StreamSpec(
        block=variants(block),
        attn_out=variants(attn_out),
        n_layers=_LAYERS,
        n_heads=_HEADS,
        d_model=_WIDTH,
        head_dim=head_dim,
    )


_GPT2_LIKE = _stream("transformer.h.{i}", "transformer.h.{i}.attn.c_proj")
_GPTJ = _stream("transformer.h.{i}", "transformer.h.{i}.attn.out_proj")
_NEOX = _stream("gpt_neox.layers.{i}", "gpt_neox.layers.{i}.attention.dense")
_LLAMA_LIKE = _stream(
    "model.layers.{i}", "model.layers.{i}.self_attn.o_proj", head_dim=("head_dim",)
)
_PHI = _stream("model.layers.{i}", "model.layers.{i}.self_attn.dense", head_dim=("head_dim",))


@dataclass(frozen=True)
class Row:
    """One family of the table.

    Attributes:
        name: the adapter's name.
        model_types: ``config.model_type`` values it serves.
        model_classes: model class names, matched anywhere in a model's MRO, so a subclass
            still finds its family when its config has another ``model_type``.
        stream: where the blocks and the attention output projection are.
    """

    name: str
    model_types: tuple[str, ...]
    model_classes: tuple[str, ...]
    stream: StreamSpec


#: Every family, one row each. Each row has a tiny random-init config in ``tests/conftest.py``
#: (``FAMILIES``, one per ``model_type``); ``tests/test_table_coverage.py`` fails without it.
ROWS: tuple[Row, ...] = (
    Row("gpt2", ("gpt2",), ("GPT2LMHeadModel",), _GPT2_LIKE),
    Row("gpt_neox", ("gpt_neox",), ("GPTNeoXForCausalLM",), _NEOX),
    Row("gptj", ("gptj",), ("GPTJForCausalLM",), _GPTJ),
    Row("llama", ("llama",), ("LlamaForCausalLM",), _LLAMA_LIKE),
    Row("mistral", ("mistral",), ("MistralForCausalLM",), _LLAMA_LIKE),
    Row("qwen2", ("qwen2",), ("Qwen2ForCausalLM",), _LLAMA_LIKE),
    Row("qwen3", ("qwen3",), ("Qwen3ForCausalLM",), _LLAMA_LIKE),
    Row("gemma", ("gemma",), ("GemmaForCausalLM",), _LLAMA_LIKE),
    Row("gemma2", ("gemma2",), ("Gemma2ForCausalLM",), _LLAMA_LIKE),
    Row("olmo", ("olmo", "olmo2"), ("OlmoForCausalLM", "Olmo2ForCausalLM"), _LLAMA_LIKE),
    Row("phi", ("phi",), ("PhiForCausalLM",), _PHI),
    Row("phi3", ("phi3",), ("Phi3ForCausalLM",), _LLAMA_LIKE),
)


def adapter_spec(row: Row) -> AdapterSpec:
    """The :class:`AdapterSpec` of one row (text in, next-token logits out)."""
    return AdapterSpec(
        name=row.name,
        model_types=row.model_types,
        streams=(row.stream,),
        io=TextIO,
        model_classes=row.model_classes,
    )


CAUSAL_LM_ADAPTERS: list[AdapterSpec] = [adapter_spec(row) for row in ROWS]

#: what the entry point ``hf_causal_lm`` registers: the table, then the structural discovery
#: of causal LMs it does not hold (tried only when no row matches)
PLUGIN = [*CAUSAL_LM_ADAPTERS, CAUSAL_LM_DISCOVERY]
