"""Where the shipped toy weights live, and the one error when they are missing."""

from __future__ import annotations

import os
from pathlib import Path

from nnvtv.errors import CheckpointError

__all__ = ["WEIGHTS_DIR", "weights_folder"]

WEIGHTS_DIR = Path(__file__).parent / "weights"


def weights_folder(name: str, weights_dir: str | os.PathLike[str] | None = None, *, retrain: str) -> Path:
    """``<weights_dir>/<name>`` holding ``model.safetensors`` + ``config.json``.

    Raises:
        CheckpointError: either file is missing; the message gives ``retrain`` (the command
            that rebuilds them).
    """
    d = (Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR) / name
    if not (d / "model.safetensors").exists() or not (d / "config.json").exists():
        raise CheckpointError(
            f"weights for {name!r} are missing from {d}; reinstall nnvtv or rebuild them with "
            f"`{retrain}`"
        )
    return d
