"""Remote tracing (NDIF) through nnsight's local emulation of the remote path.

``remote="local"`` serializes every request like a real NDIF call, deserializes it with
nnvtv's own modules hidden (as on a server where nnvtv is not installed) and runs it here.
Nothing here touches the network.
"""

from __future__ import annotations

import inspect

import pytest
import torch
from nnsight import NNsight

import nnvtv
from nnvtv.errors import ConfigError, RemoteError
from nnvtv.model import Model
from nnvtv.tasks import WordPairTask
from nnvtv.tracing.remote import errors_as_remote_error

FORMAT = {"demo": "{input} w39 {output}", "query": "{input} w39", "separator": " w38 "}
TASK = WordPairTask("w-shift", [(f"w{i}", f"w{i + 20}") for i in range(16)], default_shots=2)
OPTIONS = {
    "reinforce": {"samples": 4},
    "greedy": {"batch_size": 4},
    "cmaes": {"population_size": 4},
    "ranking": {"batch_size": 4},
}


def pair(kit, tokenizer, name: str = "gpt2") -> tuple[nnvtv.Model, nnvtv.Model]:
    """The same tiny model wrapped locally and for the emulated remote path."""
    family = kit.FAMILIES[name]
    local = nnvtv.wrap(family.build(0), tokenizer, meta={"prompt_format": FORMAT})
    remote = nnvtv.wrap(family.build(0), tokenizer, meta={"prompt_format": FORMAT}, remote="local")
    return local, remote


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_means_and_masks_match_local_in_one_request_each(kit, tokenizer, name):
    local, remote = pair(kit, tokenizer, name)
    assert remote.remote == "local" and remote.fingerprint == local.fingerprint
    space = local.sites("head")
    batches = [kit.make_batch(kit.FAMILIES[name], seed=s, size=3).data for s in range(3)]
    before = remote.remote_requests
    m_local = nnvtv.mean_activations(local, batches, space)
    m_remote = nnvtv.mean_activations(remote, batches, space)
    assert remote.remote_requests == before + 1  # three batches, one request
    for s in space:
        torch.testing.assert_close(m_remote[s], m_local[s])
    m_remote = nnvtv.Means(dict(m_local.items()), count=m_local.count, fingerprint=remote.fingerprint)
    masks = torch.rand(5, len(space), generator=torch.Generator().manual_seed(1)) < 0.5
    zs = kit.make_batch(kit.FAMILIES[name], seed=9, size=3).data
    before = remote.remote_requests
    # max_rows=6: two candidates per forward, three chunks, still ONE request
    out_remote = nnvtv.run_masks(remote, zs, m_remote, space, masks, max_rows=6)
    assert remote.remote_requests == before + 1
    out_local = nnvtv.run_masks(local, zs, m_local, space, masks, max_rows=6)
    assert out_remote.shape == (5, 3, kit.VOCAB)
    torch.testing.assert_close(out_remote, out_local)
    assert not kit.leftover_hooks(remote.module)


@pytest.mark.parametrize("strategy", ["reinforce", "greedy", "cmaes", "ranking"])
def test_every_strategy_finds_the_same_vector_remotely(kit, tokenizer, strategy):
    local, remote = pair(kit, tokenizer)
    kw = dict(strategy=strategy, budget=8, seed=0, shots=2, n_mean_prompts=8, eval_every=1, **OPTIONS[strategy])
    r_local = nnvtv.find(local, TASK, **kw)
    before = remote.remote_requests
    r_remote = nnvtv.find(remote, TASK, **kw)
    assert r_remote.task_vector.sites == r_local.task_vector.sites
    assert r_remote.scores.as_dict() == r_local.scores.as_dict()
    assert [h.loss for h in r_remote.history] == pytest.approx([h.loss for h in r_local.history])
    # one request for the means, one per search step, at most one held-out score per step
    # (plus the final mask's), three for the held-out scores
    steps = len(r_remote.history)
    spent = remote.remote_requests - before
    assert 1 + steps + 3 <= spent <= 1 + steps + (steps + 1) + 3
    # the vector applies on the local twin (same weights, same fingerprint)
    zs = TASK.zero_shot(local, TASK.split(0).test)
    torch.testing.assert_close(r_remote.task_vector.apply(local, zs.inputs), r_local.task_vector.apply(remote, zs.inputs))


def test_a_plain_nnsight_wrapper_is_refused_for_remote(zoo):
    """NNsight(module).trace(remote=True) silently runs locally: nnvtv refuses to build it."""
    m = zoo("gpt2")
    for mode in (True, "local"):
        with pytest.raises(RemoteError, match="silently run locally"):
            Model(m.module, m.adapter, m.io, nnsight_model=NNsight(m.module), remote=mode)


def test_remote_true_needs_a_key(monkeypatch):
    from nnsight import CONFIG

    monkeypatch.delenv("NDIF_API_KEY", raising=False)
    monkeypatch.setattr(CONFIG.API, "APIKEY", None)
    with pytest.raises(RemoteError, match="NDIF_API_KEY"):
        nnvtv.wrap("some-org/some-model", remote=True)


def test_remote_true_without_network_says_so(monkeypatch):
    import huggingface_hub

    monkeypatch.setenv("NDIF_API_KEY", "not-a-real-key")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no network: the hub is never contacted
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(inspect.getmodule(huggingface_hub.is_offline_mode), "HF_HUB_OFFLINE", True, raising=False)
    with pytest.raises(RemoteError, match="check the network"):
        nnvtv.wrap("some-org/some-model", remote=True)


def test_remote_arguments_are_checked(kit, tokenizer, zoo):
    module = kit.FAMILIES["gpt2"].build(0)
    with pytest.raises(RemoteError, match="hub id"):
        nnvtv.wrap(module, tokenizer, remote=True)
    with pytest.raises(RemoteError, match="remote='local' runs the remote code path on a model loaded"):
        nnvtv.wrap("some-org/some-model", remote="local")
    with pytest.raises(ConfigError, match=r"wrap\(hub_id, remote=True\)"):
        nnvtv.wrap("some-org/some-model")
    with pytest.raises(ConfigError, match="remote must be"):
        nnvtv.wrap(module, tokenizer, remote="yes")
    with pytest.raises(RemoteError, match="transformers model"):
        nnvtv.wrap(torch.nn.Linear(2, 2), remote="local")


def test_failed_requests_become_remote_errors(zoo):
    class Fake:
        name = "fake"
        remote = True

    with pytest.raises(RemoteError, match="NDIF_API_KEY"), errors_as_remote_error(Fake()):
        raise ConnectionError("connection refused")
    with pytest.raises(IndexError), errors_as_remote_error(Fake()):  # a bug stays a bug
        raise IndexError("index 99 is out of bounds")


def test_cli_find_remote_without_key_says_what_to_set(monkeypatch):
    from nnsight import CONFIG
    from typer.testing import CliRunner

    from nnvtv.cli import app

    monkeypatch.delenv("NDIF_API_KEY", raising=False)
    monkeypatch.setattr(CONFIG.API, "APIKEY", None)
    res = CliRunner().invoke(app, ["find", "--model", "some-org/some-model", "--remote"])
    assert res.exit_code == 2 and "NDIF_API_KEY" in res.output
