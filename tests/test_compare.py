"""Cross-model comparison: the two shipped toy text models, and tiny models of other shapes."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import nnvtv
from nnvtv.cli import app
from nnvtv.compare import Comparison, depth_profile, jaccard, transfer_score
from nnvtv.errors import FingerprintMismatchError, ShapeMismatchError, SiteError
from nnvtv.sites import Site
from nnvtv.tasks import WordPairTask

TOYS = ["toy-text", "toy-text-natural"]


@pytest.fixture(scope="module")
def toy_comparison() -> Comparison:
    return nnvtv.compare(TOYS, "toy-perm_c", strategy="greedy", budget=40, n_mean_prompts=16)


def test_compare_reports_scores_sites_overlap_and_transfer(toy_comparison):
    cmp = toy_comparison
    assert cmp.labels == TOYS and cmp.task == "toy-perm_c" and cmp.metric == "accuracy"
    for run in cmp.runs:
        assert 0 < run.n_sites <= len(run.space) == 16
        assert run.forward_passes <= 40
        assert sum(row["selected"] for row in run.depth) == run.n_sites
        assert [row["layer"] for row in run.depth] == [0, 1, 2, 3]
        assert cmp.transfer[cmp.runs.index(run)][cmp.runs.index(run)] == run.scores["task_vector"]
    a, b = cmp.runs
    # both models share one site space, so their site sets are comparable
    assert cmp.jaccard[0][0] == cmp.jaccard[1][1] == 1.0
    assert cmp.jaccard[0][1] == cmp.jaccard[1][0] == pytest.approx(jaccard(a.sites, b.sites))
    # transfer is measured, not assumed: recompute one cell by hand
    task = nnvtv.tasks.get("toy-perm_c")
    natural = nnvtv.load("toy-text-natural")
    vec = cmp.vectors[0]
    zs = task.zero_shot(natural, task.split(0).test)
    by_hand = float(task.score(vec.apply(natural, zs.inputs, transfer=True), zs.targets).mean())
    assert cmp.transfer[0][1] == pytest.approx(by_hand)
    assert not cmp.transfer_notes


def test_comparison_saves_and_reloads(toy_comparison, tmp_path):
    path = toy_comparison.save(tmp_path / "cmp")
    assert path.name == "compare.json" and (tmp_path / "cmp" / "compare.png").stat().st_size > 10_000
    back = Comparison.load(tmp_path / "cmp")
    assert back.as_dict() == toy_comparison.as_dict()
    assert [v.sites for v in back.vectors] == [v.sites for v in toy_comparison.vectors]
    bad = tmp_path / "other.json"
    bad.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(nnvtv.errors.CheckpointError, match="not an nnvtv comparison"):
        Comparison.load(bad)


def test_cross_model_transfer_is_an_explicit_opt_in(toy_comparison, kit):
    vec = toy_comparison.vectors[0]  # found on toy-text
    natural = nnvtv.load("toy-text-natural")
    task = nnvtv.tasks.get("toy-perm_c")
    zs = task.zero_shot(natural, task.split(0).test)
    with pytest.raises(FingerprintMismatchError, match="transfer=True"):
        vec.apply(natural, zs.inputs)
    assert vec.apply(natural, zs.inputs, transfer=True).shape == (len(zs), natural.module.config.vocab_size)
    # a model of another shape: sites that do not exist, or widths that differ, refuse
    tiny = nnvtv.wrap(kit.FAMILIES["gpt2"].build(0))  # 2 layers x 2 heads of width 8
    with pytest.raises((SiteError, ShapeMismatchError)):
        vec.check_model(tiny, transfer=True)
    one = nnvtv.TaskVector({Site(0, 0, "last"): torch.zeros(1, 32)}, "replace", "x", "m", "t", "s")
    with pytest.raises(ShapeMismatchError, match="8 wide"):
        one.check_model(tiny, transfer=True)
    with pytest.raises((SiteError, ShapeMismatchError)):
        transfer_score(vec, tiny, task)


def test_depth_lines_up_models_of_different_depth():
    four = [Site(layer, h, "last") for layer in range(4) for h in range(2)]
    rows = depth_profile(four, [Site(1, 0, "last"), Site(1, 1, "last")], {"": 4})
    assert [r["depth"] for r in rows] == [0.125, 0.375, 0.625, 0.875]
    assert [r["selected"] for r in rows] == [0, 2, 0, 0] and all(r["total"] == 2 for r in rows)
    # streams stack in forward order: enc 2 layers then dec 1 layer
    two = [Site(0, 0, "cls", "enc"), Site(1, 0, "cls", "enc"), Site(0, 0, "cls", "dec")]
    rows = depth_profile(two, two[2:], {"enc": 2, "dec": 1})
    assert [r["depth"] for r in rows] == pytest.approx([1 / 6, 3 / 6, 5 / 6])
    assert rows[-1]["stream"] == "dec" and rows[-1]["selected"] == 1
    assert jaccard([], []) == 1.0 and jaccard(["a"], ["b"]) == 0.0


def test_compare_models_of_different_shapes(kit, tokenizer):
    """Different site spaces: no Jaccard, no transfer, each with its reason."""
    fmt = {"demo": "{input} w39 {output}", "query": "{input} w39", "separator": " w38 "}
    task = WordPairTask("w-shift-cmp", [(f"w{i}", f"w{i + 20}") for i in range(16)], default_shots=2)
    a = nnvtv.wrap(kit.FAMILIES["gpt2"].build(0), tokenizer, name="tiny-gpt2", meta={"prompt_format": fmt})
    b = nnvtv.wrap(kit.FAMILIES["llama"].build(0), tokenizer, name="tiny-llama", meta={"prompt_format": fmt})
    cmp = nnvtv.compare([a, b], task, seeds=[0, 1], strategy="ranking", budget=8, n_mean_prompts=8, batch_size=4)
    assert cmp.labels == ["tiny-gpt2#0", "tiny-gpt2#1", "tiny-llama#0", "tiny-llama#1"]
    assert cmp.jaccard[0][2] is None and cmp.jaccard[0][1] is not None
    assert cmp.transfer[0][1] is not None  # same model, other seed: applies as is
    for i, j in ((0, 2), (2, 0)):
        if cmp.runs[i].n_sites:
            assert cmp.transfer[i][j] is None
            assert f"{cmp.labels[i]}->{cmp.labels[j]}" in cmp.transfer_notes


def test_cli_compare_writes_json_and_figure(tmp_path):
    runner = CliRunner()
    out = tmp_path / "c"
    res = runner.invoke(app, ["compare", "--models", ",".join(TOYS), "--task", "toy-perm_a", "--strategy", "greedy", "--budget", "40", "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert [r["label"] for r in data["runs"]] == TOYS
    assert (out / "compare.png").exists() and Comparison.load(out).as_dict() == data
    bad = runner.invoke(app, ["compare", "--models", "toy-text,nope"])
    assert bad.exit_code == 2 and "unknown model 'nope'" in bad.output
    bad = runner.invoke(app, ["compare", "--seeds", "a,b"])
    assert bad.exit_code == 2 and "--seeds" in bad.output


def test_compare_is_modality_agnostic(tmp_path):
    """Two random tiny MAE-VQGANs on the canvas segmentation task: enc + dec stack on one depth axis."""
    from nnvtv.adapters.mae_vqgan.adapter import MAE_VQGAN
    from nnvtv.adapters.mae_vqgan.config import tiny
    from nnvtv.adapters.mae_vqgan.model import MaeVqgan

    models = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        models.append(nnvtv.wrap(MaeVqgan(tiny()).eval(), adapter=MAE_VQGAN, name=f"tiny-mae-{seed}"))
    cmp = nnvtv.compare(models, "segmentation", strategy="ranking", budget=64, n_mean_prompts=8)
    assert cmp.metric == "iou" and cmp.jaccard[0][1] is not None
    run = cmp.runs[0]
    assert run.layers == {"enc": 2, "dec": 2}
    assert [(r["stream"], r["depth"]) for r in run.depth] == [("enc", 0.125), ("enc", 0.375), ("dec", 0.625), ("dec", 0.875)]
    assert all(v is not None for row in cmp.transfer for v in row)  # same shapes: transfer applies
    cmp.save(tmp_path)
    assert Comparison.load(tmp_path).as_dict() == cmp.as_dict()
