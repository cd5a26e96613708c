"""Hugging Face ViT (classification) and ViTMAE (encoder + decoder), as table entries.

Paths are listed for transformers 5 (``vit.layers.{i}.attention.o_proj``) and 4.x
(``vit.encoder.layer.{i}.attention.output.dense``); the first that exists is used.
"""

from __future__ import annotations

from nnvtv.adapter import AdapterSpec, StreamSpec, register_adapter
from nnvtv.image_io import ViTIO, ViTMAEIO

__all__ = ["VIT", "VIT_MAE"]

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

VIT = register_adapter(
    AdapterSpec(
        name="vit",
        model_types=("vit",),
        model_classes=("ViTForImageClassification",),
        streams=(_ENC,),
        io=ViTIO,
    )
)

VIT_MAE = register_adapter(
    AdapterSpec(
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
)
