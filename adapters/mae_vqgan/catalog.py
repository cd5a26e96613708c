"""Catalogue entries ``mae-vqgan`` (official checkpoint, user-supplied) and ``toy-visual`` (shipped)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from nnvtv.catalog import ModelEntry
from nnvtv.errors import CheckpointError
from nnvtv.model import Model
from nnvtv.toys import weights_folder
from nnvtv.wrapping import wrap

from .adapter import MAE_VQGAN, check_readout

WEIGHTS_DIR = Path(__file__).parent / "weights"
ENV_VAR = "NNVTV_MAE_VQGAN_CHECKPOINT"
VISUAL_TASKS = ("segmentation", "low-light", "inpainting", "colorization")
RETRAIN = "nnvtv train-toy visual --out DIR"
#: toy-visual's readout: its VQGAN was trained to decode the answer block alone (MODEL_CARD.md)
TOY_READOUT = "answer"


def load_mae_vqgan(checkpoint: str | os.PathLike[str] | None = None, readout: str = "full") -> Model:
    """The official MAE-VQGAN from ``checkpoint`` (or ``$NNVTV_MAE_VQGAN_CHECKPOINT``), wrapped.

    ``readout``: ``"full"`` (default, the official evaluation: all codes decoded as one grid)
    or ``"answer"`` (the answer quadrant's codes decoded alone); see ``adapter.py``.
    """
    from .checkpoint import load_checkpoint

    check_readout(readout)
    path = checkpoint if checkpoint is not None else os.environ.get(ENV_VAR)
    if not path:
        raise CheckpointError(
            "mae-vqgan needs the official checkpoint, which nnvtv cannot download: get "
            "checkpoint-1000.pth (or another checkpoint-*.pth) from the links in the README of "
            f"github.com/amirbar/visual_prompting, then set {ENV_VAR}=/path/to/checkpoint.pth or call "
            "nnvtv.load('mae-vqgan', checkpoint='/path/to/checkpoint.pth'). A safetensors export works too."
        )
    return wrap(load_checkpoint(path), adapter=MAE_VQGAN, name="mae-vqgan", readout=readout)


def load_toy_visual(weights_dir: str | os.PathLike[str] | None = None, readout: str = TOY_READOUT) -> Model:
    """The shipped ``toy-visual`` model (safetensors with its config), wrapped; ``weights_dir``:
    the ``--out`` folder of ``nnvtv train-toy visual`` instead (or a folder holding ``toy-visual/``).

    ``readout`` defaults to :data:`TOY_READOUT` (``"answer"``): the toy's VQGAN was trained to
    decode the answer block on its own, and its card's numbers were measured that way;
    ``readout="full"`` gives the official full-grid decode.
    """
    from .checkpoint import load_checkpoint

    check_readout(readout)
    d = weights_folder("toy-visual", weights_dir, shipped=WEIGHTS_DIR, retrain=RETRAIN)
    return wrap(load_checkpoint(d / "model.safetensors"), adapter=MAE_VQGAN, name="toy-visual", readout=readout)


_SEARCH_DEFAULTS = {"budget": 2048}

#: the adapter and the two catalogue entries (the package's ``PLUGIN`` adds the trainer)
PLUGIN: list[Any] = [
    MAE_VQGAN,
    ModelEntry(
        name="mae-vqgan",
        description="MAE-VQGAN (Bar et al. 2022), official checkpoint from a local path (ViT-L/16 + VQGAN f16)",
        loader=load_mae_vqgan,
        default_task="segmentation",
        modality="image",
        source=f"user checkpoint (${ENV_VAR})",
        defaults=_SEARCH_DEFAULTS,
    ),
    ModelEntry(
        name="toy-visual",
        description="MAE-VQGAN class at toy size (32 px canvas, 4x128x8 enc, 2 dec, VQGAN f4), trained on 4 procedural tasks",
        loader=load_toy_visual,
        default_task="segmentation",
        modality="image",
        source="shipped",
        defaults=_SEARCH_DEFAULTS,
    ),
]
