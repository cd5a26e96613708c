"""Data for the ``toy-text`` model: symbols, tasks, tokenizer, prompt format, batch generator.

Everything here is deterministic and needs no network:

* 32 symbols ``s00`` .. ``s31`` plus the special tokens ``<pad>``, ``<bos>``, ``<unk>`` and the
  separators ``->`` (input -> output) and ``;`` (between demonstrations).
* :data:`TOY_TASKS`: 8 fixed bijections over the 32 symbols (5 arithmetic maps and 3 random
  permutations). The permutations were drawn once (``numpy.random.default_rng(20250101)``,
  rejection-sampled so that no two tasks agree on any input except where an arithmetic map forces
  it) and are written out below as literals, so the tasks never change with library versions.
* Prompt text: demonstrations ``"{input} -> {output}"`` joined by ``" ; "``, then the query
  ``"{input} ->"``; the tokenizer prepends ``<bos>``. Every word is one token, so the target
  (the query's output symbol) is exactly one token.
* :class:`ToyTextGenerator`: random task, random number of demonstrations, distinct inputs;
  right-padded token ids and per-position labels for every answer (each demonstration's output
  and the query's output), the usual way in-context learning emerges.

Split: evaluation queries are ``s16`` .. ``s31`` (:data:`EVAL_QUERY_SYMBOLS`). Training prompts
put only ``s00`` .. ``s15`` in the final query slot (:data:`TRAIN_QUERY_SYMBOLS`); demonstrations
use any symbol. The task maps themselves are memorised in the weights (ICL here means identifying
the task from the demonstrations), so every (input, output) pair is seen somewhere in training;
the split keeps evaluation queries out of the final query slot of ICL prompts (in training and
in the prompts used to compute mean activations). The zero-shot prompts of the TVP curriculum
(``train_text``) use all 32 symbols as queries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

N_SYMBOLS = 32
SYMBOLS: tuple[str, ...] = tuple(f"s{i:02d}" for i in range(N_SYMBOLS))

PAD_TOKEN = "<pad>"
BOS_TOKEN = "<bos>"
UNK_TOKEN = "<unk>"
ARROW_TOKEN = "->"
SEP_TOKEN = ";"
SPECIAL_TOKENS: tuple[str, ...] = (PAD_TOKEN, BOS_TOKEN, UNK_TOKEN, ARROW_TOKEN, SEP_TOKEN)

#: token string -> id. Specials first (``<pad>`` = 0, ``<bos>`` = 1), then ``s00`` = 5 .. ``s31`` = 36.
VOCAB: dict[str, int] = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + SYMBOLS)}
VOCAB_SIZE = len(VOCAB)
PAD_ID = VOCAB[PAD_TOKEN]
BOS_ID = VOCAB[BOS_TOKEN]
UNK_ID = VOCAB[UNK_TOKEN]
ARROW_ID = VOCAB[ARROW_TOKEN]
SEP_ID = VOCAB[SEP_TOKEN]
SYMBOL_OFFSET = VOCAB[SYMBOLS[0]]

#: Prompt format (the library builds prompts for this model from these three strings).
DEMO_TEMPLATE = "{input} -> {output}"
QUERY_TEMPLATE = "{input} ->"
SEPARATOR = " ; "

TRAIN_QUERY_SYMBOLS: tuple[int, ...] = tuple(range(0, 16))
EVAL_QUERY_SYMBOLS: tuple[int, ...] = tuple(range(16, 32))

_PERM_A = [8, 19, 13, 16, 2, 7, 21, 15, 24, 30, 12, 25, 0, 28, 1, 9,
           6, 26, 22, 11, 3, 18, 5, 4, 31, 23, 17, 10, 20, 14, 27, 29]  # fmt: skip
_PERM_B = [15, 29, 0, 26, 17, 16, 12, 25, 14, 7, 13, 8, 31, 23, 9, 27,
           18, 2, 6, 28, 30, 11, 1, 10, 22, 3, 24, 19, 4, 20, 5, 21]  # fmt: skip
_PERM_C = [10, 24, 21, 0, 20, 23, 14, 18, 11, 13, 3, 29, 22, 2, 4, 26,
           8, 28, 16, 7, 9, 25, 12, 27, 17, 5, 1, 30, 15, 31, 6, 19]  # fmt: skip

#: task name -> output index for each input index (a bijection of range(32)).
TOY_TASK_TABLES: dict[str, tuple[int, ...]] = {
    "copy": tuple(range(N_SYMBOLS)),
    "successor": tuple((i + 1) % N_SYMBOLS for i in range(N_SYMBOLS)),
    "predecessor": tuple((i - 1) % N_SYMBOLS for i in range(N_SYMBOLS)),
    "shift5": tuple((i + 5) % N_SYMBOLS for i in range(N_SYMBOLS)),
    "mirror": tuple(N_SYMBOLS - 1 - i for i in range(N_SYMBOLS)),
    "perm_a": tuple(_PERM_A),
    "perm_b": tuple(_PERM_B),
    "perm_c": tuple(_PERM_C),
}
TOY_TASK_NAMES: tuple[str, ...] = tuple(TOY_TASK_TABLES)

#: task name -> {input symbol: output symbol}.
TOY_TASKS: dict[str, dict[str, str]] = {
    name: {SYMBOLS[i]: SYMBOLS[j] for i, j in enumerate(table)}
    for name, table in TOY_TASK_TABLES.items()
}

# (n_tasks, 32) output symbol index per task and input.
_TASK_ARRAY = np.array([TOY_TASK_TABLES[n] for n in TOY_TASK_NAMES], dtype=np.int64)


def toy_task_pairs(name: str) -> list[dict[str, str]]:
    """The 32 ``{"input": ..., "output": ...}`` pairs of a task (function-vector dataset format)."""
    if name not in TOY_TASKS:
        raise KeyError(f"unknown toy text task {name!r}; expected one of {list(TOY_TASK_NAMES)}")
    return [{"input": x, "output": y} for x, y in TOY_TASKS[name].items()]


def symbol_id(index: int) -> int:
    """Token id of symbol ``s{index:02d}``."""
    return SYMBOL_OFFSET + int(index)


def format_prompt(demos: Sequence[tuple[str, str]], query: str) -> str:
    """``"x1 -> y1 ; x2 -> y2 ; q ->"`` (no ``<bos>``: the tokenizer adds it)."""
    parts = [DEMO_TEMPLATE.format(input=x, output=y) for x, y in demos]
    parts.append(QUERY_TEMPLATE.format(input=query))
    return SEPARATOR.join(parts)


def prompt_ids(demo_inputs: Sequence[int], task: int | str, query: int) -> list[int]:
    """Token ids (with ``<bos>``) of the prompt for symbol indices; equals the tokenizer's output."""
    t = TOY_TASK_NAMES.index(task) if isinstance(task, str) else int(task)
    ids = [BOS_ID]
    for x in demo_inputs:
        ids += [symbol_id(x), ARROW_ID, symbol_id(_TASK_ARRAY[t, x]), SEP_ID]
    ids += [symbol_id(query), ARROW_ID]
    return ids


def build_tokenizer(model_max_length: int = 64):
    """A ``PreTrainedTokenizerFast`` (WordLevel, whitespace split, ``<bos>`` prepended)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(vocab=dict(VOCAB), unk_token=UNK_TOKEN))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A",
        pair=f"{BOS_TOKEN} $A $B",
        special_tokens=[(BOS_TOKEN, BOS_ID)],
    )
    # Joins tokens with single spaces, so decode(encode(text)) == text for well-formed prompts.
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD_TOKEN,
        bos_token=BOS_TOKEN,
        unk_token=UNK_TOKEN,
        padding_side="right",
        model_max_length=model_max_length,
    )


@dataclass
class ToyTextBatch:
    """A right-padded batch of prompts.

    ``labels[b, t]`` is the token to predict *from* position ``t`` (the answer after each ``->``),
    ``-100`` elsewhere, so ``cross_entropy(logits.flatten(0, 1), labels.flatten())`` trains every
    answer. ``last_pos[b]`` is the position of the final ``->`` (the last real token).
    """

    input_ids: torch.Tensor  # (B, T) long
    attention_mask: torch.Tensor  # (B, T) long
    labels: torch.Tensor  # (B, T) long, -100 where no answer is predicted
    last_pos: torch.Tensor  # (B,) long
    task_ids: torch.Tensor  # (B,) long, index into TOY_TASK_NAMES
    n_demos: torch.Tensor  # (B,) long
    queries: torch.Tensor  # (B,) long, symbol index of the final query


class ToyTextGenerator:
    """Deterministic random prompts: same ``seed`` and same calls give the same batches.

    Each row: a task (uniform over ``tasks``), ``k`` demonstrations (uniform in
    ``[min_demos, max_demos]``), a query drawn from ``query_symbols`` and ``k`` distinct demo inputs
    drawn from the other 31 symbols. With ``equal_length`` (the default) ``k`` is drawn once per
    batch, so all rows have the same length and there is no padding; otherwise once per row
    (rows are then right padded).
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        min_demos: int = 0,
        max_demos: int = 5,
        query_symbols: Sequence[int] = TRAIN_QUERY_SYMBOLS,
        tasks: Sequence[str] = TOY_TASK_NAMES,
        equal_length: bool = True,
    ) -> None:
        if not 0 <= min_demos <= max_demos <= N_SYMBOLS - 1:
            raise ValueError(
                f"need 0 <= min_demos <= max_demos <= 31, got {min_demos}, {max_demos}"
            )
        if not query_symbols:
            raise ValueError("query_symbols is empty")
        unknown = [t for t in tasks if t not in TOY_TASKS]
        if unknown or not tasks:
            raise ValueError(
                f"unknown or no tasks {unknown!r}; expected names from {TOY_TASK_NAMES}"
            )
        self.rng = np.random.default_rng(seed)
        self.min_demos = min_demos
        self.equal_length = equal_length
        self.max_demos = max_demos
        self.query_symbols = np.asarray(query_symbols, dtype=np.int64)
        self.task_ids = np.asarray([TOY_TASK_NAMES.index(t) for t in tasks], dtype=np.int64)

    def sample(
        self,
        batch_size: int,
        *,
        task_ids: Sequence[int] | None = None,
        n_demos: int | Sequence[int] | None = None,
        queries: Sequence[int] | None = None,
        exclude: Sequence[int] | None = None,
    ) -> ToyTextBatch:
        """A batch; ``task_ids`` / ``n_demos`` / ``queries`` fix those choices per row.

        ``exclude[b]`` (a symbol index) is never used as row ``b``'s query.
        """
        rng = self.rng
        tasks = (
            rng.choice(self.task_ids, size=batch_size)
            if task_ids is None
            else np.asarray(task_ids, dtype=np.int64)
        )
        if n_demos is None:
            n_draw = 1 if self.equal_length else batch_size
            ks = rng.integers(self.min_demos, self.max_demos + 1, size=n_draw)
            ks = np.broadcast_to(ks, (batch_size,)).copy()
        else:
            ks = np.broadcast_to(np.asarray(n_demos, dtype=np.int64), (batch_size,)).copy()
        if queries is None:
            qs = rng.choice(self.query_symbols, size=batch_size)
            if exclude is not None:
                ex = np.asarray(exclude, dtype=np.int64)
                for b in np.nonzero(qs == ex)[0]:
                    pool = self.query_symbols[self.query_symbols != ex[b]]
                    qs[b] = rng.choice(pool)
        else:
            qs = np.asarray(queries, dtype=np.int64)
        rows = []
        for b in range(batch_size):
            others = np.delete(np.arange(N_SYMBOLS), qs[b])
            demo_inputs = rng.permutation(others)[: ks[b]]
            rows.append(prompt_ids(demo_inputs, tasks[b], qs[b]))
        return _collate(rows, tasks, ks, qs)


def _collate(rows: list[list[int]], tasks, ks, qs) -> ToyTextBatch:
    B = len(rows)
    T = max(len(r) for r in rows)
    ids = torch.full((B, T), PAD_ID, dtype=torch.long)
    mask = torch.zeros((B, T), dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[b, : len(r)] = 1
    labels = torch.full((B, T), -100, dtype=torch.long)
    is_arrow = ids[:, :-1] == ARROW_ID
    labels[:, :-1] = torch.where(is_arrow, ids[:, 1:], labels[:, :-1])
    last_pos = mask.sum(1) - 1
    t = torch.tensor(np.asarray(tasks), dtype=torch.long)
    q = torch.tensor(np.asarray(qs), dtype=torch.long)
    targets = torch.as_tensor(_TASK_ARRAY[t.numpy(), q.numpy()], dtype=torch.long) + SYMBOL_OFFSET
    labels[torch.arange(B), last_pos] = targets
    return ToyTextBatch(
        input_ids=ids,
        attention_mask=mask,
        labels=labels,
        last_pos=last_pos,
        task_ids=t,
        n_demos=torch.tensor(np.asarray(ks), dtype=torch.long),
        queries=q,
    )


def target_ids(task_ids: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """Token id of the correct answer for each (task index, query symbol index)."""
    out = _TASK_ARRAY[task_ids.cpu().numpy(), queries.cpu().numpy()]
    return torch.as_tensor(out, dtype=torch.long) + SYMBOL_OFFSET
