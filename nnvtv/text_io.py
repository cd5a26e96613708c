"""I/O for causal language models: prompts -> token ids, logits -> next-token readout.

Group ``last`` is the last real (non-padding) token of every prompt, found from the
attention mask, so it is correct for left or right padding in mixed-length batches.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import torch

from nnvtv.errors import ConfigError, EmptyDataError, ShapeMismatchError
from nnvtv.inputs import ModelInputs
from nnvtv.model_io import ModelIO, SharedPrefix

__all__ = ["TextIO", "last_token_index", "context_length"]

#: config keys that give a causal LM's context length, tried in order
CONTEXT_KEYS = ("n_positions", "max_position_embeddings", "n_ctx", "seq_length", "max_sequence_length")


def context_length(module: torch.nn.Module) -> tuple[int, str] | None:
    """``(tokens, config key)``: the longest input ``module``'s config allows, or ``None`` if it says nothing."""
    cfg = getattr(module, "config", None)
    cfg = getattr(cfg, "get_text_config", lambda: cfg)() if cfg is not None else None
    for key in CONTEXT_KEYS:
        value = getattr(cfg, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value, key
    return None


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """``LongTensor [batch]``: index of the last 1 in each row of ``attention_mask [batch, seq]``."""
    seq = attention_mask.shape[1]
    flipped = attention_mask.flip(1).to(torch.long)
    return seq - 1 - flipped.argmax(dim=1)


def _cache_of(output: Any) -> Any:
    """The key/value cache a causal LM returned (``cache`` or, before transformers 5.2x, ``past_key_values``)."""
    for name in ("cache", "past_key_values"):
        value = getattr(output, name, None)
        if value is not None:
            return value
    raise ConfigError(
        f"the model returned no key/value cache ({type(output).__name__}); wrap it with "
        "share_prefix=False"
    )


class TextIO(ModelIO):
    """Causal LM: ``build(list[str] | LongTensor[batch, seq] | {"input_ids", "attention_mask"})``.

    Readout: next-token logits at the ``last`` position, ``[batch, vocab]``.

    Options: ``max_length`` (the longest prompt, in tokens; see below), ``share_prefix``
    (default ``True``: when candidates patch only the ``last`` token, :func:`nnvtv.run_masks`
    runs every prompt's prefix once and tiles only the last token over candidates, with the
    prefix's key/value cache; set ``False`` for models whose forward takes no ``past_key_values``).

    Prompt length. A prompt longer than the model's context (its config's ``n_positions`` /
    ``max_position_embeddings``) is refused before any forward, naming its length and the limit.
    ``max_length`` never cuts tokens here: cutting on the right loses the query (``last`` then
    points into a demonstration), and cutting on the left leaves half a demonstration whose
    input has lost its output, and only the prompt's builder knows where demonstrations
    end. So the task drops whole demonstrations, oldest first, until its prompt fits
    (:meth:`nnvtv.tasks.WordPairTask.icl`, which records how many it dropped), and a prompt
    that still reaches this I/O longer than ``max_length`` is refused.
    """

    modality = "text"

    def __init__(
        self,
        module: torch.nn.Module,
        tokenizer: Any = None,
        *,
        max_length: int | None = None,
        share_prefix: bool = True,
    ) -> None:
        super().__init__(module, tokenizer)
        context = context_length(module)
        if max_length is not None:
            if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
                raise ConfigError(f"max_length must be an int >= 2 (tokens) or None, got {max_length!r}")
            if context is not None and max_length > context[0]:
                raise ConfigError(
                    f"max_length={max_length} is longer than the model's context of {context[0]} tokens "
                    f"(config {context[1]}); use max_length <= {context[0]} or leave it unset"
                )
        self.max_length = max_length
        #: ``(tokens, config key)`` of the model's context, or ``None`` when its config says nothing
        self.context = context
        self.share_prefix = share_prefix
        self._forward_params = frozenset(inspect.signature(type(module).forward).parameters)
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
            enc = self.tokenizer(texts, return_tensors="pt", padding=True)
            ids, mask = enc["input_ids"], enc["attention_mask"]
            self._check_length(mask, texts)
        if ids.dim() != 2 or ids.dtype not in (torch.long, torch.int, torch.int32):
            raise ShapeMismatchError(
                f"token ids must be an integer tensor [batch, seq], got {tuple(ids.shape)} {ids.dtype}"
            )
        if ids.shape[0] == 0 or ids.shape[1] == 0:
            raise EmptyDataError(f"empty batch of token ids: shape {tuple(ids.shape)}")
        if isinstance(data, (torch.Tensor, Mapping)):
            self._check_length(mask, None)
        last = last_token_index(mask)[:, None]
        kwargs = {"input_ids": ids.long(), "attention_mask": mask.long()}
        if "position_ids" in self._forward_params:
            # Positions count real tokens only, so a left-padded prompt sees the same position
            # embeddings as alone (GPT-2 and others otherwise number pads too).
            kwargs["position_ids"] = (mask.long().cumsum(1) - 1).clamp(min=0)
        return ModelInputs(kwargs=kwargs, positions={"": {"last": last}})

    def _check_length(self, mask: torch.Tensor, texts: Sequence[str] | None) -> None:
        """Refuse rows longer than ``max_length`` or the model's context, before any forward."""
        lengths = mask.long().sum(1) if mask.dim() == 2 else None
        if lengths is None or lengths.numel() == 0:
            return
        i = int(lengths.argmax())
        n = int(lengths[i])
        what = f"prompt {i} ({texts[i][:60]!r}{'...' if len(texts[i]) > 60 else ''})" if texts is not None else f"row {i} of the token ids"
        if self.max_length is not None and n > self.max_length:
            raise ConfigError(
                f"{what} is {n} tokens, more than max_length={self.max_length}; nnvtv does not cut prompts "
                "(that would lose the query or split a demonstration): task prompts drop whole demonstrations "
                "to fit, so shorten this prompt or raise max_length"
            )
        if self.context is not None and n > self.context[0]:
            raise ConfigError(
                f"{what} is {n} tokens, but the model reads at most {self.context[0]} (config "
                f"{self.context[1]}); use fewer shots or shorter examples, or set max_length= (e.g. "
                f"nnvtv.wrap(..., max_length={self.context[0]})) to drop the oldest demonstrations to fit"
            )

    def readout(self, output: Any, inputs: ModelInputs) -> torch.Tensor:
        logits = output.logits if hasattr(output, "logits") else output[0]
        last = inputs.positions[""]["last"][:, 0]
        return logits[torch.arange(logits.shape[0], device=logits.device), last]

    def shared_prefix(self, inputs: ModelInputs, groups: Collection[tuple[str, str]]) -> SharedPrefix | None:
        """Prefix = all but the last column of the left-aligned batch; step = the last token.

        Rows are first rolled so every prompt ends in the last column (pads move to the
        front; they are masked and position ids count real tokens, so each prompt's forward
        is unchanged). A causal model's last-token activations never influence earlier
        positions, so a patch at ``last`` cannot change the prefix: it runs once, unpatched.
        """
        kw = inputs.kwargs
        if not self.share_prefix or set(groups) - {("", "last")} or set(kw) - {"input_ids", "attention_mask", "position_ids"}:
            return None
        ids, mask = kw["input_ids"], kw["attention_mask"]
        t = ids.shape[1]
        if t < 2:
            return None
        shift = t - 1 - inputs.positions[""]["last"][:, 0]
        if bool(shift.any()):
            cols = (torch.arange(t, device=ids.device)[None, :] - shift[:, None]) % t
            ids, mask = ids.gather(1, cols), mask.gather(1, cols)
        prefix_kw: dict[str, Any] = {"input_ids": ids[:, :-1], "attention_mask": mask[:, :-1], "use_cache": True}
        pos = None
        if "position_ids" in kw:
            pos = (mask.cumsum(1) - 1).clamp(min=0)
            prefix_kw["position_ids"] = pos[:, :-1]
        prefix = ModelInputs(kwargs=prefix_kw, positions={"": {}})
        # transformers >= 5.2x names the key/value cache `cache`; earlier, `past_key_values`
        cache_arg = "cache" if "cache" in self._forward_params else "past_key_values"

        def step(prefix_output: Any, rows: torch.Tensor) -> ModelInputs:
            cache = copy.deepcopy(_cache_of(prefix_output))
            cache.batch_select_indices(rows)
            step_kw: dict[str, Any] = {
                "input_ids": ids[rows, -1:],
                "attention_mask": mask[rows],
                cache_arg: cache,
                "use_cache": True,
            }
            if pos is not None:
                step_kw["position_ids"] = pos[rows, -1:]
            last = torch.zeros(len(rows), 1, dtype=torch.long, device=ids.device)
            return ModelInputs(kwargs=step_kw, positions={"": {"last": last}})

        def row_bytes(prefix_output: Any) -> int:
            cache = _cache_of(prefix_output)
            tensors = [getattr(layer, name, None) for layer in getattr(cache, "layers", []) for name in ("keys", "values")]
            tensors += list(getattr(cache, "key_cache", [])) + list(getattr(cache, "value_cache", []))
            total = sum(v.element_size() * v.numel() for v in tensors if isinstance(v, torch.Tensor))
            return total // ids.shape[0]

        return SharedPrefix(prefix, step, row_bytes)

    def example(self, batch_size: int = 2) -> ModelInputs:
        vocab = int(getattr(getattr(self.module, "config", None), "vocab_size", 2) or 2)
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(0, vocab, (batch_size, 5), generator=g)
        mask = torch.ones_like(ids)
        mask[1:, -1] = 0  # exercise padding
        return self.build({"input_ids": ids, "attention_mask": mask})
