"""Toy models trained by the project: ``toy-text``, ``toy-text-natural`` (tiny GPT-2s) and ``toy-seggpt``.

:data:`PLUGIN` is what the entry point ``toy`` registers: their catalogue entries, the toy text
models' symbol tasks, and the ``text`` and ``seggpt`` trainers (``nnvtv train-toy``). The visual
toy (``toy-visual``) is an MAE-VQGAN and lives with its family in :mod:`nnvtv.adapters.mae_vqgan`.
"""

from typing import Any

from . import catalog, seggpt, train_seggpt, train_text

__all__ = ["PLUGIN"]

PLUGIN: list[Any] = [*catalog.PLUGIN, seggpt.ENTRY, train_text.TRAINER, train_seggpt.TRAINER]
