"""Toy models the project trains, and what their trainers share.

A toy model is an ordinary model of some family (a tiny GPT-2, a small MAE-VQGAN, a small
SegGPT) trained by nnvtv on procedural in-context tasks, shipped as package data, and
described by a model card that nnvtv's own :func:`~nnvtv.find` / :func:`~nnvtv.evaluate`
wrote. Its trainer is a :class:`ToyTrainer` in the registry :data:`TRAINERS` (the convention
of :mod:`nnvtv.registry`), provided by the family's plug-in through the entry-point group
``nnvtv.adapters`` like its adapter; ``nnvtv train-toy NAME`` lists and runs what is
registered. Nothing here names a family.

Shared pieces: :func:`weights_folder` (where a toy's weights are, shipped or retrained) and
:func:`warmup_cosine` (the learning-rate schedule of the visual toys).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nnvtv.errors import CheckpointError, UnknownModelError
from nnvtv.registry import Registry

__all__ = ["ToyTrainer", "TRAINERS", "register_trainer", "weights_folder", "warmup_cosine"]


@dataclass(frozen=True)
class ToyTrainer:
    """How to (re)train one or more shipped toy models.

    Attributes:
        name: the trainer's name (``nnvtv train-toy NAME``).
        description: one line for ``nnvtv train-toy --help``.
        train: ``train(out_dir: Path, *, seed: int) -> dict`` writes the weights, config and
            model card into ``out_dir`` (or ``out_dir/<model>/``) and returns a JSON-able summary.
        models: catalogue names of the models it produces.
        command: the shell command that retrains them (shown in errors when weights are missing).
    """

    name: str
    description: str
    train: Callable[..., dict[str, Any]]
    models: tuple[str, ...]
    command: str = ""


#: every toy trainer, by name
TRAINERS: Registry[ToyTrainer] = Registry(
    "toy trainer",
    ToyTrainer,
    UnknownModelError,
    how_to_add="A plug-in adds one by providing an nnvtv.toys.ToyTrainer through the entry-point group 'nnvtv.adapters'.",
)


def register_trainer(trainer: ToyTrainer, *, replace: bool = False) -> ToyTrainer:
    """Add ``trainer`` to :data:`TRAINERS`."""
    return TRAINERS.register(trainer, replace=replace)


def weights_folder(name: str, weights_dir: str | os.PathLike[str] | None, *, shipped: Path, retrain: str) -> Path:
    """The folder holding toy ``name``'s ``model.safetensors`` + ``config.json``.

    ``weights_dir`` may be either a folder that holds ``<name>/`` (the shipped weights' folder, or
    the ``--out`` of a trainer that writes ``--out/<name>/``) or the model's own folder (the
    ``--out`` of one that writes there); ``None``: ``shipped/<name>``, the weights in the package.

    Raises:
        CheckpointError: neither holds both files; the message gives ``retrain`` (the command
            that rebuilds them).
    """
    candidates = [shipped / name] if weights_dir is None else [Path(weights_dir) / name, Path(weights_dir)]
    for d in candidates:
        if (d / "model.safetensors").exists() and (d / "config.json").exists():
            return d
    where = " or ".join(str(d) for d in candidates)
    raise CheckpointError(
        f"weights for {name!r} (model.safetensors + config.json) are missing from {where}; reinstall "
        f"nnvtv or rebuild them with `{retrain}`"
    )


def warmup_cosine(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps to ``base``, then cosine decay to 0 at ``total``.

    The shipped visual toys were trained with exactly this expression (its rounding included), so
    keep it as written for bit-reproducible retraining.
    """
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
