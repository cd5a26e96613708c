"""Hugging Face causal LMs, as one table.

Head outputs live at the input of each layer's attention output projection
(``c_proj`` / ``dense`` / ``out_proj`` / ``o_proj``), shape ``[batch, pos, n_heads * head_dim]``.
``n_heads`` is the number of *query* heads: grouped-query models (Llama, Mistral, Qwen2,
Gemma) share key/value heads, but every query head still writes its own ``head_dim``
slice into the output projection, so that is the unit we patch.

A new decoder-only family is one more row here (plus a tiny-config test).
"""

from __future__ import annotations

from nnvtv.adapter import AdapterSpec, StreamSpec, register_adapter
from nnvtv.text_io import TextIO

__all__ = ["CAUSAL_LM_ADAPTERS"]

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
_LLAMA_LIKE = _stream("model.layers.{i}", "model.layers.{i}.self_attn.o_proj", head_dim=("head_dim",))
_PHI = _stream("model.layers.{i}", "model.layers.{i}.self_attn.dense", head_dim=("head_dim",))

#: family name -> (config.model_type values, stream)
_TABLE: dict[str, tuple[tuple[str, ...], StreamSpec]] = {
    "gpt2": (("gpt2",), _GPT2_LIKE),
    "gpt_neox": (("gpt_neox",), _NEOX),
    "gptj": (("gptj",), _GPTJ),
    "llama": (("llama",), _LLAMA_LIKE),
    "mistral": (("mistral",), _LLAMA_LIKE),
    "qwen2": (("qwen2",), _LLAMA_LIKE),
    "qwen3": (("qwen3",), _LLAMA_LIKE),
    "gemma": (("gemma",), _LLAMA_LIKE),
    "gemma2": (("gemma2",), _LLAMA_LIKE),
    "olmo": (("olmo", "olmo2"), _LLAMA_LIKE),
    "phi": (("phi",), _PHI),
    "phi3": (("phi3",), _LLAMA_LIKE),
}

#: family name -> model class names, matched anywhere in a model's MRO, so a subclass still
#: finds its family when its config has another ``model_type``
_CLASSES: dict[str, tuple[str, ...]] = {
    "gpt2": ("GPT2LMHeadModel",),
    "gpt_neox": ("GPTNeoXForCausalLM",),
    "gptj": ("GPTJForCausalLM",),
    "llama": ("LlamaForCausalLM",),
    "mistral": ("MistralForCausalLM",),
    "qwen2": ("Qwen2ForCausalLM",),
    "qwen3": ("Qwen3ForCausalLM",),
    "gemma": ("GemmaForCausalLM",),
    "gemma2": ("Gemma2ForCausalLM",),
    "olmo": ("OlmoForCausalLM", "Olmo2ForCausalLM"),
    "phi": ("PhiForCausalLM",),
    "phi3": ("Phi3ForCausalLM",),
}

CAUSAL_LM_ADAPTERS: list[AdapterSpec] = [
    register_adapter(
        AdapterSpec(
            name=name,
            model_types=types,
            streams=(stream,),
            io=TextIO,
            model_classes=_CLASSES.get(name, ()),
        )
    )
    for name, (types, stream) in _TABLE.items()
]
