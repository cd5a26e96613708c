"""Catalogue entries: ``mae-vqgan`` (official checkpoint, user-supplied) and ``toy-visual`` (shipped)."""

from __future__ import annotations

import os
from pathlib import Path

from nnvtv.adapters.toy.shipped import weights_folder

from nnvtv.catalog import ModelEntry, register_model
from nnvtv.errors import CheckpointError
from nnvtv.model import Model, wrap

from .adapter import MAE_VQGAN

WEIGHTS_DIR = Path(__file__).parent / "weights"
ENV_VAR = "NNVTV_MAE_VQGAN_CHECKPOINT"
VISUAL_TASKS = ("segmentation", "low-light", "inpainting", "colorization")


def load_mae_vqgan(checkpoint: str | os.PathLike[str] | None = None) -> Model:
    """The official MAE-VQGAN from ``checkpoint`` (or ``$NNVTV_MAE_VQGAN_CHECKPOINT``), wrapped."""
    from .checkpoint import load_checkpoint

    path = checkpoint if checkpoint is not None else os.environ.get(ENV_VAR)
    if not path:
        raise CheckpointError(
            "mae-vqgan needs the official checkpoint, which nnvtv cannot download: get "
            "checkpoint-1000.pth (or another checkpoint-*.pth) from the links in the README of "
            f"github.com/amirbar/visual_prompting, then set {ENV_VAR}=/path/to/checkpoint.pth or call "
            "nnvtv.load('mae-vqgan', checkpoint='/path/to/checkpoint.pth'). A safetensors export works too."
        )
    return wrap(load_checkpoint(path), adapter=MAE_VQGAN, name="mae-vqgan")


def load_toy_visual(weights_dir: str | os.PathLike[str] | None = None) -> Model:
    """The shipped ``toy-visual`` model (safetensors with its config), wrapped; ``weights_dir``:
    the ``--out`` folder of ``nnvtv train-toy visual`` instead (or a folder holding ``toy-visual/``)."""
    from .checkpoint import load_checkpoint

    d = weights_folder("toy-visual", weights_dir, retrain="nnvtv train-toy visual --out DIR", shipped=WEIGHTS_DIR)
    return wrap(load_checkpoint(d / "model.safetensors"), adapter=MAE_VQGAN, name="toy-visual")


_SEARCH_DEFAULTS = {"budget": 2048}

register_model(
    ModelEntry(
        name="mae-vqgan",
        description="MAE-VQGAN (Bar et al. 2022), official checkpoint from a local path (ViT-L/16 + VQGAN f16)",
        loader=load_mae_vqgan,
        default_task="segmentation",
        modality="image",
        source=f"user checkpoint (${ENV_VAR})",
        defaults=_SEARCH_DEFAULTS,
    )
)
register_model(
    ModelEntry(
        name="toy-visual",
        description="MAE-VQGAN class at toy size (32 px canvas, 4x128x8 enc, 2 dec, VQGAN f4), trained on 4 procedural tasks",
        loader=load_toy_visual,
        default_task="segmentation",
        modality="image",
        source="shipped",
        defaults=_SEARCH_DEFAULTS,
    )
)
