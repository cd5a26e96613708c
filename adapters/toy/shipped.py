"""Where the shipped toy weights live, and the one error when they are missing."""

from __future__ import annotations

import os
from pathlib import Path

from nnvtv.errors import CheckpointError

__all__ = ["WEIGHTS_DIR", "weights_folder"]

WEIGHTS_DIR = Path(__file__).parent / "weights"


def weights_folder(
    name: str, weights_dir: str | os.PathLike[str] | None = None, *, retrain: str, shipped: Path = WEIGHTS_DIR
) -> Path:
    """The folder holding ``name``'s ``model.safetensors`` + ``config.json``.

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
