"""The ``toy-text`` network (a tiny ``GPT2LMHeadModel``) and an explicit forward pass with patches.

:func:`run_gpt2` runs the GPT-2 submodules one by one (embeddings, blocks, ``ln_f``, ``lm_head``)
so training and evaluation can read and overwrite activations at one token position per row
without any hooks:

* ``resid[l]``: the output of block ``l`` (the residual stream after the block);
* ``heads[l]``: the per-head slices of the *input* of ``attn.c_proj`` in block ``l``
  (shape ``(B, T, n_head, head_dim)``), the "head output" sites of the design notes.

With nothing patched it equals ``model(input_ids).logits`` (checked in the tests). Right-padded
batches need no attention mask: attention is causal, so real tokens never see the padding.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .text_data import BOS_ID, PAD_ID, VOCAB_SIZE

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


def build_model(seed: int = 0, **overrides):
    """A freshly initialised ``GPT2LMHeadModel`` with the toy-text config (deterministic per seed)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(**{**TOY_TEXT_CONFIG, **overrides})
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(cfg)
    return model


@dataclass
class ForwardOut:
    logits: torch.Tensor  # (B, T, vocab)
    resid: list[torch.Tensor] = field(default_factory=list)  # per block (B, T, d), if captured
    heads: list[torch.Tensor] = field(default_factory=list)  # per block (B, T, H, hd), if captured


def _at_pos(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Boolean (B, T, 1[, 1]) selector of position ``pos[b]`` in each row, broadcastable to x."""
    B, T = x.shape[:2]
    sel = torch.arange(T, device=x.device)[None, :] == pos.to(x.device)[:, None]
    return sel.view(B, T, *([1] * (x.dim() - 2)))


def _check_supported(cfg) -> None:
    bad = []
    if getattr(cfg, "scale_attn_by_inverse_layer_idx", False):
        bad.append("scale_attn_by_inverse_layer_idx")
    if getattr(cfg, "reorder_and_upcast_attn", False):
        bad.append("reorder_and_upcast_attn")
    if getattr(cfg, "add_cross_attention", False):
        bad.append("add_cross_attention")
    if bad:
        raise ValueError(f"run_gpt2 does not implement GPT-2 options {bad}")


def run_gpt2(
    model,
    input_ids: torch.Tensor,
    *,
    pos: torch.Tensor | None = None,
    resid_patch: dict[int, torch.Tensor] | None = None,
    resid_add: dict[int, torch.Tensor] | None = None,
    head_patch: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None,
    capture: bool = False,
) -> ForwardOut:
    """Explicit GPT-2 forward with optional patches at position ``pos[b]`` of each row.

    Args:
        model: a ``GPT2LMHeadModel`` (dropout is not applied: the toy config has none).
        input_ids: (B, T) token ids, right padded.
        pos: (B,) position patched in each row (usually the last real token).
        resid_patch: ``{layer: values (B, d)}``; the output of block ``layer`` at ``pos`` is
            replaced by ``values``.
        resid_add: ``{layer: delta (B, d)}``; ``delta`` is added to the output of block ``layer``
            at ``pos`` (after any ``resid_patch`` of that layer).
        head_patch: ``{layer: (mask (B, H) bool, values (B, H, hd))}``; the head outputs of block
            ``layer`` at ``pos`` are replaced by ``values`` where ``mask`` is true.
        capture: return every block's output (``resid``) and head outputs (``heads``).
    """
    _check_supported(model.config)
    if (resid_patch or resid_add or head_patch) and pos is None:
        raise ValueError("patching needs pos (the position patched in each row)")
    tr = model.transformer
    B, T = input_ids.shape
    positions = torch.arange(T, device=input_ids.device)[None, :]
    h = tr.wte(input_ids) + tr.wpe(positions)
    out = ForwardOut(logits=h)
    for li, block in enumerate(tr.h):
        attn = block.attn
        nh, hd = attn.num_heads, attn.head_dim
        x = block.ln_1(h)
        q, k, v = attn.c_attn(x).split(attn.split_size, dim=2)
        q, k, v = (t.view(B, T, nh, hd).transpose(1, 2) for t in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=attn.scaling)
        a = a.transpose(1, 2)  # (B, T, H, hd): head outputs
        if head_patch and li in head_patch:
            mask, values = head_patch[li]
            sel = _at_pos(a, pos) & mask.to(torch.bool)[:, None, :, None]
            a = torch.where(sel, values[:, None, :, :].to(a.dtype), a)
        if capture:
            out.heads.append(a)
        h = h + attn.c_proj(a.reshape(B, T, nh * hd))
        h = h + block.mlp(block.ln_2(h))
        if resid_patch and li in resid_patch:
            h = torch.where(_at_pos(h, pos), resid_patch[li][:, None, :].to(h.dtype), h)
        if resid_add and li in resid_add:
            h = h + _at_pos(h, pos).to(h.dtype) * resid_add[li][:, None, :].to(h.dtype)
        if capture:
            out.resid.append(h)
    out.logits = model.lm_head(tr.ln_f(h))
    return out
