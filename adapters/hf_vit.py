"""Hugging Face ViT (classification) and ViTMAE (encoder + decoder): table entries and their I/O.

Paths are listed for transformers 5 (``vit.layers.{i}.attention.o_proj``) and 4.x
(``vit.encoder.layer.{i}.attention.output.dense``); the first that exists is used.

Token layout (HF ViT / ViTMAE): position 0 is CLS, positions ``1..n`` are patches in
raster order. ViTMAE masks patches at random unless fixed ``noise`` is passed; its I/O
always passes a fixed noise so the same patches are visible on every call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from nnvtv.adapter import AdapterSpec, ModelIO, StreamSpec
from nnvtv.errors import ConfigError, EmptyDataError, ShapeMismatchError
from nnvtv.inputs import ModelInputs

from .discover import vit_discovery

__all__ = ["VIT", "VIT_MAE", "ViTIO", "ViTMAEIO", "PLUGIN"]


def _pixels(module: torch.nn.Module, data: Any) -> torch.Tensor:
    cfg = module.config
    if not isinstance(data, torch.Tensor):
        raise ShapeMismatchError(f"image models take pixel tensors [batch, 3, H, W], got {type(data).__name__}")
    expected = (cfg.num_channels, cfg.image_size, cfg.image_size)
    if data.dim() != 4 or tuple(data.shape[1:]) != expected:
        raise ShapeMismatchError(f"pixel_values must be [batch, {', '.join(map(str, expected))}], got {tuple(data.shape)}")
    if data.shape[0] == 0:
        raise EmptyDataError("empty batch of images")
    if not data.is_floating_point():
        raise ShapeMismatchError(f"pixel_values must be floating point, got {data.dtype}")
    return data


def _n_patches(module: torch.nn.Module) -> int:
    cfg = module.config
    return (cfg.image_size // cfg.patch_size) ** 2


def _arange_rows(batch: int, start: int, stop: int) -> torch.Tensor:
    return torch.arange(start, stop).expand(batch, -1).clone()


class ViTIO(ModelIO):
    """ViT classifier. Groups ``cls`` (1 position) and ``patches`` (all patches). Readout: logits."""

    modality = "image"

    def groups(self) -> dict[str, tuple[str, ...]]:
        return {"": ("cls", "patches")}

    def build(self, data: torch.Tensor) -> ModelInputs:
        px = _pixels(self.module, data)
        b, n = px.shape[0], _n_patches(self.module)
        return ModelInputs(
            kwargs={"pixel_values": px},
            positions={"": {"cls": _arange_rows(b, 0, 1), "patches": _arange_rows(b, 1, n + 1)}},
        )

    def readout(self, output: Any, inputs: ModelInputs) -> torch.Tensor:
        return output.logits if hasattr(output, "logits") else output[0]

    def example(self, batch_size: int = 2) -> ModelInputs:
        cfg = self.module.config
        g = torch.Generator().manual_seed(0)
        return self.build(torch.randn(batch_size, cfg.num_channels, cfg.image_size, cfg.image_size, generator=g))


class ViTMAEIO(ModelIO):
    """ViTMAE encoder + decoder with a fixed visible set.

    Streams: ``enc`` (groups ``cls``, ``visible``: the kept patches, in raster order) and
    ``dec`` (groups ``cls``, ``patches``: every patch position after unshuffling).
    Readout: ``logits [batch, n_patches, patch*patch*channels]``.

    Options:
        visible: indices of the patches the encoder sees; default the first
            ``int(n_patches * (1 - mask_ratio))`` patches. Its length must match the
            config's ``mask_ratio`` (HF keeps that many).
    """

    modality = "image"

    def __init__(self, module: torch.nn.Module, tokenizer: Any = None, *, visible: Sequence[int] | None = None) -> None:
        super().__init__(module, tokenizer)
        n = _n_patches(module)
        keep = int(n * (1 - module.config.mask_ratio))
        vis = list(range(keep)) if visible is None else sorted(int(v) for v in visible)
        if len(vis) != keep or len(set(vis)) != keep or not all(0 <= v < n for v in vis):
            raise ConfigError(
                f"visible must list {keep} distinct patch indices in [0, {n}) (mask_ratio="
                f"{module.config.mask_ratio}), got {len(vis)}"
            )
        hidden = [i for i in range(n) if i not in set(vis)]
        # ViTMAE keeps the patches with the smallest noise, in ascending-noise order.
        noise = torch.empty(n)
        noise[vis] = torch.arange(keep, dtype=torch.float)
        noise[hidden] = torch.arange(keep, n, dtype=torch.float)
        self.noise = noise
        self.visible = vis

    def groups(self) -> dict[str, tuple[str, ...]]:
        return {"enc": ("cls", "visible"), "dec": ("cls", "patches")}

    def build(self, data: torch.Tensor) -> ModelInputs:
        px = _pixels(self.module, data)
        b, n, k = px.shape[0], _n_patches(self.module), len(self.visible)
        return ModelInputs(
            kwargs={"pixel_values": px, "noise": self.noise.expand(b, -1).clone()},
            positions={
                "enc": {"cls": _arange_rows(b, 0, 1), "visible": _arange_rows(b, 1, k + 1)},
                "dec": {"cls": _arange_rows(b, 0, 1), "patches": _arange_rows(b, 1, n + 1)},
            },
        )

    def readout(self, output: Any, inputs: ModelInputs) -> torch.Tensor:
        return output.logits

    def example(self, batch_size: int = 2) -> ModelInputs:
        cfg = self.module.config
        g = torch.Generator().manual_seed(0)
        return self.build(torch.randn(batch_size, cfg.num_channels, cfg.image_size, cfg.image_size, generator=g))


_ENC = StreamSpec(
    block=("vit.layers.{i}", "vit.encoder.layer.{i}", "layers.{i}", "encoder.layer.{i}"),
    attn_out=(
        "vit.layers.{i}.attention.o_proj",
        "vit.encoder.layer.{i}.attention.output.dense",
        "layers.{i}.attention.o_proj",
        "encoder.layer.{i}.attention.output.dense",
    ),
    n_layers=("num_hidden_layers",),
    n_heads=("num_attention_heads",),
    d_model=("hidden_size",),
)

VIT = AdapterSpec(
    name="vit",
    model_types=("vit",),
    model_classes=("ViTForImageClassification",),
    streams=(_ENC,),
    io=ViTIO,
)

VIT_MAE = AdapterSpec(
    name="vit_mae",
    model_types=("vit_mae",),
    model_classes=("ViTMAEForPreTraining",),
    io=ViTMAEIO,
    streams=(
        StreamSpec(**{**_ENC.__dict__, "name": "enc"}),
        StreamSpec(
            name="dec",
            block=("decoder.decoder_layers.{i}",),
            attn_out=(
                "decoder.decoder_layers.{i}.attention.o_proj",
                "decoder.decoder_layers.{i}.attention.output.dense",
            ),
            n_layers=("decoder_num_hidden_layers",),
            n_heads=("decoder_num_attention_heads",),
            d_model=("decoder_hidden_size",),
        ),
    ),
)

#: what the entry point ``hf_vit`` registers: the table, then the structural discovery of
#: ViT-style (CLS + patches) classifiers it does not hold, read with ViTIO
PLUGIN = [VIT, VIT_MAE, vit_discovery(ViTIO)]
