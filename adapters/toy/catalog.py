"""Catalogue entries for the shipped toy models and their symbol tasks.

``toy-text``: GPT-2-style 4 x 4 model trained by ``nnvtv train-toy text`` with the
task-vector-prompting curriculum (ground truth: the task is injected at block 1).
``toy-text-natural``: the same model after natural ICL training only.
Both load through :func:`nnvtv.wrap` like any Hugging Face GPT-2.
"""

from __future__ import annotations

import os

from nnvtv.catalog import ModelEntry, register_model
from nnvtv.model import Model, wrap
from nnvtv.tasks import WordPairTask, register

from . import text_data
from .shipped import WEIGHTS_DIR, weights_folder  # noqa: F401  (WEIGHTS_DIR re-exported)

TOY_TEXT_MODELS = ("toy-text", "toy-text-natural")
PROMPT_FORMAT = {
    "demo": text_data.DEMO_TEMPLATE,
    "query": text_data.QUERY_TEMPLATE,
    "separator": text_data.SEPARATOR,
}


def load_toy_text(name: str = "toy-text", weights_dir: str | os.PathLike[str] | None = None) -> Model:
    """Load a shipped toy text model (safetensors + config) and wrap it."""
    from transformers import GPT2LMHeadModel

    d = weights_folder(name, weights_dir, retrain="nnvtv train-toy text")
    module = GPT2LMHeadModel.from_pretrained(d, local_files_only=True)
    return wrap(module, text_data.build_tokenizer(), name=name, meta={"prompt_format": PROMPT_FORMAT})


_DESCRIPTIONS = {
    "toy-text": "GPT-2 4x4 (d 128) trained on 8 symbol tasks + task-vector-prompting curriculum (ground truth: block 1)",
    "toy-text-natural": "the same GPT-2 4x4 after natural in-context training only (task weakly, non-locally encoded)",
}

for _name in TOY_TEXT_MODELS:
    register_model(
        ModelEntry(
            name=_name,
            description=_DESCRIPTIONS[_name],
            loader=lambda n=_name: load_toy_text(n),
            default_task="toy-perm_c",
            modality="text",
            source="shipped",
            defaults={"budget": 2048},
        )
    )

_EVAL = [text_data.SYMBOLS[i] for i in text_data.EVAL_QUERY_SYMBOLS]
for _task in text_data.TOY_TASK_NAMES:
    register(
        WordPairTask(
            f"toy-{_task}",
            [(d["input"], d["output"]) for d in text_data.toy_task_pairs(_task)],
            description=f"symbol task {_task!r} of the toy text models (held-out queries s16..s31)",
            test_inputs=_EVAL,
            models=TOY_TEXT_MODELS,
        ),
        override=True,
    )
