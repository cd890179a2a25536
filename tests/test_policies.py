"""Regularized policy heads, save/load and damaged or malicious policy files."""

from __future__ import annotations

import pathlib
import pickle
import re

import pytest
import torch
from helpers import restored

import deepstock_fast as ds
from deepstock_fast.envs import InstanceConfig, InventoryEnv
from deepstock_fast.evaluation import evaluate
from deepstock_fast import cli
from deepstock_fast.checkpoint import load_file
from deepstock_fast.policies import (HEADS, Head, Policy, PolicyConfig, default_bounds,
                                     initial_output)
from deepstock_fast.trainers import DSConfig, train_ds

SMALL = "zipkin:L=1,p=9,horizon=60,warmup=10"
QUICK = DSConfig(epochs=5, batch_size=32, validation_skus=64, eval_every=5, checkpoint_every=5)


def make(head, instance=SMALL, max_order=None):
    config = InstanceConfig.from_name(instance).replace(num_skus=32, max_order=max_order)
    env = InventoryEnv(config, seed=0, device="cpu")
    env.reset()
    torch.manual_seed(0)
    policy = Policy.for_instance(config, PolicyConfig(head=head, hidden=(16, 16)), env.obs_names)
    return env, policy


@pytest.mark.parametrize("head", HEADS)
def test_heads_give_valid_orders_and_gradients(head):
    env, policy = make(head, "paper:setting=2" if head in ("coeff", "both") else SMALL,
                       max_order=12.0)
    for _ in range(3):  # move away from the empty state
        env.step(policy(env.state()).detach())
    state = env.state()
    raw = policy.raw(state.obs)
    order = policy.project(raw, state)
    assert order.shape == (32,) and torch.all(order >= 0) and torch.all(order <= 12.0)
    if head == "base":  # order = clamp(target - IP, 0, cap) exactly
        target = raw[:, 0].to(state.scale.dtype) * state.scale
        want = (target - state.inventory_position).clamp(0, 12.0)
        torch.testing.assert_close(order, want)
    if head == "both":
        target = (raw.to(state.features.dtype) * state.features).sum(1)
        torch.testing.assert_close(order, (target - state.inventory_position).clamp(0, 12.0))
    result = env.simulate(policy)
    result.average_cost.mean().backward()
    grads = [p.grad for p in policy.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_initial_outputs_are_sensible_levels():
    zipkin = InstanceConfig.from_name("zipkin:L=2,p=9")
    assert initial_output("base", zipkin) == [4.0]  # (L + P + 1) mean demands
    assert initial_output("none", zipkin) == [1.0]
    coeff = initial_output("coeff", zipkin)
    assert coeff[zipkin.features.index("trailing_28")] == 1.0 and sum(coeff) == 1.0
    only_constant = zipkin.replace(features=("constant",))
    assert initial_output("both", only_constant) == [4.0 * 5.0]


def test_policy_config_errors():
    with pytest.raises(ValueError, match="head must be one of"):
        PolicyConfig(head="target")
    with pytest.raises(ValueError, match="activation must be one of"):
        PolicyConfig(activation="gelu")
    with pytest.raises(ValueError, match="positive widths"):
        PolicyConfig(hidden=(64, 0))


def test_save_load_round_trip(tmp_path):
    env, policy = make("base")
    policy.fit_normalizer(torch.randn(100, env.obs_size) * 3 + 1)
    policy.save(tmp_path / "p.pt")
    again = Policy.load(tmp_path / "p.pt")
    state = env.state()
    torch.testing.assert_close(again(state), policy(state))
    torch.testing.assert_close(again.obs_std, policy.obs_std)
    other = InventoryEnv(InstanceConfig.from_name("paper:setting=2"), seed=0)
    with pytest.raises(ValueError, match="the policy reads observations"):
        evaluate(again, other.config)


class Payload:
    """A pickled object that, when unpickled, creates ``marker`` (as code execution would)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def damaged_files(tmp_path, good: pathlib.Path) -> dict:
    """Name -> path of files that are not valid saves: empty, truncated, text, corrupted,
    a tensor instead of a mapping, and two malicious ones (torch.save and raw pickle)."""
    data = good.read_bytes()
    corrupted = bytearray(data)
    corrupted[len(data) // 3: len(data) // 3 + 64] = b"\xff" * 64
    files = {"empty": b"", "truncated": data[: len(data) // 2], "text": b"hello, world\n",
             "corrupted": bytes(corrupted)}
    paths = {}
    for name, content in files.items():
        paths[name] = tmp_path / f"{name}.pt"
        paths[name].write_bytes(content)
    paths["tensor"] = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), paths["tensor"])
    paths["malicious"] = tmp_path / "malicious.pt"
    torch.save({"config": {}, "state_dict": Payload(tmp_path / "MARKER")}, paths["malicious"])
    paths["malicious_pickle"] = tmp_path / "malicious_pickle.pt"
    paths["malicious_pickle"].write_bytes(pickle.dumps(Payload(tmp_path / "MARKER"), protocol=2))
    return paths


def test_damaged_and_malicious_policy_files_are_refused(tmp_path):
    _, policy = make("base")
    policy.save(tmp_path / "good.pt")
    for name, path in damaged_files(tmp_path, tmp_path / "good.pt").items():
        with pytest.raises(ValueError, match=re.escape(str(path))):
            Policy.load(path)
        assert not (tmp_path / "MARKER").exists(), name
    with pytest.raises(ValueError, match="refused to load the policy file .*malicious.pt.*"
                                         "nothing in it was run"):
        Policy.load(tmp_path / "malicious.pt")
    with pytest.raises(ValueError, match="is not a saved deepstock_fast policy"):
        torch.save({"config": {}}, tmp_path / "partial.pt")
        Policy.load(tmp_path / "partial.pt")


def test_a_malicious_checkpoint_is_refused_on_resume(tmp_path):
    train_ds(SMALL, PolicyConfig(hidden=(8,)), QUICK, out_dir=tmp_path, progress=False)
    state = load_file(tmp_path / "checkpoint.pt")
    state["history"].append(Payload(tmp_path / "MARKER"))
    torch.save(state, tmp_path / "checkpoint.pt")
    with pytest.raises(ValueError, match="refused to load the checkpoint file .*checkpoint.pt"):
        train_ds(SMALL, PolicyConfig(hidden=(8,)), QUICK, out_dir=tmp_path,
                 resume=True, progress=False)
    assert not (tmp_path / "MARKER").exists()


def test_a_head_is_one_table_entry():
    # a head added to HEADS works in Policy, its bounds, PolicyConfig and the CLI's --head
    with restored(HEADS):
        HEADS["half_base"] = Head(
            per_feature=False,
            project=lambda raw, s, cap: ds.base_stock_order(0.5 * raw[:, 0] * s.scale,
                                                            s.inventory_position, cap),
            initial=lambda instance: [2 * x for x in HEADS["base"].initial(instance)],
            signed=False)
        env, policy = make("half_base", max_order=12.0)
        state = env.state()
        raw = policy.raw(state.obs)
        assert raw.shape == (32, 1)
        target = 0.5 * raw[:, 0].to(state.scale.dtype) * state.scale
        torch.testing.assert_close(policy(state),
                                   (target - state.inventory_position).clamp(0, 12.0))
        instance = InstanceConfig.from_name(SMALL)
        assert default_bounds("half_base", instance) == default_bounds("base", instance)
        assert policy.config.initial_output == [2 * initial_output("base", instance)[0]]
        assert cli._heads("base,half_base") == ["base", "half_base"]
    with pytest.raises(ValueError, match=re.escape("head must be one of ('none', 'base', "
                                                   "'coeff', 'both'), got 'half_base'")):
        PolicyConfig(head="half_base")
