"""Fast checks of the toy-text data and tokenizer (no training, no network)."""

from __future__ import annotations

import pytest
import torch
from nnvtv.adapters.toy import text_data as td

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def tokenizer():
    return td.build_tokenizer()


def test_vocab_layout():
    assert td.VOCAB_SIZE == 37
    assert td.PAD_ID == 0 and td.BOS_ID == 1
    assert [td.VOCAB[s] for s in ("s00", "s31")] == [td.SYMBOL_OFFSET, td.SYMBOL_OFFSET + 31]
    assert len(set(td.VOCAB.values())) == td.VOCAB_SIZE


def test_prompt_format():
    demos = [("s03", "s04"), ("s10", "s11")]
    assert td.format_prompt(demos, "s07") == "s03 -> s04 ; s10 -> s11 ; s07 ->"
    assert td.format_prompt([], "s07") == "s07 ->"
    text = td.SEPARATOR.join(
        [td.DEMO_TEMPLATE.format(input="s01", output="s02"), td.QUERY_TEMPLATE.format(input="s05")]
    )
    assert text == "s01 -> s02 ; s05 ->"


def test_tokenizer_round_trip(tokenizer, tmp_path):
    from transformers import AutoTokenizer

    text = "s03 -> s04 ; s10 -> s11 ; s07 ->"
    ids = tokenizer(text).input_ids
    assert ids[0] == td.BOS_ID and len(ids) == 1 + 10
    assert ids[-1] == td.ARROW_ID
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded(text).input_ids == ids
    assert loaded.pad_token == "<pad>" and loaded.bos_token == "<bos>"
    assert loaded.padding_side == "right"
    batch = loaded(["s01 ->", text], padding=True, return_tensors="pt")
    assert batch.input_ids.shape == (2, 11)
    assert batch.input_ids[0, 3:].eq(td.PAD_ID).all()
    assert loaded("s99 ->").input_ids[1] == td.UNK_ID


def test_prompt_ids_match_tokenizer(tokenizer):
    task = "perm_b"
    demo_inputs, query = [3, 17, 30], 9
    table = td.TOY_TASKS[task]
    demos = [(td.SYMBOLS[x], table[td.SYMBOLS[x]]) for x in demo_inputs]
    text = td.format_prompt(demos, td.SYMBOLS[query])
    assert td.prompt_ids(demo_inputs, task, query) == tokenizer(text).input_ids


@pytest.mark.parametrize("name", td.TOY_TASK_NAMES)
def test_tasks_are_bijections(name):
    pairs = td.toy_task_pairs(name)
    assert len(pairs) == 32
    assert sorted(p["input"] for p in pairs) == list(td.SYMBOLS)
    assert sorted(p["output"] for p in pairs) == list(td.SYMBOLS)
    assert pairs == td.toy_task_pairs(name)  # deterministic


def test_task_set():
    assert len(td.TOY_TASK_NAMES) >= 8
    assert td.TOY_TASKS["successor"]["s31"] == "s00"
    assert td.TOY_TASKS["predecessor"]["s00"] == "s31"
    assert td.TOY_TASKS["shift5"]["s29"] == "s02"
    assert td.TOY_TASKS["mirror"]["s03"] == "s28"
    assert td.TOY_TASKS["copy"]["s12"] == "s12"
    # The random permutations never agree with another task on any input.
    for p in ("perm_a", "perm_b", "perm_c"):
        for other in td.TOY_TASK_NAMES:
            if other != p:
                assert all(td.TOY_TASKS[p][s] != td.TOY_TASKS[other][s] for s in td.SYMBOLS)
    with pytest.raises(KeyError, match="unknown toy text task"):
        td.toy_task_pairs("nope")


def test_generator_is_deterministic():
    a, b = td.ToyTextGenerator(7), td.ToyTextGenerator(7)
    c = td.ToyTextGenerator(8)
    for _ in range(3):
        x, y = a.sample(16), b.sample(16)
        assert torch.equal(x.input_ids, y.input_ids) and torch.equal(x.labels, y.labels)
    assert not torch.equal(a.sample(16).input_ids, c.sample(16).input_ids)


def test_generator_batches_are_well_formed():
    gen = td.ToyTextGenerator(0, equal_length=False)
    batch = gen.sample(64)
    assert batch.input_ids.shape == batch.labels.shape == batch.attention_mask.shape
    for b in range(64):
        n = int(batch.attention_mask[b].sum())
        ids = batch.input_ids[b, :n].tolist()
        k = int(batch.n_demos[b])
        assert n == 3 + 4 * k and int(batch.last_pos[b]) == n - 1
        assert ids[0] == td.BOS_ID and ids[-1] == td.ARROW_ID
        assert batch.input_ids[b, n:].eq(td.PAD_ID).all()
        inputs = ids[1::4]
        assert len(set(inputs)) == len(inputs) == k + 1  # distinct demo inputs and query
        assert int(batch.queries[b]) in td.TRAIN_QUERY_SYMBOLS
        table = td.TOY_TASK_TABLES[td.TOY_TASK_NAMES[int(batch.task_ids[b])]]
        for i, x in enumerate(inputs):
            pos = 2 + 4 * i  # the '->' after input i
            assert ids[pos] == td.ARROW_ID
            assert int(batch.labels[b, pos]) == td.symbol_id(table[x - td.SYMBOL_OFFSET])
        assert int((batch.labels[b] != -100).sum()) == k + 1
    eq = td.ToyTextGenerator(0).sample(32)
    assert eq.attention_mask.all() and len(set(eq.n_demos.tolist())) == 1
    zs = td.ToyTextGenerator(1, min_demos=0, max_demos=0).sample(
        8, task_ids=[0] * 8, exclude=[3] * 8
    )
    assert zs.input_ids.shape == (8, 3) and not zs.queries.eq(3).any()


def test_shipped_weights_do_in_context_learning():
    from pathlib import Path

    from nnvtv.adapters.toy.catalog import load_toy_text
    from transformers import AutoTokenizer, GPT2LMHeadModel

    import nnvtv

    root = Path(td.__file__).parent / "weights"
    for name in ("toy-text", "toy-text-natural"):
        d = root / name
        if not (d / "model.safetensors").exists():
            pytest.skip(f"{d} not built")
        model = GPT2LMHeadModel.from_pretrained(d, local_files_only=True).eval()
        tok = AutoTokenizer.from_pretrained(d, local_files_only=True)
        ids = tok("s03 -> s04 ; s10 -> s11 ; s20 ->", return_tensors="pt").input_ids
        with torch.no_grad():
            pred = model(ids).logits[0, -1].argmax().item()
        assert tok.convert_ids_to_tokens(pred) == "s21"
        wrapped = load_toy_text(name)
        acc = sum(nnvtv.evaluate(wrapped, f"toy-{t}", shots=3).icl for t in ("perm_a", "shift5")) / 2
        assert acc >= 0.85, (name, acc)
