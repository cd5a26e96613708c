"""benchmarks/strategies.py on a tiny grid: it writes its JSON, tables and figure, reuses runs that
stopped on their own, resumes without rerunning, and its table reads back what it measured."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("nnvtv_bench_strategies", ROOT / "benchmarks" / "strategies.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _main(bench, monkeypatch, *args: str) -> None:
    monkeypatch.setattr(sys, "argv", ["strategies.py", *args])
    bench.main()


def test_strategies_benchmark_on_a_tiny_grid(bench, monkeypatch, tmp_path, capsys):
    out = tmp_path / "res"
    args = ("--models", "toy-text", "--tasks", "toy-perm_c", "--strategies", "greedy,attribution",
            "--budgets", "24,48", "--seeds", "0", "--out", str(out))  # fmt: skip
    _main(bench, monkeypatch, *args)
    data = json.loads((out / "strategies.json").read_text())
    assert {p.name for p in out.iterdir()} >= {"strategies.json", "strategies.md", "strategies.png"}
    runs = {(r["strategy"], r["budget"]): r for r in data["runs"]}
    assert set(runs) == {("greedy", 24), ("greedy", 48), ("attribution", 24), ("attribution", 48)}
    for r in runs.values():
        assert r["forward_passes"] <= r["budget"] and r["exact_rows"] + 3 * r["gradient_rows"] == r["forward_passes"]
        assert r["total_sites"] == 16 and len(r["sites"]) == r["n_sites"]
    # attribution stops on its own (one gradient row + a few exact prefixes): the larger budget reuses it
    assert runs[("attribution", 24)]["stop_reason"] == "strategy"
    assert runs[("attribution", 48)]["reused_from"] == 24
    md = (out / "strategies.md").read_text()
    assert "| attribution | 24 |" in md and "## Issue 19 targets" in md
    assert f"{bench._score(runs[('greedy', 48)]):.2f}" in md
    # --resume runs nothing new and keeps every run
    before = (out / "strategies.json").read_text()
    _main(bench, monkeypatch, *args, "--resume")
    again = json.loads((out / "strategies.json").read_text())
    assert again["runs"] == data["runs"] and len(again["commands"]) == 2
    assert before != (out / "strategies.json").read_text()  # only the commands list grew
    capsys.readouterr()
