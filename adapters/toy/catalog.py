"""The toy text models' catalogue entries and symbol tasks (registered by the ``toy`` plug-in).

``toy-text``: GPT-2-style 4 x 4 model trained by ``nnvtv train-toy text`` with the
task-vector-prompting curriculum (ground truth: the task is injected at block 1).
``toy-text-natural``: the same model after natural ICL training only.
Both load through :func:`nnvtv.wrap` like any Hugging Face GPT-2.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from nnvtv.catalog import ModelEntry
from nnvtv.model import Model
from nnvtv.tasks import WordPairTask
from nnvtv.toys import weights_folder
from nnvtv.wrapping import wrap

from . import text_data

__all__ = ["TOY_TEXT_MODELS", "WEIGHTS_DIR", "PROMPT_FORMAT", "RETRAIN", "load_toy_text", "PLUGIN"]

WEIGHTS_DIR = Path(__file__).parent / "weights"
TOY_TEXT_MODELS = ("toy-text", "toy-text-natural")
RETRAIN = "nnvtv train-toy text --out DIR"
PROMPT_FORMAT = {
    "demo": text_data.DEMO_TEMPLATE,
    "query": text_data.QUERY_TEMPLATE,
    "separator": text_data.SEPARATOR,
}


def load_toy_text(name: str = "toy-text", weights_dir: str | os.PathLike[str] | None = None) -> Model:
    """Load toy text model ``name`` (shipped, or from ``weights_dir``: a trainer's ``--out``) and wrap it."""
    from transformers import GPT2LMHeadModel

    d = weights_folder(name, weights_dir, shipped=WEIGHTS_DIR, retrain=RETRAIN)
    module = GPT2LMHeadModel.from_pretrained(d, local_files_only=True)
    return wrap(module, text_data.build_tokenizer(), name=name, meta={"prompt_format": PROMPT_FORMAT})


def _loader(name: str) -> Any:
    def load(weights_dir: str | os.PathLike[str] | None = None) -> Model:
        return load_toy_text(name, weights_dir)

    load.__doc__ = f"Load {name!r} (shipped weights, or a retrained copy in ``weights_dir``)."
    return load


_DESCRIPTIONS = {
    "toy-text": "GPT-2 4x4 (d 128) trained on 8 symbol tasks + task-vector-prompting curriculum (ground truth: block 1)",
    "toy-text-natural": "the same GPT-2 4x4 after natural in-context training only (task weakly, non-locally encoded)",
}

_EVAL = [text_data.SYMBOLS[i] for i in text_data.EVAL_QUERY_SYMBOLS]

#: the two models and their eight symbol tasks
PLUGIN: list[Any] = [
    *(
        ModelEntry(
            name=name,
            description=_DESCRIPTIONS[name],
            loader=_loader(name),
            default_task="toy-perm_c",
            modality="text",
            source="shipped",
            defaults={"budget": 2048},
            max_shots=5,  # trained on prompts of 0..5 demonstrations (see its model card)
            tasks=tuple(f"toy-{task}" for task in text_data.TOY_TASK_NAMES),  # its vocabulary: 32 symbols
        )
        for name in TOY_TEXT_MODELS
    ),
    *(
        WordPairTask(
            f"toy-{task}",
            [(d["input"], d["output"]) for d in text_data.toy_task_pairs(task)],
            description=f"symbol task {task!r} of the toy text models (held-out queries s16..s31)",
            test_inputs=_EVAL,
            models=TOY_TEXT_MODELS,
        )
        for task in text_data.TOY_TASK_NAMES
    ),
]
