"""Shared fixtures: tiny random-init models of every adapter family, built in the test.

Nothing is downloaded. Every family is described here *independently of the library*:
the config, the expected sizes per stream, the module paths of the blocks and of the
attention output projection, the token positions of every group, and how to read the
output. Tests compare what nnvtv does against these facts and against raw-torch references.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
import transformers as T
from tokenizers import Tokenizer, models, pre_tokenizers

import nnvtv

# Tests never touch the network: a Hub id the test did not put in a cache is an OfflineError at
# once (nnvtv reads these variables at call time), not minutes of retries.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

# Tiny models: on a shared, busy CPU every op costs ~10 ms with 2 OpenMP threads (barrier
# waits) and ~10 us with one. Set at import and again per test (see `_one_thread`), since
# other test modules may change it at import time.
torch.set_num_threads(1)

VOCAB = 64
SPECIAL = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
LLAMA_SIZES = dict(
    vocab_size=VOCAB,
    hidden_size=16,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,  # grouped-query: 2 KV heads shared by 4 query heads
    intermediate_size=32,
    max_position_embeddings=32,
)
VIT_SIZES = dict(
    image_size=8,
    patch_size=4,  # 2 x 2 = 4 patches
    num_channels=3,
    hidden_size=16,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=32,
)


@dataclass(frozen=True)
class Family:
    """Independent description of one adapter family on a tiny config."""

    name: str  # expected adapter name
    cls: type
    make_config: Callable[[], Any]
    #: {stream: (n_layers, n_heads, head_dim, d_model)} computed from the config by hand
    sizes: dict[str, tuple[int, int, int, int]]
    #: {stream: (block path template, attention output projection path template)}
    paths: dict[str, tuple[str, str]]
    #: {stream: (group, ...)}
    groups: dict[str, tuple[str, ...]]
    kind: str  # "text", "vit", "vit_mae"
    #: key in ``FAMILIES`` (and test ids) when it differs from ``name``: one adapter row
    #: serving several ``model_type`` values (olmo, olmo2) gets one tiny config per type
    key: str = ""

    def build(self, seed: int = 0) -> torch.nn.Module:
        torch.manual_seed(seed)
        return self.cls(self.make_config()).eval()


def _text(name, cls, make_config, n_heads, head_dim, block, attn_out, key="") -> Family:
    return Family(
        name=name,
        cls=cls,
        make_config=make_config,
        sizes={"": (2, n_heads, head_dim, 16)},
        paths={"": (block, attn_out)},
        groups={"": ("last",)},
        kind="text",
        key=key,
    )


FAMILIES: dict[str, Family] = {
    f.key or f.name: f
    for f in [
        _text(
            "gpt2",
            T.GPT2LMHeadModel,
            lambda: T.GPT2Config(
                vocab_size=VOCAB, n_positions=32, n_embd=16, n_layer=2, n_head=2, **SPECIAL
            ),
            2,
            8,
            "transformer.h.{i}",
            "transformer.h.{i}.attn.c_proj",
        ),
        _text(
            "gpt_neox",
            T.GPTNeoXForCausalLM,
            lambda: T.GPTNeoXConfig(
                vocab_size=VOCAB,
                hidden_size=16,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=32,
                max_position_embeddings=32,
                **SPECIAL,
            ),
            2,
            8,
            "gpt_neox.layers.{i}",
            "gpt_neox.layers.{i}.attention.dense",
        ),
        _text(
            "gptj",
            T.GPTJForCausalLM,
            lambda: T.GPTJConfig(
                vocab_size=VOCAB,
                n_positions=32,
                n_embd=16,
                n_layer=2,
                n_head=2,
                rotary_dim=4,
                **SPECIAL,
            ),
            2,
            8,
            "transformer.h.{i}",
            "transformer.h.{i}.attn.out_proj",
        ),
        _text(
            "llama",
            T.LlamaForCausalLM,
            lambda: T.LlamaConfig(**LLAMA_SIZES, **SPECIAL),
            4,
            4,
            "model.layers.{i}",
            "model.layers.{i}.self_attn.o_proj",
        ),
        _text(
            "mistral",
            T.MistralForCausalLM,
            lambda: T.MistralConfig(**LLAMA_SIZES, **SPECIAL),
            4,
            4,
            "model.layers.{i}",
            "model.layers.{i}.self_attn.o_proj",
        ),
        _text(
            "qwen2",
            T.Qwen2ForCausalLM,
            lambda: T.Qwen2Config(**LLAMA_SIZES, **SPECIAL),
            4,
            4,
            "model.layers.{i}",
            "model.layers.{i}.self_attn.o_proj",
        ),
        _text(
            "gemma",
            T.GemmaForCausalLM,
            # explicit head_dim 8 != hidden 16 / 4 heads; 1 KV head (grouped-query)
            lambda: T.GemmaConfig(
                **{**LLAMA_SIZES, "num_key_value_heads": 1}, head_dim=8, **SPECIAL
            ),
            4,
            8,
            "model.layers.{i}",
            "model.layers.{i}.self_attn.o_proj",
        ),
        _text(
            "qwen3",
            T.Qwen3ForCausalLM,
            # explicit head_dim 8 != hidden 16 / 4 heads (default 128); 2 KV heads
            lambda: T.Qwen3Config(**LLAMA_SIZES, head_dim=8, **SPECIAL),
            4,
            8,
            "model.layers.{i}",
            "model.layers.{i}.self_attn.o_proj",
        ),
        _text(
            "gemma2",
            T.Gemma2ForCausalLM,
            # explicit head_dim 8 (default 256); 2 KV heads; a sliding window shorter than
            # the test prompts, so its sliding layer (layer 0) really windows
            lambda: T.Gemma2Config(**LLAMA_SIZES, head_dim=8, sliding_window=4, **SPECIAL),
            4,
            8,
            "model.layers.{i}",
            "model.layers.{i}.self_attn.o_proj",
        ),
        _text(
            "olmo",
            T.OlmoForCausalLM,
            lambda: T.OlmoConfig(**LLAMA_SIZES, **SPECIAL),  # no head_dim key: 16 / 4
            4,
            4,
            "model.layers.{i}",
            "model.layers.{i}.self_attn.o_proj",
        ),
        _text(
            "olmo",  # the olmo row serves model_type olmo2 too
            T.Olmo2ForCausalLM,
            lambda: T.Olmo2Config(**LLAMA_SIZES, **SPECIAL),
            4,
            4,
            "model.layers.{i}",
            "model.layers.{i}.self_attn.o_proj",
            key="olmo2",
        ),
        _text(
            "phi",
            T.PhiForCausalLM,
            lambda: T.PhiConfig(
                vocab_size=VOCAB,
                hidden_size=16,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=32,
                max_position_embeddings=32,
                **SPECIAL,
            ),
            2,
            8,
            "model.layers.{i}",
            "model.layers.{i}.self_attn.dense",
        ),
        _text(
            "phi3",
            T.Phi3ForCausalLM,
            # fused qkv_proj; 2 KV heads; no head_dim key: 16 / 4
            lambda: T.Phi3Config(**LLAMA_SIZES, **SPECIAL),
            4,
            4,
            "model.layers.{i}",
            "model.layers.{i}.self_attn.o_proj",
        ),
        Family(
            name="vit",
            cls=T.ViTForImageClassification,
            make_config=lambda: T.ViTConfig(**VIT_SIZES, num_labels=3),
            sizes={"": (2, 2, 8, 16)},
            paths={"": ("vit.layers.{i}", "vit.layers.{i}.attention.o_proj")},
            groups={"": ("cls", "patches")},
            kind="vit",
        ),
        Family(
            name="vit_mae",
            cls=T.ViTMAEForPreTraining,
            make_config=lambda: T.ViTMAEConfig(
                **VIT_SIZES,
                decoder_hidden_size=8,
                decoder_num_hidden_layers=1,
                decoder_num_attention_heads=2,
                decoder_intermediate_size=16,
                mask_ratio=0.5,  # 2 of 4 patches visible
            ),
            sizes={"enc": (2, 2, 8, 16), "dec": (1, 2, 4, 8)},
            paths={
                "enc": ("vit.layers.{i}", "vit.layers.{i}.attention.o_proj"),
                "dec": (
                    "decoder.decoder_layers.{i}",
                    "decoder.decoder_layers.{i}.attention.o_proj",
                ),
            },
            groups={"enc": ("cls", "visible"), "dec": ("cls", "patches")},
            kind="vit_mae",
        ),
    ]
}
FAMILY_NAMES = list(FAMILIES)
TEXT_FAMILIES = [n for n, f in FAMILIES.items() if f.kind == "text"]


# --------------------------------------------------------------------------- batches


@dataclass
class Batch:
    """One batch for a family: what ``model.run`` takes plus an independent raw description."""

    data: Any  # passed to nnvtv (token-id dict or pixel tensor)
    raw_kwargs: dict[str, torch.Tensor]  # passed to the raw HF forward
    positions: dict[tuple[str, str], torch.Tensor] = field(default_factory=dict)  # [B, P]
    kind: str = "text"

    @property
    def size(self) -> int:
        return next(iter(self.raw_kwargs.values())).shape[0]

    def readout(self, output: Any) -> torch.Tensor:
        """Independent readout: next-token logits at the last real token, or raw logits."""
        logits = output.logits
        if self.kind == "text":
            last = self.positions[("", "last")][:, 0]
            return logits[torch.arange(logits.shape[0]), last]
        return logits

    def row(self, i: int) -> Batch:
        """Row ``i`` alone, with padding stripped (text: right padding)."""
        if self.kind == "text":
            n = int(self.raw_kwargs["attention_mask"][i].sum())
            ids = self.raw_kwargs["input_ids"][i : i + 1, :n]
            return text_batch(ids, torch.ones_like(ids))
        px = self.raw_kwargs["pixel_values"][i : i + 1]
        return image_batch(FAMILIES["vit_mae" if "noise" in self.raw_kwargs else "vit"], px)


def text_batch(ids: torch.Tensor, mask: torch.Tensor) -> Batch:
    data = {"input_ids": ids, "attention_mask": mask}
    last = torch.tensor([int(torch.nonzero(r).max()) for r in mask])[:, None]
    return Batch(data=data, raw_kwargs=dict(data), positions={("", "last"): last}, kind="text")


def image_batch(family: Family, px: torch.Tensor) -> Batch:
    b = px.shape[0]

    def rows(start: int, stop: int) -> torch.Tensor:
        return torch.arange(start, stop).repeat(b, 1)

    if family.kind == "vit":
        return Batch(
            px, {"pixel_values": px}, {("", "cls"): rows(0, 1), ("", "patches"): rows(1, 5)}, "vit"
        )
    # ViTMAE keeps the patches with the smallest noise: noise 0..3 keeps patches 0 and 1
    noise = torch.arange(4, dtype=torch.float).repeat(b, 1)
    pos = {
        ("enc", "cls"): rows(0, 1),
        ("enc", "visible"): rows(1, 3),
        ("dec", "cls"): rows(0, 1),
        ("dec", "patches"): rows(1, 5),
    }
    return Batch(px, {"pixel_values": px, "noise": noise}, pos, "vit_mae")


def make_batch(family: Family, seed: int = 0, size: int = 3) -> Batch:
    """A small batch; text batches are right-padded with mixed lengths."""
    g = torch.Generator().manual_seed(seed)
    if family.kind == "text":
        seq = 6
        ids = torch.randint(3, VOCAB, (size, seq), generator=g)
        lengths = [seq - (i % 3) for i in range(size)]  # 6, 5, 4, 6, ...
        mask = torch.zeros(size, seq, dtype=torch.long)
        for i, n in enumerate(lengths):
            mask[i, :n] = 1
        ids = ids.masked_fill(mask == 0, 0)
        return text_batch(ids, mask)
    return image_batch(family, torch.randn(size, 3, 8, 8, generator=g))


# --------------------------------------------------------------------------- model zoo


class Zoo:
    """Builds each tiny family model once (seed 0) and wraps it; ``fresh`` builds a new copy."""

    def __init__(self) -> None:
        self._models: dict[str, nnvtv.Model] = {}

    def __call__(self, name: str) -> nnvtv.Model:
        if name not in self._models:
            self._models[name] = nnvtv.wrap(FAMILIES[name].build(0))
        return self._models[name]

    @staticmethod
    def fresh(name: str, seed: int = 0) -> torch.nn.Module:
        return FAMILIES[name].build(seed)


@pytest.fixture(scope="session")
def zoo() -> Zoo:
    return Zoo()


_ONE_THREAD_MODULES = {
    "test_sites",
    "test_adapters",
    "test_patching",
    "test_activations",
    "test_packaging",
}


@pytest.fixture(autouse=True)
def _one_thread(request: pytest.FixtureRequest):
    """Run this folder's tiny-model tests on one torch thread; other modules keep theirs."""
    if request.node.path.stem not in _ONE_THREAD_MODULES:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def kit() -> Any:
    """This module (families, batch builders, helpers) for the test files.

    Test files cannot import ``conftest`` under ``--import-mode=importlib``.
    """
    return sys.modules[__name__]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``family`` runs a test on every adapter family, ``text_family`` on the causal LMs."""
    if "family" in metafunc.fixturenames:
        metafunc.parametrize("family", FAMILY_NAMES)
    if "text_family" in metafunc.fixturenames:
        metafunc.parametrize("text_family", TEXT_FAMILIES)


# --------------------------------------------------------------------------- tokenizer

WORDS = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"] + [f"w{i}" for i in range(40)]


def make_tokenizer(padding_side: str = "right") -> T.PreTrainedTokenizerFast:
    """A WordLevel tokenizer over ``w0 .. w39`` (ids 4..43), built in memory."""
    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return T.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        bos_token="[BOS]",
        eos_token="[EOS]",
        padding_side=padding_side,
    )


@pytest.fixture(scope="session")
def tokenizer() -> T.PreTrainedTokenizerFast:
    return make_tokenizer("right")


@pytest.fixture
def refuse_forwards(monkeypatch: pytest.MonkeyPatch) -> Callable[[Any], Any]:
    """``refuse_forwards(model)``: the test fails if any forward pass runs through ``model``
    (every traced forward goes through :meth:`nnvtv.Model.trace_jobs`); returns the model."""

    def refuse(model: Any) -> Any:
        def no_forward(*args: Any, **kwargs: Any) -> None:
            raise AssertionError("a forward ran before the arguments were checked")

        monkeypatch.setattr(model, "trace_jobs", no_forward)
        return model

    return refuse


# --------------------------------------------------------------------------- hygiene


def leftover_hooks(module: torch.nn.Module) -> list[str]:
    """Names of submodules that still carry forward hooks or pre-hooks."""
    return [
        name or "<root>"
        for name, m in module.named_modules()
        if m._forward_hooks
        or m._forward_pre_hooks
        or m._forward_hooks_with_kwargs
        or m._forward_pre_hooks_with_kwargs
    ]
