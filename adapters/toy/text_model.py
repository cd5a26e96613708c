"""The ``toy-text`` network: a tiny ``GPT2LMHeadModel`` (4 layers x 4 heads, d 128, no dropout).

Training and evaluation read and patch it through the library's own site definition
(:func:`nnvtv.wrap`: head outputs = ``head_dim`` slices of the input of ``attn.c_proj``,
residual = block output); see :mod:`.train_text` and :mod:`.text_card`.
"""

from __future__ import annotations

from typing import Any

import torch

from .text_data import BOS_ID, PAD_ID, VOCAB_SIZE

__all__ = ["TOY_TEXT_CONFIG", "build_model"]

#: GPT2Config keyword arguments of ``toy-text`` (4 layers x 4 heads, d 128, no dropout).
TOY_TEXT_CONFIG: dict = dict(
    vocab_size=VOCAB_SIZE,
    n_positions=64,
    n_embd=128,
    n_layer=4,
    n_head=4,
    n_inner=512,
    activation_function="gelu_new",
    resid_pdrop=0.0,
    embd_pdrop=0.0,
    attn_pdrop=0.0,
    layer_norm_epsilon=1e-5,
    initializer_range=0.02,
    scale_attn_weights=True,
    scale_attn_by_inverse_layer_idx=False,
    reorder_and_upcast_attn=False,
    tie_word_embeddings=True,
    bos_token_id=BOS_ID,
    eos_token_id=BOS_ID,
    pad_token_id=PAD_ID,
    use_cache=False,
)


def build_model(seed: int = 0, **overrides: Any) -> torch.nn.Module:
    """A freshly initialised ``GPT2LMHeadModel`` with the toy-text config (deterministic per seed).

    ``overrides`` replace :data:`TOY_TEXT_CONFIG` entries. Seeds the global torch RNG first.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(**{**TOY_TEXT_CONFIG, **overrides})
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(cfg)
    return model
