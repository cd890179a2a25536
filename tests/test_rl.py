"""PPO and DDPG: determinism, exact resume, the regularization heads in the loop, learning on a
small instance."""

from __future__ import annotations

import importlib
import math

import pytest
import torch
from conftest import best_constant_order_cost

from deepstock_fast.envs import InstanceConfig, InventoryEnv
from deepstock_fast.evaluation import evaluate
from deepstock_fast.policies import Policy, PolicyConfig
from deepstock_fast.trainers import DDPGConfig, PPOConfig, train_ddpg, train_ppo

SMALL = "zipkin:L=1,p=9,horizon=40,warmup=10"
TINY = {
    "ppo": (train_ppo, lambda **kw: PPOConfig(**{
        **dict(total_steps=2048, num_envs=16, n_steps=256, batch_size=64, epochs=2,
               validation_skus=32, eval_every=2, checkpoint_every=2, critic_hidden=(16,)),
        **kw})),
    "ddpg": (train_ddpg, lambda **kw: DDPGConfig(**{
        **dict(total_steps=1024, num_envs=16, batch_size=32, learning_starts=64,
               gradient_steps=2, validation_skus=32, eval_every=16, checkpoint_every=16,
               critic_hidden=(16,), buffer_size=512, critic_warmup=0), **kw})),
}


def run(algo, tmp_path=None, **kw):
    train, config = TINY[algo]
    return train(SMALL, PolicyConfig(hidden=(16,)), config(**kw), out_dir=tmp_path,
                 progress=False)


@pytest.mark.parametrize("algo", ["ppo", "ddpg"])
def test_same_seed_same_weights(algo):
    (a, ra), (b, rb) = run(algo), run(algo)
    for x, y in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(x, y)
    assert [h["validation_cost"] for h in ra.history] == [h["validation_cost"]
                                                           for h in rb.history]
    c, _ = run(algo, seed=1)
    assert not all(torch.equal(x, y) for x, y in zip(a.state_dict().values(),
                                                      c.state_dict().values()))


@pytest.mark.parametrize("algo", ["ppo", "ddpg"])
def test_interrupted_run_resumes_exactly(algo, tmp_path):
    whole, _ = run(algo, tmp_path / "whole")
    part, result = run(algo, tmp_path / "part", time_budget=1e-9)
    assert result.stopped == "time_budget" and result.iterations == 1
    state = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=False)
    state["identity"]["config"]["time_budget"], state["stopped"] = None, None
    torch.save(state, tmp_path / "part" / "checkpoint.pt")
    train, config = TINY[algo]
    resumed, _ = train(SMALL, PolicyConfig(hidden=(16,)), config(), out_dir=tmp_path / "part",
                       resume=True, progress=False)
    for x, y in zip(whole.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(x, y)


@pytest.mark.parametrize("algo", ["ppo", "ddpg"])
def test_base_head_orders_are_base_stock_orders(algo, monkeypatch):
    projected, ordered = [], []
    project, step = Policy.project, InventoryEnv.step

    def recording_project(self, raw, state):
        out = project(self, raw, state)
        target = raw[:, 0].to(state.scale.dtype) * state.scale
        projected.append((out, (target - state.inventory_position).clamp(min=0)))
        return out

    def recording_step(self, action):
        ordered.append(action)
        return step(self, action)

    monkeypatch.setattr(Policy, "project", recording_project)
    monkeypatch.setattr(InventoryEnv, "step", recording_step)
    run(algo)
    outputs = {id(out) for out, _ in projected}
    assert ordered and all(id(a) in outputs for a in ordered)
    for out, want in projected:
        torch.testing.assert_close(out, want)


def test_config_errors():
    with pytest.raises(ValueError, match="n_steps = 100 must be a multiple of num_envs = 64"):
        PPOConfig(n_steps=100)
    with pytest.raises(ValueError, match="tau"):
        DDPGConfig(tau=0.0)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        DDPGConfig(batch_size=0)


@pytest.mark.parametrize("algo", ["ppo", "ddpg"])
def test_short_run_beats_random_and_constant_orders(algo):
    instance = InstanceConfig.from_name(SMALL)
    train, config = TINY[algo]
    if algo == "ppo":
        cfg = config(total_steps=40_000, num_envs=64, n_steps=1024, batch_size=256, epochs=5,
                     eval_every=4, critic_hidden=(64, 64))
    else:
        cfg = config(total_steps=40_000, num_envs=64, batch_size=256, learning_starts=2000,
                     gradient_steps=8, buffer_size=40_000, eval_every=50,
                     critic_hidden=(64, 64))
    policy, _ = train(instance, PolicyConfig(hidden=(64, 64)), cfg, progress=False)
    test = instance.replace(num_skus=256, horizon=200)
    trained = evaluate(policy, test, seed=5).average_cost
    g = torch.Generator().manual_seed(3)
    random_cost = evaluate(lambda s: torch.rand(s.on_hand.shape, generator=g,
                                                dtype=s.on_hand.dtype) * 15, test, seed=5)
    best_constant = best_constant_order_cost(test, 5, lead_time=1, penalty_cost=9.0, warmup=10)
    assert trained < 0.95 * best_constant and trained < 0.5 * random_cost.average_cost, (
        trained, best_constant, random_cost.average_cost)


@pytest.mark.parametrize("algo,last_checkpoint", [("ppo", 4), ("ddpg", 16)])
def test_divergence_stops_and_keeps_the_last_good_checkpoint(algo, last_checkpoint, tmp_path,
                                                             monkeypatch):
    # The critic turns NaN after 40 (PPO: in update 6) or 100 (DDPG: at step 28) training calls;
    # the trainers' loss flags are read back before each validation and checkpoint, and when the
    # spoilt orders reach the op.
    module = importlib.import_module(f"deepstock_fast.trainers.{algo}")
    make_mlp = module.mlp

    class Poisoned(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net, self.calls = net, 0

        def forward(self, x):
            if torch.is_grad_enabled():
                self.calls += 1
            return self.net(x) * (math.nan if self.calls > (40 if algo == "ppo" else 100) else 1)

    monkeypatch.setattr(module, "mlp", lambda *a, **k: Poisoned(make_mlp(*a, **k)))
    policy, result = run(algo, tmp_path)
    assert result.stopped == "diverged" and "not finite" in result.message
    assert "last good checkpoint" in result.message
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert state["done"] == last_checkpoint
    assert all(torch.isfinite(p).all() for p in policy.parameters())


def loop(tmp_path, iterate, healthy, **kw):
    """run_loop on a stand-in training: no weights, a constant validation cost."""
    from deepstock_fast.trainers.common import run_loop

    policy = torch.nn.Linear(1, 1)
    policy.save = lambda path, instance: None
    return run_loop(**{**dict(label="t", total=10, iterate=iterate, validate=lambda: 1.0,
                              eval_every=5, patience=10, checkpoint_every=5, time_budget=None,
                              policy=policy, stateful={}, generators={},
                              identity={"instance": {}}, out_dir=tmp_path, progress=False,
                              healthy=healthy), **kw})


def test_an_unhealthy_run_stopped_early_writes_no_checkpoint(tmp_path):
    result = loop(tmp_path, lambda i: 0.0, healthy=lambda: False, time_budget=1e-9)
    assert result.stopped == "diverged" and "not finite before epoch 1" in result.message
    assert not (tmp_path / "checkpoint.pt").exists()
    result = loop(tmp_path, lambda i: 0.0, healthy=lambda: True, time_budget=1e-9)
    assert result.stopped == "time_budget" and (tmp_path / "checkpoint.pt").exists()


def test_an_op_error_after_a_non_finite_loss_is_divergence(tmp_path):
    def iterate(i):
        if i == 2:
            raise RuntimeError("inventory_step: order must be finite")
        return 0.0

    result = loop(tmp_path, iterate, healthy=lambda: False)
    assert result.stopped == "diverged" and "not finite before epoch 3" in result.message
    with pytest.raises(RuntimeError, match="order must be finite"):  # a healthy run: a bug
        loop(tmp_path, iterate, healthy=lambda: True)
