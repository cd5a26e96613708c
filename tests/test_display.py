"""Notebook-native display (issue 20): short reprs, HTML reprs, progress that fits where it runs,
figures reachable from Python. Toy-text with small budgets; no notebook kernel is started (the
notebook is simulated by replacing the detection and the display function)."""

from __future__ import annotations

import dataclasses
import math
import sys

import matplotlib.figure
import pytest
import torch

import nnvtv
from nnvtv import progress as prog
from nnvtv import recipes
from nnvtv.compare import Comparison
from nnvtv.display import compact_sites
from nnvtv.errors import ConfigError
from nnvtv.find import Scores, SearchResult
from nnvtv.recipes import FunctionVector, LayerSweep
from nnvtv.sites import Site, SiteSpace

TASK = "toy-perm_c"
FIND = dict(strategy="greedy", budget=48, n_mean_prompts=8)


@pytest.fixture(scope="module")
def model() -> nnvtv.Model:
    return nnvtv.load("toy-text")


@pytest.fixture(scope="module")
def result(model) -> SearchResult:
    return nnvtv.find(model, TASK, progress=False, **FIND)


@pytest.fixture(scope="module")
def comparison(model) -> Comparison:
    return nnvtv.compare([model], TASK, seeds=[0, 1], progress=False, **FIND)


@pytest.fixture(scope="module")
def sweep(model) -> LayerSweep:
    return recipes.layer_sweep(model, TASK, n_mean_prompts=8, n_queries=8, progress=False)


@pytest.fixture(scope="module")
def fv(model) -> FunctionVector:
    return recipes.function_vector(model, TASK, k=2, n_mean_prompts=8, n_cie_prompts=2, n_queries=8, progress=False)


def _objects(result, comparison, sweep, fv, model) -> list:
    return [result, result.task_vector, result.scores, comparison, sweep, fv, result.means, result.space, model]


# ---------------------------------------------------------------------------- reprs


def test_compact_sites_reads_like_the_readme():
    heads = [Site(1, h, "last") for h in range(4)]
    assert compact_sites(heads) == "L1.H0-H3@last"
    grid = [Site(layer, h, "last") for layer in range(4) for h in range(4)]
    assert compact_sites(grid) == "L0-L3.H0-H3@last"
    mixed = [Site(2, 1, "query", "enc"), Site(2, 5, "query", "enc"), Site(7, None, "last")]
    assert compact_sites(mixed) == "enc.L2.H1,H5@query, L7@last"
    many = [Site(layer, 0, f"g{layer}") for layer in range(50)]
    cut = compact_sites(many, limit=40)
    assert len(cut) < 70 and cut.endswith("sites") and "+" in cut


def test_reprs_are_short_informative_lines(result, comparison, sweep, fv, model):
    for obj in _objects(result, comparison, sweep, fv, model):
        r = repr(obj)
        assert "\n" not in r and len(r) < 200, r
    tv, s = result.task_vector, result.scores
    assert repr(tv).startswith(f"TaskVector(toy-text / {TASK}: {len(tv)} sites ")
    assert compact_sites(tv.sites, 60) in repr(tv) and "replace" in repr(tv) and "of ICL" in repr(tv)
    learned = dataclasses.replace(tv)
    learned.learned = {"steps": 7, "lr": 0.01, "losses": [1.0, 0.5]}  # a learned vector's record (nnvtv.learn)
    assert "learned values" in repr(learned) and "steps 7, lr 0.01" in learned._repr_html_()
    r = repr(result)
    assert r.startswith(f"SearchResult(toy-text / {TASK}, greedy: task vector {s.task_vector:.3f} vs ICL {s.icl:.3f}")
    assert f"{len(tv)} of {len(result.space)} sites" in r and f"{result.forward_passes} passes" in r
    assert f"ICL {s.icl:.3f}" in repr(s) and f"zero-shot {s.zero_shot:.3f}" in repr(s)
    assert repr(comparison).startswith(f"Comparison({TASK}, greedy, budget 48, 2 runs: toy-text#0 TV")
    assert f"best layer {sweep.best_layer} of 4" in repr(sweep)
    assert "2 heads" in repr(fv) and f"layer {fv.layer}" in repr(fv)
    assert repr(result.means).startswith(f"Means(toy-text / {TASK}: 16 sites L0-L3.H0-H3@last, 8 prompts")


def test_reprs_and_html_never_raise_on_objects_built_by_hand():
    odd = [
        SearchResult(task_vector=None, scores=None, history=None, forward_passes=0, example_forwards=0, space=None,
                     run=None, means=None, timings={}),  # fmt: skip
        nnvtv.TaskVector(values={}, mode="replace", fingerprint="", model="", task="", strategy=""),
        nnvtv.TaskVector(values={Site(0, 0, "last"): torch.zeros(1, 2)}, mode="add", fingerprint="f", model="m", task="t",
                         strategy="s", space=["bad site name"], scores={"fraction_of_icl": "x"}, probabilities=[0.5, 0.2]),  # fmt: skip
        Scores(metric="accuracy", zero_shot=0.1, icl=float("nan")),
        Scores(metric="accuracy", zero_shot="?", icl=None, task_vector=0.3),  # properties raise TypeError
        Comparison(task="t", metric="m", strategy="s", budget=None, runs=[], jaccard=[], transfer=[]),
        LayerSweep(model="m", fingerprint="f", task="t", layers=[], accuracy=[], means=torch.zeros(0, 0), zero_shot=0.0,
                   icl=math.inf, shots=0, n_queries=0, n_mean_prompts=0, forward_passes=0, example_forwards=0, seconds=0.0),
        FunctionVector(model="m", fingerprint="f", task="t", layer=0, heads=[], vector=torch.zeros(2), cie=None, zero_shot=0.0,
                       zero_shot_fv=0.0, shuffled=0.0, shuffled_fv=0.0, icl=0.0, shots=0, n_queries=0, n_mean_prompts=0,
                       n_cie_prompts=0, forward_passes=0, seconds=0.0),  # fmt: skip
        nnvtv.Means({}, count=0, fingerprint="x"),
        SiteSpace([]),
    ]
    for obj in odd:
        r = repr(obj)
        assert "\n" not in r and len(r) < 200 and r.startswith(type(obj).__name__), r
        html = obj._repr_html_()
        assert html is None or isinstance(html, str)


# ---------------------------------------------------------------------------- HTML


def test_html_shows_scores_sites_and_a_heatmap(result, model):
    s, tv = result.scores, result.task_vector
    html = result._repr_html_()
    for number in (s.zero_shot, s.icl, s.task_vector):
        assert f"{number:.3f}" in html
    assert compact_sites(tv.sites, 400) in html and f"{len(tv)} of {len(result.space)}" in html
    assert "<img src='data:image/png;base64," in html and "greedy" in html
    tv_html = tv._repr_html_()
    assert "<img" in tv_html and compact_sites(tv.sites, 400) in tv_html and f"{s.icl:.3f}" in tv_html
    assert f"{s.icl:.3f}" in s._repr_html_() and "<table>" in s._repr_html_()
    assert "L0-L3.H0-H3@last" in result.means._repr_html_() and "[1, 32]" in result.means._repr_html_()
    assert "4" in result.space._repr_html_() and "last" in result.space._repr_html_()
    assert "gpt2" in model._repr_html_() and "d_model" in model._repr_html_()


def test_html_shows_warnings(result):
    warned = dataclasses.replace(result, warnings=["ICL is not clearly better than zero-shot <here>"])
    html = warned._repr_html_()
    assert "warnings" in html and "ICL is not clearly better than zero-shot &lt;here&gt;" in html
    assert "1 warning" in repr(warned)
    s = Scores(metric="accuracy", zero_shot=0.5, icl=0.5, warnings=["no gap"])
    assert "no gap" in s._repr_html_() and "n/a" not in repr(s)


def test_html_of_comparison_and_recipes(comparison, sweep, fv):
    html = comparison._repr_html_()
    assert "toy-text#0" in html and "toy-text#1" in html and "Jaccard" in html and "<img" in html
    html = sweep._repr_html_()
    assert f"{sweep.best_accuracy:.3f}" in html and f"L{sweep.best_layer}" in html and "<img" in html
    html = fv._repr_html_()
    assert compact_sites(fv.heads, 400) in html and f"{fv.zero_shot_fv:.3f}" in html and "<img" in html


# ---------------------------------------------------------------------------- progress


def test_progress_false_prints_nothing(model, capsys, monkeypatch):
    monkeypatch.setattr(prog, "enabled", True)
    capsys.readouterr()
    nnvtv.find(model, TASK, progress=False, **FIND)
    assert capsys.readouterr() == ("", "")
    nnvtv.find(model, TASK, **FIND)  # the default reports: lines on stderr, not a terminal here
    out, err = capsys.readouterr()
    assert out == "" and "nnvtv: mean activations" in err and "nnvtv: search (greedy)" in err and "held-out scores" in err


def test_progress_off_by_environment_unless_asked(model, capsys, monkeypatch):
    monkeypatch.setattr(prog, "enabled", False)  # NNVTV_PROGRESS=0
    capsys.readouterr()
    nnvtv.evaluate(model, TASK)
    assert capsys.readouterr() == ("", "")
    nnvtv.evaluate(model, TASK, progress=True)
    assert "held-out scores: 2/2" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="progress must be"):
        nnvtv.evaluate(model, TASK, progress="yes")


def test_progress_callable_receives_the_events_in_order(model):
    events: list[prog.Progress] = []
    nnvtv.find(model, TASK, progress=events.append, **FIND)
    stages = [e.stage for e in events]
    assert list(dict.fromkeys(stages)) == ["means", "search", "evaluate"]
    assert stages == sorted(stages, key=["means", "search", "evaluate"].index)  # each stage in one run
    for stage in ("means", "search", "evaluate"):
        done = [e.completed for e in events if e.stage == stage]
        assert done == sorted(done) and done[0] == 0
    assert events[-1] == prog.Progress("evaluate", 3, 3)
    assert {e.total for e in events if e.stage == "search"} == {FIND["budget"]}
    assert [e for e in events if e.stage == "search"][-1].info["strategy"] == "greedy"


def test_compare_keeps_its_label_callback(model):
    seen: list[tuple[str, str]] = []
    nnvtv.compare([model], TASK, seeds=[0, 1], progress=lambda label, e: seen.append((label, e.stage)), **FIND)
    labels = list(dict.fromkeys(label for label, _ in seen))
    assert labels == ["toy-text#0", "toy-text#1", "all runs"] and ("all runs", "transfer") in seen


class _Handle:
    def __init__(self, shown: list):
        self.shown = shown

    def update(self, obj) -> None:
        self.shown.append(obj)


def test_simulated_notebook_gets_the_notebook_bar(model, capsys, monkeypatch):
    shown: list = []
    monkeypatch.setattr(prog, "enabled", True)
    monkeypatch.setattr(prog, "in_notebook", lambda: True)
    monkeypatch.setattr(prog, "_display", lambda obj: (shown.append(obj), _Handle(shown))[1])
    assert isinstance(prog.choose_bar(), prog.NotebookBar)
    capsys.readouterr()
    nnvtv.find(model, TASK, **FIND)
    assert capsys.readouterr() == ("", "")  # nothing on stderr: one output updated in place
    final = shown[-1]
    html, text = final._repr_html_(), repr(final)
    for stage in ("mean activations", "search (greedy)", "held-out scores"):
        assert stage in html and stage in text
    assert "3/3" in html and "█" in html
    with prog.status("converting"):
        pass
    assert "converting: done in" in repr(shown[-1])


def test_the_display_fits_where_it_runs(monkeypatch):
    monkeypatch.setattr(prog, "in_notebook", lambda: False)
    monkeypatch.setattr(prog, "_stderr_is_terminal", lambda: True)
    assert isinstance(prog.choose_bar(), prog.RichBar)
    monkeypatch.setattr(prog, "_stderr_is_terminal", lambda: False)
    assert isinstance(prog.choose_bar(), prog.LineBar)
    monkeypatch.undo()
    assert prog.in_notebook() is False  # no kernel here


def test_notebook_detection_looks_for_an_ipykernel_shell(monkeypatch):
    import types

    ZMQInteractiveShell = type("ZMQInteractiveShell", (), {})  # noqa: N806 - the class name is what counts
    Kernel = type("ColabShell", (ZMQInteractiveShell,), {})  # noqa: N806
    Terminal = type("TerminalInteractiveShell", (), {})  # noqa: N806
    for shell, expected in ((ZMQInteractiveShell(), True), (Kernel(), True), (Terminal(), False), (None, False)):
        monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda shell=shell: shell))
        assert prog.in_notebook() is expected


# ---------------------------------------------------------------------------- figures


def test_plot_methods_return_figures_and_save_files(result, comparison, sweep, fv, tmp_path):
    made = {
        "result.png": result.plot(tmp_path / "result.png"),
        "sites.png": result.plot_sites(tmp_path / "sites.png"),
        "history.png": result.plot_history(tmp_path / "history.png", others=[result]),
        "vector.png": result.task_vector.plot(tmp_path / "vector.png"),
        "compare.png": comparison.plot(tmp_path / "compare.png"),
        "sweep.png": sweep.plot(tmp_path / "sweep.png", fvs=[fv]),
        "fv.png": fv.plot(tmp_path / "fv.png"),
    }
    for name, fig in made.items():
        assert isinstance(fig, matplotlib.figure.Figure)
        assert (tmp_path / name).stat().st_size > 2000
        assert fig._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"  # shows itself in Jupyter
    assert isinstance(result.plot(), matplotlib.figure.Figure)  # no path: nothing written
    labels = [ax.get_xlabel() for ax in made["sites.png"].axes] + [ax.get_ylabel() for ax in made["sites.png"].axes]
    assert "layer" in labels and "head" in labels


def test_plot_examples_runs_the_model_for_visual_tasks_only(result, model, tmp_path):
    with pytest.raises(ConfigError, match="no pictures"):
        result.plot_examples(model)
    visual = nnvtv.load("toy-visual")
    task = nnvtv.tasks.get("segmentation")
    vector = nnvtv.TaskVector(values={}, mode="replace", fingerprint=visual.fingerprint, model=visual.name,
                              task=task.name, strategy="none")  # fmt: skip
    by_hand = dataclasses.replace(result, task_vector=vector, task=task)
    fig = by_hand.plot_examples(visual, n=2, path=tmp_path / "examples.png")
    assert isinstance(fig, matplotlib.figure.Figure) and (tmp_path / "examples.png").stat().st_size > 2000
    titles = [ax.get_title() for ax in fig.axes]
    assert "ground truth" in titles and "task vector" in titles
