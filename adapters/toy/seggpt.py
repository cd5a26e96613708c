"""``toy-seggpt``: a small ``SegGptForImageSegmentation`` trained by the project.

The same Hugging Face class as the real SegGPT (so the ``seggpt`` adapter serves both), at a
toy size: one image is 15 x 15 px (the cell of ``toy-visual``'s 32-px canvas, so both toys see
the very same procedurally generated pairs), 3-px patches (5 x 5 per image, a 10 x 5 canvas
grid), 5 layers x d 128 x 8 heads, image and mask copies merged after layer 1. Trained by
``nnvtv train-toy seggpt`` (:mod:`.train_seggpt`); weights ship as package data.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from nnvtv.catalog import ModelEntry
from nnvtv.model import Model
from nnvtv.toys import weights_folder
from nnvtv.wrapping import wrap

__all__ = ["TOY_SEGGPT_CONFIG", "build_model", "load_toy_seggpt", "WEIGHTS_DIR", "ENTRY", "RETRAIN"]

NAME = "toy-seggpt"
WEIGHTS_DIR = Path(__file__).parent / "weights"
RETRAIN = "nnvtv train-toy seggpt --out DIR"

TOY_SEGGPT_CONFIG: dict[str, Any] = dict(
    hidden_size=128,
    num_hidden_layers=5,
    num_attention_heads=8,
    mlp_dim=256,
    image_size=(30, 15),  # prompt over query, 15 x 15 px each
    patch_size=3,
    pretrain_image_size=15,
    decoder_hidden_size=32,
    merge_index=1,
    intermediate_hidden_state_indices=(1, 3, 4),
    drop_path_rate=0.0,
    hidden_dropout_prob=0.0,
)


def build_model(seed: int = 0) -> Any:
    """A freshly initialised toy SegGPT (``SegGptForImageSegmentation``), seeded."""
    import torch
    from transformers import SegGptConfig, SegGptForImageSegmentation

    torch.manual_seed(seed)
    return SegGptForImageSegmentation(SegGptConfig(**TOY_SEGGPT_CONFIG))


def load_toy_seggpt(weights_dir: str | os.PathLike[str] | None = None) -> Model:
    """Load the shipped ``toy-seggpt`` (safetensors + config.json) and wrap it."""
    from transformers import SegGptForImageSegmentation

    d = weights_folder(NAME, weights_dir, shipped=WEIGHTS_DIR, retrain=RETRAIN)
    module = SegGptForImageSegmentation.from_pretrained(d, local_files_only=True)
    return wrap(module, name=NAME)


#: the catalogue entry of ``toy-seggpt`` (registered by the ``toy`` plug-in, :mod:`nnvtv.adapters.toy`)
ENTRY = ModelEntry(
    name=NAME,
    description="SegGPT 5x8 (d 128) trained on procedural one-shot segmentation (15-px images, same pairs as toy-visual)",
    loader=load_toy_seggpt,
    default_task="segmentation",
    modality="image",
    source="shipped",
    defaults={"budget": 1024},
)
