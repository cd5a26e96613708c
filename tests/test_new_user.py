"""What a new user tries (issue 18): every bad input ends cleanly, before any model work.

On the command line: one line on stderr and exit code 2. In Python: an ``NnvtvError``. Output
folders never read as a finished run unless the run finished. Scores come with warnings where
they are hard to read. The README's Python blocks run as written.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import io
import json
import os
import re
import tempfile
from pathlib import Path

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

import nnvtv
import nnvtv.cli as cli
from nnvtv.cli import app
from nnvtv.errors import CheckpointError, ConfigError, EmptyDataError, NnvtvError, UnknownTaskError
from nnvtv.find import ICL_MARGIN, Scores, score_warnings
from nnvtv.report import results_table
from nnvtv.tasks import WordPairTask
from nnvtv.toys import TRAINERS, ToyTrainer

find_mod = importlib.import_module("nnvtv.find")  # the module (``nnvtv.find`` is also the function)
runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent
TOY_TASKS = [f"toy-{t}" for t in ("copy", "successor", "predecessor", "shift5", "mirror", "perm_a", "perm_b", "perm_c")]


# ----------------------------------------------------------------------------- helpers


def _one_error_line(res, *words: str) -> str:
    """The CLI failed cleanly: exit 2, one ``error:`` line on stderr naming ``words``, no traceback."""
    assert res.exit_code == 2, (res.exit_code, res.output)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1, res.stderr
    assert "Traceback" not in res.output and "Traceback" not in res.stderr
    for w in words:
        assert w in errors[0], (w, errors[0])
    return errors[0]


def _toy_pairs(n: int = 32, shift: int = 1) -> list[dict[str, str]]:
    """A word-pair file in toy-text's vocabulary (symbols s00..s31)."""
    return [{"input": f"s{i:02d}", "output": f"s{(i + shift) % 32:02d}"} for i in range(n)]


def _write(path: Path, data) -> Path:
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def _no_leftovers(folder: Path) -> None:
    """No temporary folder of a staged write is left beside an --out folder."""
    assert not [p.name for p in folder.iterdir() if ".partial-" in p.name]


@pytest.fixture(scope="module")
def toy() -> nnvtv.Model:
    torch.manual_seed(0)
    return nnvtv.load("toy-text")


@pytest.fixture(scope="module")
def small_result(toy):
    """A real, quick search (one greedy step over the 16 heads) for the CLI writing tests."""
    return nnvtv.find(toy, "toy-successor", strategy="greedy", budget=16, n_mean_prompts=8)


@pytest.fixture
def quick_find(monkeypatch):
    """`nnvtv find` on the CLI with few mean prompts (the CLI imports nnvtv.find.find when run)."""
    original = find_mod.find
    monkeypatch.setattr(find_mod, "find", functools.partial(original, n_mean_prompts=8))


@pytest.fixture
def no_forward(monkeypatch):
    """Fail the test if anything reaches a forward pass (mean collection or a model run)."""

    def refuse(*args, **kwargs):
        raise AssertionError("a forward pass ran before the arguments were checked")

    import nnvtv.mean_prompts

    monkeypatch.setattr(nnvtv.mean_prompts, "mean_activations", refuse)  # where find collects its means
    monkeypatch.setattr(nnvtv.Model, "run", refuse)


# ----------------------------------------------------------------------------- bug 1: JSON task + --out


def test_cli_find_on_a_json_task_writes_everything_and_prints_the_table(tmp_path, quick_find):
    task = _write(tmp_path / "my_pairs.json", _toy_pairs())
    out = tmp_path / "run"
    res = runner.invoke(app, ["find", "--task", str(task), "--strategy", "greedy", "--budget", "16", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "toy-text / my_pairs" in res.stdout and "held-out accuracy" in res.stdout
    written = re.search(r"wrote (.+)/: (.+)", res.stdout)
    assert written is not None, res.stdout
    names = written.group(2).split(", ")
    assert sorted(names) == sorted(p.name for p in out.iterdir())  # the line lists every file, and only those
    assert "examples.png" not in names  # a text task has no pictures
    assert names[-1] == "results.json"
    _no_leftovers(tmp_path)


# ----------------------------------------------------------------------------- bug 2: a vector carries its task


def test_saved_vector_carries_its_json_task_and_reevaluates_without_the_file(tmp_path, quick_find):
    task = _write(tmp_path / "shift3.json", _toy_pairs(shift=3))
    out = tmp_path / "run"
    res = runner.invoke(app, ["find", "--task", str(task), "--strategy", "greedy", "--budget", "16", "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    found = json.loads(res.stdout)
    saved = json.loads((out / "task_vector.json").read_text())
    assert saved["task"] == "shift3"
    data = saved["task_data"]
    assert data["pairs"][:2] == [["s00", "s03"], ["s01", "s04"]] and data["source"]["path"] == str(task.resolve())
    assert len(data["sha256"]) == 64 and len(data["source"]["sha256"]) == 64
    task.unlink()  # the file is gone; the vector still knows its task
    res = runner.invoke(app, ["evaluate", "--vector", str(out), "--json"])
    assert res.exit_code == 0, res.output
    again = json.loads(res.stdout)
    assert again["task"] == "shift3"
    for key in ("zero_shot", "icl", "task_vector"):
        assert again["scores"][key] == pytest.approx(found["scores"][key])


def test_evaluate_task_accepts_a_name_or_a_file(tmp_path, toy, small_result):
    small_result.task_vector.save(tmp_path / "vec")
    res = runner.invoke(app, ["evaluate", "--vector", str(tmp_path / "vec"), "--task", "toy-predecessor", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["task"] == "toy-predecessor"
    assert any("found on task 'toy-successor'" in w for w in data["warnings"])
    f = _write(tmp_path / "succ.json", _toy_pairs(shift=1))
    res = runner.invoke(app, ["evaluate", "--vector", str(tmp_path / "vec"), "--task", str(f), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["task"] == "succ"
    # Python: the vector's own task by default
    s = nnvtv.evaluate(toy, vector=small_result.task_vector, shots=5, seed=0)
    assert s.task_vector == pytest.approx(small_result.scores.task_vector)


def test_old_vector_files_without_task_data_still_load(tmp_path, toy, small_result):
    small_result.task_vector.save(tmp_path)
    meta = tmp_path / "task_vector.json"
    info = json.loads(meta.read_text())
    del info["task_data"]  # as written before the field existed
    meta.write_text(json.dumps(info))
    tv = nnvtv.TaskVector.load(tmp_path)
    assert tv.task_data is None and tv.task_object().name == "toy-successor"  # found by name
    info["task"] = "gone-task"
    meta.write_text(json.dumps(info))
    with pytest.raises(UnknownTaskError, match="--task"):
        nnvtv.TaskVector.load(tmp_path).task_object()
    res = runner.invoke(app, ["evaluate", "--vector", str(tmp_path)])
    _one_error_line(res, "gone-task", "--task")


def test_damaged_task_data_is_refused(small_result):
    data = dict(small_result.task_vector.task_data)
    data["pairs"] = [list(p) for p in data["pairs"]]
    data["pairs"][0][1] = "s31"
    with pytest.raises(ConfigError, match="sha256"):
        nnvtv.tasks.from_dict(data)
    with pytest.raises(ConfigError, match="not a word-pair task record"):
        nnvtv.tasks.from_dict({"kind": "pictures"})


# ----------------------------------------------------------------------------- bug 3: misleading results


def test_shots_beyond_the_model_warn_and_no_gap_share_is_shown(toy):
    s = nnvtv.evaluate(toy, "toy-perm_c", shots=6, seed=0)  # toy-text reads at most 5 demonstrations
    assert s.icl <= s.zero_shot and not s.has_gap
    assert s.gap_closed is None
    assert any("at most 5" in w for w in s.warnings), s.warnings
    assert any("no better than zero-shot" in w for w in s.warnings), s.warnings
    assert s.as_dict()["warnings"] == s.warnings


def test_results_table_never_shows_a_share_of_no_gap(small_result):
    r = small_result
    r_no_gap = find_mod.SearchResult(**{**r.__dict__, "scores": Scores("accuracy", 0.0625, 0.0, 1.0, 16, 6)})
    console = Console(file=io.StringIO(), width=100)
    console.print(results_table(r_no_gap))
    text = console.file.getvalue()
    assert "gap closed" in text and "n/a" in text and "%" not in text.split("gap closed")[1].split("\n")[0]


@pytest.mark.parametrize(
    ("zs", "icl", "higher", "expected"),
    [
        (0.0, 0.1, True, "not clearly better"),  # the animal-sound task: 0.00 / 0.10
        (0.95, 1.0, True, "already scores 0.950"),  # zero-shot already solves it
        (0.0625, 0.0, True, "no better than zero-shot"),
        (1.0, 0.95, False, "not clearly better"),  # MSE: ICL must cut the error by 10%
        (0.0, 1.0, True, None),
        (1.0, 0.5, False, None),
    ],
)
def test_score_warnings(zs, icl, higher, expected):
    s = Scores("accuracy" if higher else "mse", zs, icl, None, 16, 5, higher_is_better=higher)
    warnings = score_warnings(s)
    if expected is None:
        assert warnings == []
    else:
        assert any(expected in w for w in warnings), warnings
    assert ICL_MARGIN == 0.1


def test_gap_closed_follows_the_metric_direction():
    assert Scores("mse", 1.0, 0.5, 0.75, higher_is_better=False).gap_closed == pytest.approx(0.5)
    assert Scores("mse", 0.5, 1.0, 0.75, higher_is_better=False).gap_closed is None  # ICL worse: no gap
    assert Scores("accuracy", 0.5, 0.5, 0.5).gap_closed is None


def test_cli_prints_warnings_under_the_table_and_in_results_json(tmp_path, quick_find):
    out = tmp_path / "run"
    res = runner.invoke(app, ["find", "--task", "toy-perm_c", "--shots", "6", "--strategy", "greedy", "--budget", "16", "--out", str(out)])
    assert res.exit_code == 0, res.output
    table_end = res.stdout.index("sites:")
    warnings = [ln for ln in res.stdout[table_end:].splitlines() if ln.startswith("warning: ")]
    assert warnings and "gap closed" in res.stdout and "of (ICL - zero-shot)" not in res.stdout
    data = json.loads((out / "results.json").read_text())
    assert any("at most 5" in w for w in data["warnings"]) and data["scores"]["gap_closed"] is None


def test_shots_zero_is_refused_for_find(toy, no_forward):
    res = runner.invoke(app, ["find", "--shots", "0"])
    _one_error_line(res, "--shots", "zero-shot")
    with pytest.raises(ConfigError, match="shots=0"):
        nnvtv.find(toy, "toy-perm_c", shots=0)
    # evaluate may ask for 0 shots (its ICL row is then the zero-shot prompt)


def test_shots_beyond_the_task_are_refused_before_any_forward(toy, no_forward):
    with pytest.raises(ConfigError, match=r"shots=16 .* at most 15"):
        nnvtv.find(toy, "toy-perm_c", shots=16)
    with pytest.raises(ConfigError, match="shots"):
        nnvtv.evaluate(toy, "toy-perm_c", shots=17)


# ----------------------------------------------------------------------------- bug 4: checks before any work


@pytest.mark.parametrize(
    ("option", "match"),
    [
        ({"budget": 0}, "budget must be an int >= 1"),
        ({"budget": 2, "strategy": "greedy"}, "budget=2 is less than"),
        ({"seed": -1}, "seed must be an int >= 0"),
        ({"sparsity": -0.5}, "sparsity must be"),
        ({"sparsity": float("nan")}, "sparsity must be"),
        ({"sites": "nonsense"}, "sites must be one of 'head', 'layer'"),
        ({"groups": "last"}, "groups must be a list"),
        ({"groups": ["nope"]}, "unknown group"),
        ({"mode": "swap"}, "mode must be one of"),
        ({"strategy": "nope"}, "unknown search strategy 'nope'"),
        ({"strategy": "greedy", "bogus_option": 1}, "unknown option"),
        ({"n_mean_prompts": 0}, "n_mean_prompts"),
        ({"max_rows": 0}, "max_rows"),
        ({"eval_every": 0}, "eval_every"),
        ({"shots": 2.5}, "shots must be an int"),
        ({"budget": True}, "a bool"),
    ],
)
def test_find_checks_every_argument_before_any_forward(toy, no_forward, option, match):
    with pytest.raises(NnvtvError, match=match):
        nnvtv.find(toy, "toy-perm_c", **option)


def test_find_and_evaluate_refuse_what_is_not_a_model_or_vector(toy, no_forward):
    with pytest.raises(ConfigError, match="nnvtv.Model"):
        nnvtv.find(object(), "toy-perm_c")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="TaskVector"):
        nnvtv.evaluate(toy, "toy-perm_c", vector={"L1.H0@last": 0})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="needs a task"):
        nnvtv.evaluate(toy)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["find", "--budget", "0"], ["--budget", "got 0"]),
        (["find", "--seed", "-3"], ["--seed", "got -3"]),
        (["find", "--sites", "nonsense"], ["--sites", "head, layer", "'nonsense'"]),
        (["find", "--strategy", "annealing"], ["--strategy", "reinforce", "'annealing'"]),
        (["find", "--sparsity", "-1"], ["--sparsity", "-1"]),
        (["find", "--budget", "abc"], ["--budget"]),
        (["find", "--bogus"], ["--bogus"]),
        (["find", "--task", "no-such-task"], ["unknown task", "no-such-task"]),
        (["find", "--model", "no-such-model"], ["unknown model", "no-such-model"]),
        (["find", "--device", "tpu"], ["tpu"]),
        (["find", "--dtype", "int8"], ["int8"]),
    ],
)
def test_cli_find_bad_arguments_end_in_one_line(args, words, no_forward):
    _one_error_line(runner.invoke(app, args), *words)


def test_nan_vector_file_is_refused(tmp_path, small_result):
    from safetensors.torch import load_file, save_file

    r = small_result
    dataclasses.replace(r.task_vector, values={s: r.means[s] for s in r.space[4:6]}).save(tmp_path)
    f = tmp_path / "task_vector.safetensors"
    tensors = load_file(str(f))
    name = next(iter(tensors))
    tensors[name][0, 0] = float("nan")
    save_file(tensors, str(f), metadata={"format": "nnvtv.task_vector/1"})
    with pytest.raises(CheckpointError, match="NaN"):
        nnvtv.TaskVector.load(tmp_path)
    _one_error_line(runner.invoke(app, ["evaluate", "--vector", str(tmp_path)]), "NaN", "finite")


def test_non_finite_means_stop_the_search_before_it_starts(toy, monkeypatch):
    import nnvtv.mean_prompts

    original = nnvtv.mean_prompts.mean_activations

    def poisoned(*args, **kwargs):
        means = original(*args, **kwargs)
        next(iter(means.values())).fill_(float("inf"))
        return means

    monkeypatch.setattr(nnvtv.mean_prompts, "mean_activations", poisoned)
    monkeypatch.setattr(find_mod, "run_search", lambda *a, **k: pytest.fail("the search ran on non-finite means"))
    with pytest.raises(ConfigError, match="NaN or infinite"):
        nnvtv.find(toy, "toy-perm_c", n_mean_prompts=4)


def test_prompts_longer_than_the_context_are_refused_before_any_forward(toy, no_forward):
    pairs = [(f"s{i:02d}", f"s{(i + 1) % 32:02d}") for i in range(32)]
    long = WordPairTask("long", pairs, test_inputs=["s30", "s31"], default_shots=20)  # 30 pairs to learn from
    with pytest.raises(ConfigError, match=r"is 83 tokens, but the model reads at most 64 \(config n_positions\)"):
        nnvtv.evaluate(toy, long, shots=20)  # 1 + 20 * 4 + 2 = 83 tokens > 64
    with pytest.raises(ConfigError, match="at most 64"):
        toy.inputs([" ; ".join(["s01 -> s02"] * 20 + ["s03 ->"])])  # 1 + 20 * 4 + 2 tokens
    with pytest.raises(ConfigError, match="at most 64"):
        toy.inputs(torch.ones(1, 65, dtype=torch.long))


# ----------------------------------------------------------------------------- bug 5: say what the user did


def test_english_task_on_toy_text_names_the_task_a_word_and_the_tasks_that_suit(toy, no_forward):
    with pytest.raises(ConfigError) as info:
        nnvtv.find(toy, "antonyms")
    msg = str(info.value)
    assert "antonyms" in msg and "'hot'" in msg and "toy-perm_a" in msg and "nnvtv tasks --model toy-text" in msg
    assert "tokenizes to nothing" not in msg
    _one_error_line(runner.invoke(app, ["find", "--task", "country_capital"]), "country_capital", "toy-perm_c")


def test_text_task_on_a_visual_model_is_refused_in_the_users_words(no_forward):
    res = runner.invoke(app, ["find", "--model", "toy-visual", "--task", "antonyms"])
    line = _one_error_line(res, "antonyms", "text task", "toy-visual", "images", "segmentation")
    assert "CanvasPrompts" not in line and "nnvtv.canvas" not in line
    res = runner.invoke(app, ["find", "--model", "toy-text", "--task", "segmentation"])
    _one_error_line(res, "segmentation", "image task", "toy-visual")


def test_tasks_for_a_model(toy):
    res = runner.invoke(app, ["tasks", "--model", "toy-text"])
    assert res.exit_code == 0, res.output
    for name in TOY_TASKS:
        assert name in res.stdout
    assert "antonyms" not in res.stdout and "segmentation" not in res.stdout
    res = runner.invoke(app, ["tasks", "--model", "toy-visual"])
    assert res.exit_code == 0 and "segmentation" in res.stdout and "toy-perm_a" not in res.stdout
    _one_error_line(runner.invoke(app, ["tasks", "--model", "no-such-model"]), "no-such-model")
    # Python: by the catalogue entry (nothing loaded), and on a loaded model (its tokenizer decides)
    assert [t.name for t in nnvtv.tasks.for_model("toy-text")] == TOY_TASKS
    assert [t.name for t in nnvtv.tasks.for_model(toy)] == TOY_TASKS
    assert "antonyms" in [t.name for t in nnvtv.tasks.for_model("smollm2-135m")]


def test_a_toy_task_on_another_text_model_warns(toy):
    other = nnvtv.wrap(toy.module, toy.io.tokenizer, name="my-gpt2", meta=toy.meta, validate=False)
    s = nnvtv.evaluate(other, "toy-copy")
    assert any("written for toy-text" in w for w in s.warnings)


# ----------------------------------------------------------------------------- bug 6: max_length


@pytest.fixture(scope="module")
def short_toy(toy):
    return nnvtv.wrap(toy.module, toy.io.tokenizer, name="toy-text", meta=toy.meta, max_length=8, validate=False)


def test_max_length_drops_whole_demonstrations_and_keeps_the_query_and_last(short_toy):
    task = nnvtv.tasks.get("toy-successor")
    demos = [("s01", "s02"), ("s03", "s04")]
    batch = task.icl(short_toy, [("s05", "s06")], demos, shots=2, seed=0)
    (prompt,) = batch.prompts
    assert prompt.endswith("s05 ->") and prompt.count("->") == 2  # one whole demonstration dropped, oldest first
    assert batch.dropped_demos == 1
    ids = batch.inputs.kwargs["input_ids"][0]
    last = int(batch.inputs.positions[""]["last"][0, 0])
    tok = short_toy.io.tokenizer
    assert tok.convert_ids_to_tokens([int(ids[last - 1]), int(ids[last])]) == ["s05", "->"]
    # the example: max_length=4 keeps `<bos> s05 ->`, never `<bos> s01 -> s02`
    four = nnvtv.wrap(short_toy.module, tok, name="toy-text", meta=short_toy.meta, max_length=4, validate=False)
    batch = task.icl(four, [("s05", "s06")], demos, shots=2, seed=0)
    assert batch.prompts == ["s05 ->"] and batch.dropped_demos == 2


def test_max_length_never_cuts_a_prompt_and_is_checked(short_toy, toy):
    with pytest.raises(ConfigError, match="max_length=8"):
        short_toy.inputs(["s01 -> s02 ; s03 -> s04 ; s05 ->"])
    with pytest.raises(ConfigError, match="context of 64 tokens"):
        nnvtv.wrap(toy.module, toy.io.tokenizer, max_length=65, validate=False)
    with pytest.raises(ConfigError, match="max_length must be an int"):
        nnvtv.wrap(toy.module, toy.io.tokenizer, max_length=0, validate=False)


def test_dropped_demonstrations_are_warned_about(short_toy):
    s = nnvtv.evaluate(short_toy, "toy-successor", shots=2)
    assert any("dropped to fit max_length=8" in w for w in s.warnings), s.warnings
    r = nnvtv.find(short_toy, "toy-successor", shots=2, strategy="greedy", budget=16, n_mean_prompts=4)
    assert any(w.startswith("means: 4 of 8 demonstrations were dropped") for w in r.warnings), r.warnings


# ----------------------------------------------------------------------------- friction


def test_site_has_a_short_str_and_repr():
    site = nnvtv.Site(1, 0, "last")
    assert str(site) == repr(site) == "L1.H0@last"
    assert repr([site, nnvtv.Site(2, None, "cls", "enc")]) == "[L1.H0@last, enc.L2@cls]"
    assert nnvtv.Site.parse(repr(site)) == site


@pytest.mark.parametrize("width", [40, 80])
def test_models_and_tasks_never_cut_names(monkeypatch, width):
    monkeypatch.setattr(cli.common, "out", Console(width=width))
    res = runner.invoke(app, ["models"])
    assert res.exit_code == 0
    for e in nnvtv.list_models():
        assert e.name in res.stdout, (e.name, res.stdout)
    _whole_table(res.stdout)
    res = runner.invoke(app, ["tasks"])
    assert res.exit_code == 0
    for t in nnvtv.tasks.list_tasks():
        assert t.name in res.stdout, (t.name, res.stdout)
    assert "toy-text-natural" in res.stdout  # names listed in a wrapped column are not broken either
    _whole_table(res.stdout)


def _whole_table(text: str) -> None:
    """Every row of the table is closed on the right: nothing was cropped."""
    rows = [ln.rstrip() for ln in text.splitlines() if ln.startswith(("│", "┃"))]
    assert rows and all(ln.endswith(("│", "┃")) for ln in rows), text


def test_find_help_shows_the_catalogue_defaults():
    res = runner.invoke(app, ["find", "--help"], env={"COLUMNS": "300"})
    text = " ".join(res.stdout.split())
    assert "2048 for" in text and "toy-text" in text and "else 4096" in text  # --budget
    assert "5 for word-pair tasks" in text  # --shots
    assert "catalogue value, else 0" in text  # --sparsity


def _readme_python_blocks() -> list[str]:
    """The ```python blocks of the README's `## Python` section (a block whose first line is
    ``# needs: network`` or ``# needs: NDIF_API_KEY`` is skipped)."""
    text = (ROOT / "README.md").read_text()
    start = text.index("\n## Python\n")
    end = text.find("\n## ", start + 1)
    section = text[start : end if end != -1 else len(text)]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    return [b for b in blocks if not b.lstrip().startswith("# needs:")]


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    blocks = _readme_python_blocks()
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)  # they write runs/ here
    namespace: dict = {"__name__": "__readme__"}
    for i, block in enumerate(blocks):
        try:
            exec(compile(block, f"README.md ## Python block {i + 1}", "exec"), namespace)
        except Exception as exc:  # pragma: no cover - the message says which block
            pytest.fail(f"README ## Python block {i + 1} fails: {type(exc).__name__}: {exc}")
    assert (tmp_path / "runs" / "perm_a" / "task_vector.json").is_file()
    assert str(namespace["result"].task_vector.sites[0]).startswith("L")


# ----------------------------------------------------------------------------- task files of every odd shape


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (None, ["does not exist"]),
        ("", ["is empty"]),
        ("{not json", ["not valid JSON", "line 1"]),
        (b"\xff\xfe\x00garbage", ["not UTF-8"]),
        ({"input": "a", "output": "b"}, ["JSON dict", "keys"]),
        ('"just a string"', ["JSON str"]),
        ([], ["at least 4", "got 0"]),
        (_toy_pairs(3), ["at least 4", "got 3"]),
        ([*_toy_pairs(4), "s05 -> s06"], ["item 4", "expected an object"]),
        ([*_toy_pairs(4), {"input": "s05"}], ["item 4", "'output'"]),
        ([*_toy_pairs(4), {"in": "s05", "out": "s06"}], ["item 4", "'input'", "'output'"]),
        ([*_toy_pairs(4), {"input": "", "output": "s06"}], ["item 4", "'input'", "non-empty"]),
        ([*_toy_pairs(4), {"input": "s05", "output": "   "}], ["item 4", "'output'", "non-empty"]),
        ([*_toy_pairs(4), {"input": "s05", "output": None}], ["item 4", "'output'", "null"]),
        ([*_toy_pairs(4), {"input": "s05", "output": True}], ["item 4", "'output'", "bool"]),
        ([*_toy_pairs(4), {"input": "s05", "output": ["s06"]}], ["item 4", "'output'", "list"]),
        ([*_toy_pairs(4), {"input": "s00", "output": "s09"}], ["pair 4", "'s00'", "pair 0"]),
        (json.dumps(_toy_pairs(4))[:-1] + ', {"input": "s05", "output": NaN}]', ["item 4", "'output'", "NaN"]),
    ],
    ids=["missing", "empty", "not-json", "not-utf8", "object", "string", "no-pairs", "three-pairs", "not-an-object",
         "no-output", "wrong-keys", "empty-input", "blank-output", "null-output", "bool-output", "list-output",
         "repeated-input", "nan-output"],  # fmt: skip
)
def test_odd_task_files_are_refused_with_the_file_and_item_named(tmp_path, content, words, no_forward):
    path = tmp_path / "pairs.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        _write(path, content)
    with pytest.raises((ConfigError, EmptyDataError)) as info:
        nnvtv.tasks.get(str(path))
    assert isinstance(info.value, NnvtvError)
    for w in words:
        assert w in str(info.value), (w, str(info.value))
    _one_error_line(runner.invoke(app, ["find", "--task", str(path)]), "pairs.json", *words)


def test_task_files_of_friendly_shapes_load(tmp_path):
    bom = tmp_path / "bom.json"
    bom.write_bytes(b"\xef\xbb\xbf" + json.dumps(_toy_pairs(8)).encode())
    assert len(nnvtv.tasks.get(str(bom)).pairs) == 8
    numbers = _write(tmp_path / "numbers.json", [{"input": i, "output": i + 1, "note": "extra keys are ignored"} for i in range(6)])
    assert nnvtv.tasks.get(numbers).pairs[0] == ("0", "1")
    txt = _write(tmp_path / "pairs.txt", _toy_pairs(6))  # any existing file is read as JSON
    assert nnvtv.tasks.get(str(txt)).name == "pairs"
    with pytest.raises(ConfigError, match="not a file"):
        nnvtv.tasks.get(str(tmp_path))
    with pytest.raises(ConfigError, match="task must be"):
        nnvtv.tasks.get(42)  # type: ignore[arg-type]


def test_word_pair_task_checks_its_options():
    pairs = [(f"s{i:02d}", f"s{i + 1:02d}") for i in range(6)]
    with pytest.raises(ConfigError, match="test_inputs"):
        WordPairTask("t", pairs, test_inputs=["nope"])
    with pytest.raises(ConfigError, match="at least 2 pairs must stay"):
        WordPairTask("t", pairs, test_inputs=[a for a, _ in pairs])
    with pytest.raises(ConfigError, match="default_shots"):
        WordPairTask("t", pairs, default_shots=0)
    with pytest.raises(ConfigError, match="test_fraction"):
        WordPairTask("t", pairs, test_fraction=1.0)
    with pytest.raises(ConfigError, match="pair 2"):
        WordPairTask("t", [*pairs[:2], ("only one",), *pairs[2:]])
    split = WordPairTask("t", pairs[:4], test_fraction=0.9).split(0)
    assert len(split.train) == 2 and len(split.test) == 2  # never a train split too small to learn from


# ----------------------------------------------------------------------------- output folders


def test_out_that_is_not_a_folder_is_refused_before_any_work(tmp_path, no_forward):
    f = tmp_path / "file.txt"
    f.write_text("x")
    _one_error_line(runner.invoke(app, ["find", "--out", str(f)]), "--out", "is a file")
    _one_error_line(runner.invoke(app, ["find", "--out", str(f / "sub")]), "--out", "is a file")
    _one_error_line(runner.invoke(app, ["compare", "--out", str(f)]), "--out", "is a file")
    _one_error_line(runner.invoke(app, ["train-toy", "text", "--out", str(f)]), "--out", "is a file")
    assert f.read_text() == "x"


def _can_write(folder: Path) -> bool:
    try:
        fd, name = tempfile.mkstemp(dir=folder)
    except OSError:
        return False
    os.close(fd)
    os.unlink(name)
    return True


def test_out_that_cannot_be_written_is_refused_before_any_work(tmp_path, no_forward):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        candidates = [locked, Path("/sys"), Path("/proc")]  # root writes anywhere but in these
        where = next((d for d in candidates if d.is_dir() and not _can_write(d)), None)
        if where is None:
            pytest.skip("no unwritable folder on this machine")
        _one_error_line(runner.invoke(app, ["find", "--out", str(where / "run")]), "--out", "cannot write", str(where))
    finally:
        locked.chmod(0o700)


def test_interrupted_writing_leaves_no_folder_that_reads_as_complete(tmp_path, monkeypatch, small_result):
    monkeypatch.setattr(find_mod, "find", lambda *a, **k: small_result)
    out = tmp_path / "run"
    report = importlib.import_module("nnvtv.report")

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "plot_history", interrupt)
    res = runner.invoke(app, ["find", "--task", "toy-successor", "--out", str(out)])
    _one_error_line(res, "interrupted", str(out))
    assert not out.exists()  # nothing half-written under the name
    _no_leftovers(tmp_path)
    # an earlier, finished run in the folder stays as it was
    monkeypatch.undo()
    monkeypatch.setattr(find_mod, "find", lambda *a, **k: small_result)
    res = runner.invoke(app, ["find", "--task", "toy-successor", "--out", str(out)])
    assert res.exit_code == 0, res.output
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setattr(report, "plot_sites", interrupt)
    _one_error_line(runner.invoke(app, ["find", "--task", "toy-successor", "--out", str(out)]), "interrupted")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    _no_leftovers(tmp_path)


def test_interrupted_search_writes_nothing(tmp_path, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(find_mod, "find", interrupt)
    out = tmp_path / "run"
    _one_error_line(runner.invoke(app, ["find", "--out", str(out)]), "interrupted")
    assert not out.exists()
    _no_leftovers(tmp_path)


def test_a_rerun_into_the_same_folder_replaces_the_old_run(tmp_path, monkeypatch, small_result):
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.json").write_text("{\"stale\": true}")
    (out / "notes.txt").write_text("the user's own file")
    monkeypatch.setattr(find_mod, "find", lambda *a, **k: small_result)
    res = runner.invoke(app, ["find", "--task", "toy-successor", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "stale" not in (out / "results.json").read_text()
    assert (out / "notes.txt").read_text() == "the user's own file"
    _no_leftovers(tmp_path)
    fresh = tmp_path / "fresh"
    assert runner.invoke(app, ["find", "--task", "toy-successor", "--out", str(fresh)]).exit_code == 0
    umask = os.umask(0)
    os.umask(umask)
    assert fresh.stat().st_mode & 0o777 == 0o777 & ~umask  # a folder like any other, not a private temporary one


def test_wrote_line_names_examples_png_on_visual_tasks(tmp_path, monkeypatch, small_result):
    class Pictures:
        name, metric = "pictures", "iou"

        def example_images(self, model, vector, n, seed):
            return {k: torch.rand(2, 3, 4, 4) for k in ("canvas", "target", "icl", "zero_shot", "task_vector")}

        def score(self, readout, target):
            return torch.zeros(readout.shape[0])

    visual = find_mod.SearchResult(**{**small_result.__dict__, "task": Pictures()})
    monkeypatch.setattr(find_mod, "find", lambda *a, **k: visual)
    out = tmp_path / "run"
    res = runner.invoke(app, ["find", "--task", "toy-successor", "--out", str(out)])
    assert res.exit_code == 0, res.output
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("wrote "))
    assert "examples.png" in line and (out / "examples.png").is_file()
    assert sorted(line.split(": ", 1)[1].split(", ")) == sorted(p.name for p in out.iterdir())


@pytest.mark.slow
def test_visual_find_writes_and_lists_examples_png(tmp_path, monkeypatch):
    original = find_mod.find
    monkeypatch.setattr(find_mod, "find", functools.partial(original, n_mean_prompts=4, samples=8))
    out = tmp_path / "run"
    res = runner.invoke(app, ["find", "--model", "toy-visual", "--budget", "8", "--out", str(out)])
    assert res.exit_code == 0, res.output
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("wrote "))
    assert "examples.png" in line and (out / "examples.png").is_file()


# ----------------------------------------------------------------------------- evaluate, compare, train-toy


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--shots", "-1"], ["--shots", "-1"]),
        (["--seed", "-1"], ["--seed", "-1"]),
        (["--task", "segmentation"], ["segmentation", "image task"]),
        (["--task", "nope.json"], ["nope.json", "does not exist"]),
        (["--model", "toy-text-natural"], ["toy-text-natural", "made for"]),
    ],
)
def test_cli_evaluate_bad_arguments(tmp_path, small_result, args, words):
    small_result.task_vector.save(tmp_path)
    _one_error_line(runner.invoke(app, ["evaluate", "--vector", str(tmp_path), *args]), *words)


def test_cli_evaluate_missing_vector(tmp_path):
    _one_error_line(runner.invoke(app, ["evaluate", "--vector", str(tmp_path / "none")]), "--vector", "does not exist")
    _one_error_line(runner.invoke(app, ["evaluate", "--vector", str(tmp_path)]), "holds no saved task vector")
    _one_error_line(runner.invoke(app, ["evaluate"]), "--vector")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--seeds", "a,b"], ["--seeds", "'a,b'"]),
        (["--seeds", "0,0"], ["--seeds", "repeat"]),
        (["--seeds", "-1"], ["--seeds", "-1"]),
        (["--seeds", ","], ["--seeds", "at least one"]),
        (["--models", " , "], ["--models", "at least one"]),
        (["--models", "toy-text,toy-text"], ["--models", "twice"]),
        (["--budget", "0"], ["--budget", "got 0"]),
        (["--strategy", "nope"], ["--strategy", "'nope'"]),
        (["--sites", "x"], ["--sites", "'x'"]),
        (["--task", "nope.json"], ["nope.json"]),
        (["--models", "toy-text,toy-visual", "--task", "toy-perm_c"], ["toy-perm_c", "toy-visual", "images"]),
    ],
)
def test_cli_compare_bad_arguments_end_before_any_model_loads(monkeypatch, args, words):
    monkeypatch.setattr(nnvtv.catalog, "load", lambda *a, **k: pytest.fail("a model was loaded"))
    _one_error_line(runner.invoke(app, ["compare", *args]), *words)


def test_python_compare_checks_every_run_before_the_first_search(toy, monkeypatch):
    compare_mod = importlib.import_module("nnvtv.compare")

    monkeypatch.setattr(compare_mod, "find", lambda *a, **k: pytest.fail("a search ran"))
    with pytest.raises(ConfigError, match="distinct"):
        nnvtv.compare([toy], "toy-perm_c", seeds=[0, 0])
    with pytest.raises(ConfigError, match="seeds"):
        nnvtv.compare([toy], "toy-perm_c", seeds="0")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="seeds"):
        nnvtv.compare([toy], "toy-perm_c", seeds=[-1])
    with pytest.raises(ConfigError, match="models must be"):
        nnvtv.compare([toy, 3], "toy-perm_c")  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="'hot'"):
        nnvtv.compare([toy], "antonyms")
    with pytest.raises(ConfigError, match="budget=2"):
        nnvtv.compare([toy], "toy-perm_c", strategy="greedy", budget=2)
    with pytest.raises(ConfigError, match="shots=0"):
        nnvtv.compare([toy], "toy-perm_c", shots=0)


@pytest.fixture
def fake_trainer():
    """A registered toy trainer that writes a model folder, or is interrupted half-way."""
    calls = {"interrupt": False}

    def train(out_dir: Path, *, seed: int = 0) -> dict:
        d = Path(out_dir) / "toy-fake"
        d.mkdir(parents=True)
        (d / "config.json").write_text("{}")
        if calls["interrupt"]:
            raise KeyboardInterrupt
        (d / "model.safetensors").write_bytes(b"weights")
        return {"out": str(d), "seed": seed}

    with TRAINERS.scoped():
        TRAINERS.register(ToyTrainer("fake", "a test trainer", train, ("toy-fake",)))
        yield calls


def test_train_toy_arguments_and_interruptions(tmp_path, fake_trainer):
    _one_error_line(runner.invoke(app, ["train-toy", "nope", "--out", str(tmp_path / "w")]), "nope", "text")
    _one_error_line(runner.invoke(app, ["train-toy", "fake", "--seed", "-2", "--out", str(tmp_path / "w")]), "--seed", "-2")
    out = tmp_path / "w"
    fake_trainer["interrupt"] = True
    _one_error_line(runner.invoke(app, ["train-toy", "fake", "--out", str(out)]), "interrupted")
    assert not out.exists()  # no half-trained model where a loader would look
    _no_leftovers(tmp_path)
    fake_trainer["interrupt"] = False
    res = runner.invoke(app, ["train-toy", "fake", "--out", str(out), "--seed", "3"])
    assert res.exit_code == 0, res.output
    assert (out / "toy-fake" / "model.safetensors").read_bytes() == b"weights"
    summary = json.loads(res.stdout)
    assert summary["out"] == str(out / "toy-fake") and summary["seed"] == 3  # the final path, not the temporary one
    _no_leftovers(tmp_path)
