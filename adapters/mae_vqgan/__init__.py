"""MAE-VQGAN (Bar et al. 2022): model, VQGAN, checkpoint loader, adapter, catalogue entries.

* ``mae-vqgan``: the official checkpoint, loaded from a path you give
  (``nnvtv.load("mae-vqgan", checkpoint=...)`` or ``$NNVTV_MAE_VQGAN_CHECKPOINT``).
* ``toy-visual``: the same class at a small size, trained by ``nnvtv train-toy visual``,
  weights shipped with the package.
"""

from . import adapter, catalog  # noqa: F401  (register the adapter table and the models)
from .checkpoint import load_checkpoint, save_checkpoint
from .config import MaeVqganConfig, VQGANConfig, official, tiny, toy
from .model import MaeVqgan

__all__ = ["MaeVqgan", "MaeVqganConfig", "VQGANConfig", "official", "tiny", "toy", "load_checkpoint", "save_checkpoint"]
