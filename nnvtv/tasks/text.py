"""Word-pair text tasks in the function-vector dataset format.

A task is a list of ``{"input": x, "output": y}`` pairs. Prompts are built with a
:class:`PromptFormat` (the model's own, e.g. the toy models' ``"s03 -> s04 ; s10 ->"``,
or a default ``"Q: x\\nA: y"`` style for LLMs). A prediction is scored on the **first
token** of the output continuation, as in Todd et al. and Hendel et al.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from nnvtv.errors import ConfigError, EmptyDataError
from nnvtv.tasks.base import Split, Task, TaskBatch

if TYPE_CHECKING:
    from nnvtv.model import Model

__all__ = ["PromptFormat", "WordPairTask", "from_json", "DEFAULT_FORMAT"]


@dataclass(frozen=True)
class PromptFormat:
    """How demonstrations and the query are written.

    ``demo.format(input=x, output=y)`` must start with ``query.format(input=x)``; the rest
    is the continuation whose first token is the target.
    """

    demo: str = "Q: {input}\nA: {output}"
    query: str = "Q: {input}\nA:"
    separator: str = "\n\n"

    def continuation(self, x: str, y: str) -> str:
        full, q = self.demo.format(input=x, output=y), self.query.format(input=x)
        if not full.startswith(q):
            raise ConfigError(f"prompt format: demo {self.demo!r} must start with query {self.query!r}")
        return full[len(q) :]

    def prompt(self, demos: Sequence[tuple[str, str]], x: str) -> str:
        parts = [self.demo.format(input=a, output=b) for a, b in demos] + [self.query.format(input=x)]
        return self.separator.join(parts)

    @classmethod
    def from_dict(cls, d: dict[str, str]) -> PromptFormat:
        return cls(**{k: d[k] for k in ("demo", "query", "separator") if k in d})


DEFAULT_FORMAT = PromptFormat()


def model_format(model: Model) -> PromptFormat:
    fmt = model.meta.get("prompt_format")
    if fmt is None:
        return DEFAULT_FORMAT
    return fmt if isinstance(fmt, PromptFormat) else PromptFormat.from_dict(fmt)


def first_target_ids(model: Model, fmt: PromptFormat, pairs: Sequence[tuple[str, str]]) -> torch.Tensor:
    """``LongTensor [N]``: first token of each pair's continuation after its query prompt."""
    tok = model.io.tokenizer
    if tok is None:
        raise ConfigError("text tasks need a tokenizer: pass tokenizer= to nnvtv.wrap")
    special = set(getattr(tok, "all_special_ids", None) or ())
    ids = []
    for x, y in pairs:
        q = fmt.query.format(input=x)
        cont = fmt.continuation(x, y)
        p_ids = list(tok(q)["input_ids"])
        f_ids = list(tok(q + cont)["input_ids"])
        # The target is the first token after the query's own tokens. Compare the two
        # tokenizations instead of tokenizing the continuation alone: SentencePiece (Llama)
        # tokenizers prepend a word-boundary marker to a lone string, BPE ones may not, and
        # some tokenizers append EOS (so the query's tokens minus trailing specials count).
        n_query = len(p_ids)
        while n_query and p_ids[n_query - 1] in special:
            n_query -= 1
        common = 0
        while common < min(len(p_ids), len(f_ids)) and p_ids[common] == f_ids[common]:
            common += 1
        if common >= n_query and common < len(f_ids) and f_ids[common] not in special:
            ids.append(f_ids[common])
            continue
        # The boundary merged (the query's last token is not a prefix of the full text):
        # fall back to the continuation alone, skipping whitespace-only marker tokens.
        c_ids = [i for i in tok(cont, add_special_tokens=False)["input_ids"] if i not in special]
        while len(c_ids) > 1 and not tok.decode([c_ids[0]]).strip():
            c_ids = c_ids[1:]
        if not c_ids:
            raise ConfigError(f"output {y!r} tokenizes to nothing after the query {q!r}")
        ids.append(c_ids[0])
    return torch.tensor(ids, dtype=torch.long)


class WordPairTask(Task):
    """A word-pair task (function-vector format). Examples are ``(input, output)`` tuples."""

    modality = "text"
    metric = "accuracy"

    def __init__(
        self,
        name: str,
        pairs: Sequence[tuple[str, str]],
        *,
        description: str = "",
        test_fraction: float = 0.5,
        test_inputs: Sequence[str] | None = None,
        models: Sequence[str] = (),
        default_shots: int = 5,
    ):
        if len(pairs) < 4:
            raise EmptyDataError(f"task {name!r} needs at least 4 pairs, got {len(pairs)}")
        if not 0 < test_fraction < 1:
            raise ConfigError(f"test_fraction must be in (0, 1), got {test_fraction}")
        self.name = name
        self.pairs = tuple((str(a), str(b)) for a, b in pairs)
        self.description = description
        self.test_fraction = test_fraction
        #: fixed held-out inputs (overrides the seeded random split)
        self.test_inputs = None if test_inputs is None else frozenset(test_inputs)
        self.default_shots = default_shots
        #: catalogue names of models this task is written for (empty: any text model)
        self.models = tuple(models)

    def split(self, seed: int = 0) -> Split:
        if self.test_inputs is not None:
            return Split(
                train=tuple(p for p in self.pairs if p[0] not in self.test_inputs),
                test=tuple(p for p in self.pairs if p[0] in self.test_inputs),
            )
        pairs = sorted(self.pairs)
        random.Random(seed).shuffle(pairs)
        n_test = max(1, round(len(pairs) * self.test_fraction))
        return Split(train=tuple(pairs[n_test:]), test=tuple(pairs[:n_test]))

    def _batch(self, model: Model, prompts: list[str], queries: Sequence[tuple[str, str]], fmt: PromptFormat) -> TaskBatch:
        return TaskBatch(inputs=model.inputs(prompts), targets=first_target_ids(model, fmt, queries), prompts=prompts)

    def icl(self, model: Model, queries: Sequence[Any], demos: Sequence[Any], *, shots: int, seed: int = 0, shuffle_labels: bool = False) -> TaskBatch:
        if not queries:
            raise EmptyDataError(f"task {self.name!r}: no queries given")
        fmt = model_format(model)
        rng = random.Random(seed)
        prompts = []
        for x, _ in queries:
            pool = [d for d in demos if d[0] != x]
            if len(pool) < shots:
                raise ConfigError(f"task {self.name!r}: {shots} shots need {shots} demonstrations besides the query, have {len(pool)}")
            chosen = rng.sample(pool, shots)
            if shuffle_labels and shots > 1:
                outs = [b for _, b in chosen]
                rng.shuffle(outs)
                chosen = [(a, b) for (a, _), b in zip(chosen, outs, strict=True)]
            prompts.append(fmt.prompt(chosen, x))
        return self._batch(model, prompts, queries, fmt)

    def zero_shot(self, model: Model, queries: Sequence[Any]) -> TaskBatch:
        if not queries:
            raise EmptyDataError(f"task {self.name!r}: no queries given")
        fmt = model_format(model)
        return self._batch(model, [fmt.prompt([], x) for x, _ in queries], queries, fmt)

    def loss(self, readout: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(readout.float(), dim=-1)
        return -logp.gather(-1, targets.expand(readout.shape[:-1]).unsqueeze(-1)).squeeze(-1)

    def score(self, readout: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return (readout.argmax(-1) == targets).float()


def from_json(path: str | Path, *, name: str | None = None, description: str = "", **kwargs: Any) -> WordPairTask:
    """Load a function-vector-format file: a JSON list of ``{"input": ..., "output": ...}``."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read word-pair task file {p}: {exc}") from exc
    if not isinstance(data, list) or not all(isinstance(d, dict) and "input" in d and "output" in d for d in data):
        raise ConfigError(f"{p} must be a JSON list of objects with 'input' and 'output' keys (function-vector format)")
    return WordPairTask(name or p.stem, [(d["input"], d["output"]) for d in data], description=description, **kwargs)
