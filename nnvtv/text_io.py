"""I/O for causal language models: prompts -> token ids, logits -> next-token readout.

Group ``last`` is the last real (non-padding) token of every prompt, found from the
attention mask, so it is correct for left or right padding in mixed-length batches.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from nnvtv.adapter import ModelIO
from nnvtv.errors import ConfigError, EmptyDataError, ShapeMismatchError
from nnvtv.inputs import ModelInputs

__all__ = ["TextIO", "last_token_index"]


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """``LongTensor [batch]``: index of the last 1 in each row of ``attention_mask [batch, seq]``."""
    seq = attention_mask.shape[1]
    flipped = attention_mask.flip(1).to(torch.long)
    return seq - 1 - flipped.argmax(dim=1)


class TextIO(ModelIO):
    """Causal LM: ``build(list[str] | LongTensor[batch, seq] | {"input_ids", "attention_mask"})``.

    Readout: next-token logits at the ``last`` position, ``[batch, vocab]``.
    """

    readout_kind = "next_token"

    def __init__(self, module: torch.nn.Module, tokenizer: Any = None, *, max_length: int | None = None) -> None:
        super().__init__(module, tokenizer)
        self.max_length = max_length
        if tokenizer is not None and getattr(tokenizer, "pad_token", "x") is None:
            # GPT-2-style tokenizers have no pad token; any id works since pads are masked
            # and never read (the `last` group points at real tokens).
            tokenizer.pad_token = tokenizer.eos_token

    def groups(self) -> dict[str, tuple[str, ...]]:
        return {"": ("last",)}

    def build(self, data: Sequence[str] | torch.Tensor | Mapping[str, torch.Tensor]) -> ModelInputs:
        if isinstance(data, torch.Tensor):
            ids, mask = data, torch.ones_like(data)
        elif isinstance(data, Mapping):
            ids = data["input_ids"]
            mask = data.get("attention_mask", torch.ones_like(ids))
        else:
            texts = list(data)
            if not texts:
                raise EmptyDataError("no prompts given (an empty list of strings)")
            if not all(isinstance(t, str) for t in texts):
                raise ConfigError("text prompts must be strings; got " + repr(type(texts[0])))
            if self.tokenizer is None:
                raise ConfigError(
                    "this model was wrapped without a tokenizer, so it takes token ids "
                    "(LongTensor [batch, seq]); pass tokenizer= to nnvtv.wrap to use strings"
                )
            enc = self.tokenizer(
                texts,
                return_tensors="pt",
                padding=True,
                truncation=self.max_length is not None,
                max_length=self.max_length,
            )
            ids, mask = enc["input_ids"], enc["attention_mask"]
        if ids.dim() != 2 or ids.dtype not in (torch.long, torch.int, torch.int32):
            raise ShapeMismatchError(
                f"token ids must be an integer tensor [batch, seq], got {tuple(ids.shape)} {ids.dtype}"
            )
        if ids.shape[0] == 0 or ids.shape[1] == 0:
            raise EmptyDataError(f"empty batch of token ids: shape {tuple(ids.shape)}")
        last = last_token_index(mask)[:, None]
        kwargs = {"input_ids": ids.long(), "attention_mask": mask.long()}
        if "position_ids" in inspect.signature(type(self.module).forward).parameters:
            # Positions count real tokens only, so a left-padded prompt sees the same position
            # embeddings as alone (GPT-2 and others otherwise number pads too).
            kwargs["position_ids"] = (mask.long().cumsum(1) - 1).clamp(min=0)
        return ModelInputs(kwargs=kwargs, positions={"": {"last": last}})

    def readout(self, output: Any, inputs: ModelInputs) -> torch.Tensor:
        logits = output.logits if hasattr(output, "logits") else output[0]
        last = inputs.positions[""]["last"][:, 0]
        return logits[torch.arange(logits.shape[0], device=logits.device), last]

    def example(self, batch_size: int = 2) -> ModelInputs:
        vocab = int(getattr(getattr(self.module, "config", None), "vocab_size", 2) or 2)
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(0, vocab, (batch_size, 5), generator=g)
        mask = torch.ones_like(ids)
        mask[1:, -1] = 0  # exercise padding
        return self.build({"input_ids": ids, "attention_mask": mask})
