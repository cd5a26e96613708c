"""MAE-VQGAN (Bar et al. 2022): model, VQGAN, checkpoint loader, adapter, catalogue entries.

* ``mae-vqgan``: the official checkpoint, loaded from a path you give
  (``nnvtv.load("mae-vqgan", checkpoint=...)`` or ``$NNVTV_MAE_VQGAN_CHECKPOINT``).
* ``toy-visual``: the same class at a small size, trained by ``nnvtv train-toy visual``,
  weights shipped with the package.
"""

from typing import Any

from . import catalog, train_toy
from .checkpoint import load_checkpoint, save_checkpoint
from .config import MaeVqganConfig, VQGANConfig, official, tiny, toy
from .model import MaeVqgan

#: what the entry point ``mae_vqgan`` registers: the adapter, ``mae-vqgan``, ``toy-visual`` and its trainer
PLUGIN: list[Any] = [*catalog.PLUGIN, train_toy.TRAINER]

__all__ = ["PLUGIN", "MaeVqgan", "MaeVqganConfig", "VQGANConfig", "official", "tiny", "toy", "load_checkpoint", "save_checkpoint"]
