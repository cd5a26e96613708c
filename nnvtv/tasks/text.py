"""Word-pair text tasks in the function-vector dataset format.

A task is a list of ``{"input": x, "output": y}`` pairs. Prompts are built with a
:class:`PromptFormat` (the model's own, e.g. the toy models' ``"s03 -> s04 ; s10 ->"``,
or a default ``"Q: x\\nA: y"`` style for LLMs). A prediction is scored on the **first
token** of the output continuation, as in Todd et al. and Hendel et al.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from nnvtv.errors import ConfigError, EmptyDataError
from nnvtv.tasks.base import Split, Task, TaskBatch

if TYPE_CHECKING:
    from nnvtv.model import Model

__all__ = ["PromptFormat", "WordPairTask", "from_json", "from_dict", "DEFAULT_FORMAT", "unwritable_word"]

#: the ``kind`` a word-pair task writes in :meth:`WordPairTask.to_dict`
KIND = "word_pairs"


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


def first_target_ids(model: Model, fmt: PromptFormat, pairs: Sequence[tuple[str, str]], *, task: str = "") -> torch.Tensor:
    """``LongTensor [N]``: first token of each pair's continuation after its query prompt.

    ``task`` names the task in errors.
    """
    tok = model.io.tokenizer
    if tok is None:
        raise ConfigError(f"model {model.name!r} has no tokenizer, and text tasks write prompts as strings: pass tokenizer= to nnvtv.wrap")
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
            which = f"task {task!r}: " if task else ""
            raise ConfigError(
                f"{which}the output {y!r} (of input {x!r}) gives model {model.name!r} no token to predict after "
                f"the prompt {q!r}: its tokenizer writes it as nothing or as special tokens only. Use a task "
                f"whose words this model's vocabulary holds (`nnvtv tasks --model {model.name}`)"
            )
        ids.append(c_ids[0])
    return torch.tensor(ids, dtype=torch.long)


def unwritable_word(tokenizer: Any, words: Sequence[tuple[str, str]]) -> tuple[str, str, list[str]] | None:
    """The first ``(role, word)`` that ``tokenizer`` cannot write, with its tokens, or ``None``.

    A word is unwritable when it tokenizes to nothing or to the tokenizer's unknown token
    (``unk_token_id``): e.g. English words on a model whose vocabulary is 32 symbols. Byte-level
    tokenizers (GPT-2, Llama) can write every string, so this only refuses closed vocabularies.
    """
    unk = getattr(tokenizer, "unk_token_id", None)
    unk_text = getattr(tokenizer, "unk_token", None)
    for role, word in words:
        ids = list(tokenizer(word, add_special_tokens=False)["input_ids"])
        if not ids or (unk is not None and unk in ids and unk_text not in word):
            return role, word, list(tokenizer.convert_ids_to_tokens(ids)) if ids else []
    return None


def _text_value(value: Any, where: str, key: str) -> str:
    """A pair's ``input`` / ``output``: a non-empty string (numbers are written as text)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)) or (isinstance(value, float) and not math.isfinite(value)):
        raise ConfigError(f"{where}: '{key}' is {json.dumps(value)} ({type(value).__name__}); expected a non-empty string")
    text = str(value)
    if not text.strip():
        raise ConfigError(f"{where}: '{key}' is {json.dumps(value)}; expected a non-empty string (a word the model can read)")
    return text


class WordPairTask(Task):
    """A word-pair task (function-vector format). Examples are ``(input, output)`` tuples.

    Args:
        name: the task's name (results, saved vectors).
        pairs: at least 4 ``(input, output)`` pairs of non-empty strings; every input once.
        description: one line for ``nnvtv tasks``.
        test_fraction: the share of pairs held out (seeded split), in ``(0, 1)``.
        test_inputs: fixed held-out inputs instead (each must be an input of a pair).
        models: catalogue names of the models the task is written for (empty: any text model).
        default_shots: demonstrations per ICL prompt when none are asked for (>= 1).
        source: where the pairs came from (``{"path", "sha256"}`` for a file), kept in
            :meth:`to_dict` for the record.

    Raises:
        ConfigError: a pair, option or input is not what the task needs (the message names it).
        EmptyDataError: fewer than 4 pairs.
    """

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
        source: Mapping[str, Any] | None = None,
    ):
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"a task name must be a non-empty string, got {name!r}")
        if isinstance(pairs, (str, bytes, Mapping)) or not isinstance(pairs, Sequence):
            raise ConfigError(f"task {name!r}: pairs must be a list of (input, output) pairs, got {type(pairs).__name__}")
        if len(pairs) < 4:
            raise EmptyDataError(f"task {name!r} needs at least 4 (input, output) pairs (2 to learn from, 2 held out), got {len(pairs)}")
        checked: list[tuple[str, str]] = []
        first: dict[str, int] = {}
        for i, p in enumerate(pairs):
            where = f"task {name!r}, pair {i}"
            if isinstance(p, (str, bytes, Mapping)) or not isinstance(p, Sequence) or len(p) != 2:
                raise ConfigError(f"{where}: expected an (input, output) pair, got {p!r}")
            a, b = _text_value(p[0], where, "input"), _text_value(p[1], where, "output")
            if a in first:
                raise ConfigError(
                    f"{where}: input {a!r} already appears in pair {first[a]}; every input must appear once "
                    "(a repeated input would leak held-out queries into the demonstrations, or ask for two answers)"
                )
            first[a] = i
            checked.append((a, b))
        if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
            raise ConfigError(f"task {name!r}: test_fraction must be a number in (0, 1), got {test_fraction!r}")
        if isinstance(default_shots, bool) or not isinstance(default_shots, int) or default_shots < 1:
            raise ConfigError(f"task {name!r}: default_shots must be an int >= 1, got {default_shots!r}")
        if test_inputs is not None:
            unknown = [x for x in test_inputs if x not in first]
            if unknown:
                raise ConfigError(f"task {name!r}: test_inputs {unknown[:3]} are not inputs of any pair")
            n_test = len(set(test_inputs))
            if n_test < 1 or n_test > len(checked) - 2:
                raise ConfigError(
                    f"task {name!r}: test_inputs hold {n_test} inputs of {len(checked)} pairs; expected 1 to "
                    f"{len(checked) - 2} (at least 2 pairs must stay to learn from)"
                )
        self.name = name
        self.pairs = tuple(checked)
        self.description = description
        self.test_fraction = float(test_fraction)
        #: fixed held-out inputs (overrides the seeded random split)
        self.test_inputs = None if test_inputs is None else frozenset(test_inputs)
        self.default_shots = default_shots
        #: catalogue names of models this task is written for (empty: any text model)
        self.models = tuple(models)
        #: where the pairs came from (``{"path", "sha256"}`` for a file), or ``None``
        self.source = None if source is None else dict(source)

    def split(self, seed: int = 0) -> Split:
        if self.test_inputs is not None:
            return Split(
                train=tuple(p for p in self.pairs if p[0] not in self.test_inputs),
                test=tuple(p for p in self.pairs if p[0] in self.test_inputs),
            )
        pairs = sorted(self.pairs)
        random.Random(seed).shuffle(pairs)
        n_test = min(len(pairs) - 2, max(1, round(len(pairs) * self.test_fraction)))
        return Split(train=tuple(pairs[n_test:]), test=tuple(pairs[:n_test]))

    def max_shots(self, split: Split, *, train_queries: bool = True) -> int | None:
        """A demonstration is a train pair other than the query: ``len(train) - 1`` for train queries."""
        return len(split.train) - (1 if train_queries else 0)

    def misfit(self, model: Model) -> str | None:
        """Modality, then whether the model's tokenizer can write every input and output."""
        problem = super().misfit(model)
        if problem is not None:
            return problem
        tok = getattr(model.io, "tokenizer", None)
        if tok is None:
            return None  # wrapped without a tokenizer: first_target_ids says so when prompts are built
        words = [("input", a) for a, _ in self.pairs] + [("output", b) for _, b in self.pairs]
        bad = unwritable_word(tok, words)
        if bad is None:
            return None
        role, word, tokens = bad
        shown = " ".join(tokens) if tokens else "nothing"
        n = len(getattr(tok, "get_vocab", dict)() or ()) or getattr(tok, "vocab_size", "?")
        return (
            f"task {self.name!r} has words model {model.name!r} cannot read: its {n}-token vocabulary writes the "
            f"{role} {word!r} as {shown}"
        )

    def _prompt(self, fmt: PromptFormat, demos: Sequence[tuple[str, str]], x: str, model: Model) -> tuple[str, int]:
        """The prompt, with the oldest demonstrations dropped while it exceeds the model's
        ``max_length`` (``model.io.max_length``); returns ``(prompt, demonstrations dropped)``."""
        prompt = fmt.prompt(demos, x)
        limit = getattr(model.io, "max_length", None)
        tok = getattr(model.io, "tokenizer", None)
        if limit is None or tok is None:
            return prompt, 0

        def length(text: str) -> int:
            return len(tok(text)["input_ids"])

        kept = list(demos)
        while length(prompt) > limit and kept:
            kept = kept[1:]
            prompt = fmt.prompt(kept, x)
        if length(prompt) > limit:
            raise ConfigError(
                f"task {self.name!r}: the query {fmt.query.format(input=x)!r} alone is {length(prompt)} tokens, more "
                f"than model {model.name!r}'s max_length={limit}; raise max_length"
            )
        return prompt, len(demos) - len(kept)

    def _batch(self, model: Model, prompts: list[str], queries: Sequence[tuple[str, str]], fmt: PromptFormat, dropped: int = 0) -> TaskBatch:
        targets = first_target_ids(model, fmt, queries, task=self.name)
        return TaskBatch(inputs=model.inputs(prompts), targets=targets, prompts=prompts, dropped_demos=dropped)

    def icl(self, model: Model, queries: Sequence[Any], demos: Sequence[Any], *, shots: int, seed: int = 0, shuffle_labels: bool = False) -> TaskBatch:
        """ICL prompts, ``shots`` demonstrations each (other inputs than the query's).

        With ``max_length`` set on the model's I/O, a prompt longer than it loses its *oldest*
        demonstrations, whole, until it fits (the query and the ``last`` token always stay; the
        count is :attr:`TaskBatch.dropped_demos`); a query that does not fit alone is refused.
        """
        if not queries:
            raise EmptyDataError(f"task {self.name!r}: no queries given")
        if isinstance(shots, bool) or not isinstance(shots, int) or shots < 0:
            raise ConfigError(f"shots must be an int >= 0, got {shots!r}")
        fmt = model_format(model)
        rng = random.Random(seed)
        prompts = []
        dropped = 0
        for x, _ in queries:
            pool = [d for d in demos if d[0] != x]
            if len(pool) < shots:
                raise ConfigError(
                    f"task {self.name!r}: shots={shots} needs {shots} demonstrations besides the query, but only "
                    f"{len(pool)} train pairs are left; use shots <= {len(pool)} or a task with more pairs"
                )
            chosen = rng.sample(pool, shots)
            if shuffle_labels and shots > 1:
                outs = [b for _, b in chosen]
                rng.shuffle(outs)
                chosen = [(a, b) for (a, _), b in zip(chosen, outs, strict=True)]
            prompt, n = self._prompt(fmt, chosen, x, model)
            prompts.append(prompt)
            dropped += n
        return self._batch(model, prompts, queries, fmt, dropped)

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

    def to_dict(self) -> dict[str, Any]:
        """The pairs and options as JSON (:func:`from_dict` rebuilds the task)."""
        return {
            "kind": KIND,
            "name": self.name,
            "pairs": [[a, b] for a, b in self.pairs],
            "description": self.description,
            "test_fraction": self.test_fraction,
            "test_inputs": None if self.test_inputs is None else sorted(self.test_inputs),
            "models": list(self.models),
            "default_shots": self.default_shots,
            "source": self.source,
            "sha256": pairs_hash(self.pairs),
        }


def pairs_hash(pairs: Sequence[tuple[str, str]]) -> str:
    """SHA-256 of the pairs (in order) as canonical JSON: identifies a word-pair task's content."""
    text = json.dumps([[a, b] for a, b in pairs], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


_DICT_KEYS = ("kind", "name", "pairs", "description", "test_fraction", "test_inputs", "models", "default_shots", "source", "sha256")


def from_dict(data: Mapping[str, Any], *, where: str = "task data") -> WordPairTask:
    """Rebuild a task :meth:`WordPairTask.to_dict` wrote; ``where`` names the data in errors.

    Raises:
        ConfigError: not a word-pair task record, or its pairs do not match its ``sha256``.
    """
    if not isinstance(data, Mapping) or data.get("kind") != KIND:
        got = data.get("kind") if isinstance(data, Mapping) else type(data).__name__
        raise ConfigError(f"{where}: not a word-pair task record (kind {got!r}, expected {KIND!r})")
    unknown = sorted(set(data) - set(_DICT_KEYS))
    if unknown or "name" not in data or "pairs" not in data:
        raise ConfigError(f"{where}: a word-pair task record has the keys {', '.join(_DICT_KEYS)} (name and pairs required); got {sorted(data)}")
    task = WordPairTask(
        data["name"], [tuple(p) if isinstance(p, list) else p for p in data["pairs"]],
        description=data.get("description", ""), test_fraction=data.get("test_fraction", 0.5),
        test_inputs=data.get("test_inputs"), models=tuple(data.get("models") or ()),
        default_shots=data.get("default_shots", 5), source=data.get("source"),
    )  # fmt: skip
    if data.get("sha256") is not None and data["sha256"] != pairs_hash(task.pairs):
        raise ConfigError(f"{where}: the pairs of task {task.name!r} do not match their recorded sha256 (edited or damaged)")
    return task


def from_json(path: str | Path, *, name: str | None = None, description: str = "", **kwargs: Any) -> WordPairTask:
    """Load a function-vector-format file: a JSON list of ``{"input": ..., "output": ...}``.

    Every item is checked (an object with a non-empty ``input`` and ``output``, strings or
    numbers; other keys are ignored), every input must appear once, and there must be at least
    4 pairs; the error names the file, the item and the key. The task is named after the file
    (``name=`` overrides) and remembers the file's path and content hash (:meth:`WordPairTask.to_dict`).

    Raises:
        ConfigError: the file is missing, unreadable, not JSON, or not in this format.
        EmptyDataError: fewer than 4 pairs.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise ConfigError(f"task file {str(path)!r} does not exist (a word-pair task file is a JSON list of {{\"input\", \"output\"}} objects)")
    if not p.is_file():
        raise ConfigError(f"task file {str(path)!r} is not a file; give a JSON file of word pairs")
    try:
        raw = p.read_bytes()
        data = json.loads(raw.decode("utf-8-sig"))
    except OSError as exc:
        raise ConfigError(f"cannot read task file {p}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"task file {p} is not UTF-8 text ({exc.reason} at byte {exc.start}); expected a JSON list of word pairs") from exc
    except json.JSONDecodeError as exc:
        what = "is empty" if not raw.strip() else f"is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        raise ConfigError(f"task file {p} {what}; expected a JSON list of {{\"input\": ..., \"output\": ...}} objects") from exc
    fmt_hint = 'a JSON list of {"input": ..., "output": ...} objects (the function-vector format)'
    if not isinstance(data, list):
        keys = f" with keys {sorted(data)[:5]}" if isinstance(data, dict) else ""
        raise ConfigError(f"task file {p} holds a JSON {type(data).__name__}{keys}; expected {fmt_hint}")
    pairs = []
    for i, d in enumerate(data):
        where = f"task file {p}, item {i}"
        if not isinstance(d, dict):
            raise ConfigError(f"{where} is {json.dumps(d)[:60]}; expected an object {{\"input\": ..., \"output\": ...}}")
        missing = [k for k in ("input", "output") if k not in d]
        if missing:
            raise ConfigError(f"{where} has no {' and no '.join(repr(k) for k in missing)} key (it has {sorted(d)}); expected {fmt_hint}")
        pairs.append((_text_value(d["input"], where, "input"), _text_value(d["output"], where, "output")))
    try:
        return WordPairTask(
            name or p.stem, pairs, description=description or f"word pairs from {p.name}",
            source={"path": str(p.resolve()), "sha256": hashlib.sha256(raw).hexdigest()}, **kwargs,
        )  # fmt: skip
    except (ConfigError, EmptyDataError) as exc:
        raise type(exc)(f"task file {p}: {exc}") from exc
