"""The trainers (DS, PPO, DDPG) and their shared loop: determinism, learning on a small instance,
exact resume (after a kill or Ctrl-C), divergence, configs, the registry, metrics and callbacks."""

from __future__ import annotations

import errno
import functools
import importlib
import io
import math
import os
import signal
import sys

import pytest
import torch
from helpers import best_constant_order_cost
from helpers import restored

import deepstock_fast as ds
from deepstock_fast import cli, seeding
from deepstock_fast.envs import InstanceConfig, InventoryEnv
from deepstock_fast.evaluation import evaluate
from deepstock_fast.checkpoint import load_file
from deepstock_fast.policies import PolicyConfig
from deepstock_fast.trainers import (TRAINERS, DDPGConfig, DSConfig, PPOConfig, register,
                                     train_ddpg, train_ds, train_ppo)
from deepstock_fast.trainers.population import StackedAdam, StackedPolicy

SMALL = "zipkin:L=1,p=9,horizon=40,warmup=10"
TINY = {
    "ppo": (train_ppo, lambda **kw: PPOConfig(**{
        **dict(total_steps=2048, num_envs=16, n_steps=256, batch_size=64, update_epochs=2,
               validation_skus=32, eval_every=2, checkpoint_every=2, critic_hidden=(16,)),
        **kw})),
    "ddpg": (train_ddpg, lambda **kw: DDPGConfig(**{
        **dict(total_steps=1024, num_envs=16, batch_size=32, learning_starts=64,
               gradient_steps=2, validation_skus=32, eval_every=16, checkpoint_every=16,
               critic_hidden=(16,), buffer_size=512, critic_warmup=0), **kw})),
    "ds": (train_ds, lambda **kw: DSConfig(**{
        **dict(epochs=10, batch_size=16, validation_skus=32, eval_every=5, checkpoint_every=5),
        **kw})),
}


def run(algo, tmp_path=None, callbacks=(), **kw):
    train, config = TINY[algo]
    return train(SMALL, PolicyConfig(hidden=(16,)), config(**kw), out_dir=tmp_path,
                 progress=False, callbacks=callbacks)


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
    state = load_file(tmp_path / "part" / "checkpoint.pt")
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
    actor = StackedPolicy  # the trainers' actor, for every population size
    project, step = actor.project, InventoryEnv.step

    def recording_project(self, raw, state):
        out = project(self, raw, state)
        target = raw[:, 0].to(state.scale.dtype) * state.scale
        projected.append((out, (target - state.inventory_position).clamp(min=0)))
        return out

    def recording_step(self, action):
        ordered.append(action)
        return step(self, action)

    monkeypatch.setattr(actor, "project", recording_project)
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


@pytest.mark.parametrize("config,field,value,message", [
    (DSConfig, "epochs", math.nan, "DSConfig.epochs must be an int, got nan"),
    (DSConfig, "epochs", True, "DSConfig.epochs must be an int, got True"),
    (DSConfig, "lr", "abc", "DSConfig.lr must be a number, got 'abc'"),
    (DSConfig, "lr", math.inf, "DSConfig.lr must be finite"),
    (DSConfig, "lr_factor", 1.0, r"DSConfig.lr_factor must be in \(0, 1\), got 1.0"),
    (DSConfig, "min_lr", -1e-3, "DSConfig.min_lr must be >= 0"),
    (DSConfig, "batch_size", 0, "DSConfig.batch_size must be >= 1 or None, got 0"),
    (DSConfig, "time_budget", -5, "DSConfig.time_budget must be > 0 or None"),
    (DSConfig, "fixed_train_set", "yes", "DSConfig.fixed_train_set must be true or false"),
    (DSConfig, "seed", -1, r"DSConfig.seed must be in \[0, 1099511627776\)"),
    (PPOConfig, "gae_lambda", 1.5, r"PPOConfig.gae_lambda must be in \[0, 1\]"),
    (PPOConfig, "gamma", 0, r"PPOConfig.gamma must be in \(0, 1\]"),
    (PPOConfig, "critic_hidden", (16, True), "PPOConfig.critic_hidden must be one or more"),
    (PPOConfig, "update_epochs", 2.0, "PPOConfig.update_epochs must be an int"),
    (DDPGConfig, "learning_starts", -1, "DDPGConfig.learning_starts must be >= 0"),
    (DDPGConfig, "exploration_noise", math.nan, "DDPGConfig.exploration_noise must be finite"),
    (DDPGConfig, "critic_hidden", (), "DDPGConfig.critic_hidden must be one or more"),
])
def test_every_config_field_is_checked(config, field, value, message):
    with pytest.raises(ValueError, match=message):
        config(**{field: value})


def test_config_values_are_normalised():
    config = DSConfig(lr=1, time_budget=None, batch_size=None)
    assert config.lr == 1.0 and type(config.lr) is float
    assert PPOConfig(critic_hidden=[8, 8]).critic_hidden == (8, 8)


@pytest.mark.parametrize("algo", ["ppo", "ddpg"])
def test_short_run_beats_random_and_constant_orders(algo):
    instance = InstanceConfig.from_name(SMALL)
    train, config = TINY[algo]
    if algo == "ppo":
        cfg = config(total_steps=40_000, num_envs=64, n_steps=1024, batch_size=256,
                     update_epochs=5, eval_every=4, critic_hidden=(64, 64))
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
    make = module.actor_critic  # what makes the critic of the members (and the actor)

    class Poisoned(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net, self.calls = net, 0

        def forward(self, x):
            if torch.is_grad_enabled():
                self.calls += 1
            return self.net(x) * (math.nan if self.calls > (40 if algo == "ppo" else 100) else 1)

    def poisoned(*args, **kwargs):
        runs, actor, env, extra = make(*args, **kwargs)
        extra.critic = Poisoned(extra.critic)
        return runs, actor, env, extra

    monkeypatch.setattr(module, "actor_critic", poisoned)
    policy, result = run(algo, tmp_path)
    assert result.stopped == "diverged" and "not finite" in result.message
    assert "last good checkpoint" in result.message
    state = load_file(tmp_path / "checkpoint.pt")
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
    assert load_file(tmp_path / "checkpoint.pt")["done"] == 0  # only the initial one
    result = loop(tmp_path / "healthy", lambda i: 0.0, healthy=lambda: True, time_budget=1e-9)
    assert result.stopped == "time_budget"
    assert load_file(tmp_path / "healthy" / "checkpoint.pt")["done"] == 1


def test_an_op_error_after_a_non_finite_loss_is_divergence(tmp_path):
    def iterate(i):
        if i == 2:
            raise RuntimeError("inventory_step: order must be finite")
        return 0.0

    result = loop(tmp_path, iterate, healthy=lambda: False)
    assert result.stopped == "diverged" and "not finite before epoch 3" in result.message
    with pytest.raises(RuntimeError, match="order must be finite"):  # a healthy run: a bug
        loop(tmp_path, iterate, healthy=lambda: True)


@pytest.fixture
def ctrl_c_delivered():
    """SIGINT handled as at an interactive prompt, also where the suite runs with SIGINT ignored
    (a shell's background job, as some CI runners start it)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def sigint_at(monkeypatch, owner, name: str, *calls: int) -> None:
    """Wraps ``owner.name`` so that its ``calls``-th calls (counted from 1) send SIGINT to this
    process, as Ctrl-C does, when their work is done but before they return (the iteration
    is half done): Python handles the signal right after ``os.kill``."""
    original, count = getattr(owner, name), [0]

    @functools.wraps(original)
    def wrapped(*args, **kwargs):
        out = original(*args, **kwargs)
        count[0] += 1
        if count[0] in calls:
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(owner, name, wrapped)


@functools.cache
def uninterrupted(algo: str):
    policy, result = run(algo)
    return policy.state_dict(), result.history


def same_run(algo, policy, result):
    """The resumed run ended exactly as the uninterrupted one: weights and history."""
    weights, history = uninterrupted(algo)
    for key, value in weights.items():
        assert torch.equal(value, policy.state_dict()[key]), key
    drop = lambda h: {k: v for k, v in h.items() if "seconds" not in k}  # noqa: E731
    assert [drop(h) for h in result.history] == [drop(h) for h in history]


# Ctrl-C inside an iteration: during an environment step (DS: its differentiable unroll), an
# optimizer step (PPO: a minibatch of its second update; DDPG: an update at step 6) and the
# first validation. The counts skip the calls that setup() and the reward scale make.
INTERRUPTIONS = {
    "ds": [(InventoryEnv, "simulate", 4), (StackedAdam, "step", 3),
           (InventoryEnv, "simulate", 2)],  # the reference episode's, then the validation's
    "ppo": [(InventoryEnv, "step", 20), (StackedAdam, "step", 11),
            (InventoryEnv, "simulate", 3)],  # after the normaliser's and reward scale's
    "ddpg": [(InventoryEnv, "step", 5), (StackedAdam, "step", 10),
             (InventoryEnv, "simulate", 3)],
}


@pytest.mark.parametrize("algo,owner,name,call", [
    (algo, *point) for algo, points in INTERRUPTIONS.items() for point in points])
def test_ctrl_c_inside_an_iteration_resumes_exactly(algo, owner, name, call, tmp_path,
                                                    monkeypatch, ctrl_c_delivered):
    uninterrupted(algo)  # computed before the wrapping
    handler = signal.getsignal(signal.SIGINT)
    with monkeypatch.context() as m:
        sigint_at(m, owner, name, call)
        _, part = run(algo, tmp_path)
    assert part.stopped == "interrupted" and "resume with" in part.message
    assert 0 < part.iterations < getattr(TINY[algo][1](), "iterations", 10)
    assert load_file(tmp_path / "checkpoint.pt")["done"] == part.iterations
    assert signal.getsignal(signal.SIGINT) is handler
    policy, result = run_resumed(algo, tmp_path)
    assert result.stopped == "completed"
    same_run(algo, policy, result)


def test_a_second_ctrl_c_stops_at_once_and_keeps_the_last_checkpoint(tmp_path, monkeypatch,
                                                                    ctrl_c_delivered):
    uninterrupted("ds")
    with monkeypatch.context() as m:  # both in epoch 7: the last checkpoint is epoch 5's
        # (simulate: the reference episode, the initial validation, epochs 1-5, validation)
        sigint_at(m, InventoryEnv, "simulate", 10)
        sigint_at(m, StackedAdam, "step", 7)
        _, part = run("ds", tmp_path)
    assert part.stopped == "interrupted" and "nothing was written" in part.message
    assert "the last checkpoint" in part.message
    assert load_file(tmp_path / "checkpoint.pt")["done"] == 5
    assert not (tmp_path / "policy.pt").exists()
    policy, result = run_resumed("ds", tmp_path)
    same_run("ds", policy, result)


def run_resumed(algo, tmp_path):
    train, config = TINY[algo]
    return train(SMALL, PolicyConfig(hidden=(16,)), config(), out_dir=tmp_path, resume=True,
                 progress=False)


def test_a_full_disk_stops_the_run_before_any_training(tmp_path, monkeypatch):
    from deepstock_fast.trainers import common

    def no_space(obj, path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(common, "atomic_save", no_space)
    iterations = []
    with pytest.raises(common.OutputDirError, match="checkpoint.pt: No space left on device"):
        loop(tmp_path, lambda i: iterations.append(i) or 0.0, healthy=lambda: True)
    assert iterations == []  # the first checkpoint is written before the first iteration


def test_trainer_registry():
    assert list(TRAINERS) == list(cli.ALGOS) == ["ds", "ppo", "ddpg"]
    assert set(TINY) == set(TRAINERS)
    assert cli.TRAINERS is TRAINERS  # the command line (and bench/) read this one table
    for name, (config, train, hidden) in TRAINERS.items():
        assert train is TINY[name][0] and config is type(TINY[name][1]())
    assert TRAINERS["ppo"].hidden == (256, 256) and TRAINERS["ds"].hidden == (64, 64)
    with restored(TRAINERS):
        @register("ds_again", DSConfig, hidden=(8,))
        def train_again(*args, **kwargs):
            return train_ds(*args, **kwargs)

        assert TRAINERS["ds_again"] == (DSConfig, train_again, (8,))
        with pytest.raises(ValueError, match="trainer 'ds' is registered already"):
            register("ds", DSConfig, hidden=(8,))(train_again)
    assert "ds_again" not in TRAINERS


@pytest.mark.parametrize("algo", ["ds", "ppo", "ddpg"])
def test_default_widths_come_from_the_registry(algo, monkeypatch):
    monkeypatch.setitem(TRAINERS, algo, TRAINERS[algo]._replace(hidden=(8,)))
    train, config = TINY[algo]
    policy, _ = train(SMALL, None, config(total_steps=512) if algo != "ds" else config(epochs=2),
                      progress=False)
    assert policy.config.hidden == (8,)


def test_metrics_csv_and_callbacks_see_every_validation(tmp_path):
    import csv

    from deepstock_fast.trainers.common import METRICS

    seen = []
    _, result = run("ds", tmp_path, callbacks=[seen.append])
    with open(tmp_path / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == METRICS and len(rows) == len(result.history) == len(seen) == 3
    assert [int(r["iteration"]) for r in rows] == [0, 5, 10] == [m["iteration"] for m in seen]
    assert seen == result.history and seen[1]["lr"] == 3e-3 and seen[0]["train"] is None
    assert float(rows[2]["validation_cost"]) == seen[2]["validation_cost"]


@pytest.mark.parametrize("algo", ["ds", "ppo"])
@pytest.mark.parametrize("how", ["returns True", "raises StopIteration"])
def test_a_callback_stops_the_run_cleanly_and_resume_goes_on(algo, how, tmp_path):
    def enough(metrics):
        if metrics["iteration"] > 0:
            if how == "returns True":
                return True
            raise StopIteration

    _, result = run(algo, tmp_path, callbacks=[enough])
    first = result.history[1]["iteration"]
    assert result.stopped == "callback" and result.iterations == first
    assert result.message.startswith(f"stopped by callback enough at {result.unit} {first}")
    assert (tmp_path / "policy.pt").exists()
    _, resumed = run_resumed(algo, tmp_path)
    assert resumed.stopped == "completed" and resumed.iterations > first


@pytest.mark.parametrize("algo", ["ds", "ppo", "ddpg"])
def test_resume_with_a_larger_budget_continues_a_finished_run(algo, tmp_path):
    train, config = TINY[algo]
    budget = "epochs" if algo == "ds" else "total_steps"
    small = {budget: getattr(config(), budget) // 2}
    _, first = run(algo, tmp_path, **small)
    assert first.stopped == "completed"
    _, again = train(SMALL, PolicyConfig(hidden=(16,)), config(**small), out_dir=tmp_path,
                     resume=True, progress=False)
    assert again.iterations == first.iterations and "resumed a finished run" in again.message
    _, longer = train(SMALL, PolicyConfig(hidden=(16,)), config(patience=50), out_dir=tmp_path,
                      resume=True, progress=False)
    assert longer.stopped == "completed" and longer.iterations == 2 * first.iterations
    assert longer.history[:len(first.history)] == first.history


def test_resume_refuses_other_settings_naming_each_field(tmp_path):
    run("ppo", tmp_path)
    train, config = TINY["ppo"]
    with pytest.raises(ValueError, match=r"config\.lr: 0\.001 there, 0\.01 here; "
                                         r"config\.n_steps: 256 there, 128 here"):
        train(SMALL, PolicyConfig(hidden=(16,)), config(lr=0.01, n_steps=128),
              out_dir=tmp_path, resume=True, progress=False)
    # a checkpoint written before update_epochs was named so (PPO's epochs)
    state = load_file(tmp_path / "checkpoint.pt")
    state["identity"]["config"]["epochs"] = state["identity"]["config"].pop("update_epochs")
    torch.save(state, tmp_path / "checkpoint.pt")
    with pytest.raises(ValueError, match=r"config\.epochs: 2 there, not a field here; "
                                         r"config\.update_epochs: not a field there, 2 here"):
        run_resumed("ppo", tmp_path)


def test_time_budget_may_be_lifted_on_resume(tmp_path):
    _, part = run("ds", tmp_path, time_budget=1e-9)
    assert part.stopped == "time_budget" and part.iterations == 1
    policy, result = run_resumed("ds", tmp_path)
    assert result.stopped == "completed"
    same_run("ds", policy, result)


def test_tensorboard_callback_writes_events(tmp_path):
    pytest.importorskip("torch.utils.tensorboard")
    from deepstock_fast.trainers.common import TensorBoard

    run("ds", tmp_path, callbacks=[TensorBoard(tmp_path / "tb")])
    events = list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert len(events) == 1 and b"validation_cost" in events[0].read_bytes()


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_in_a_log_and_on_a_terminal(tmp_path, monkeypatch, capsys):
    # a log: the first line and the last, not one per validation
    loop(tmp_path / "log", lambda i: 0.5, healthy=None, total=40, eval_every=1, patience=99,
         progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and "40/40" in lines[-1] and "epoch/s" in lines[-1], lines
    assert "valid 1.0000" in lines[-1]
    loop(tmp_path / "quiet", lambda i: 0.5, healthy=None, total=40, eval_every=1, patience=99)
    assert capsys.readouterr().err == ""
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    loop(tmp_path / "tty", lambda i: 0.5, healthy=None, total=40, eval_every=1, patience=99,
         progress=True)
    text = terminal.getvalue()
    assert "\r" in text and "40/40" in text and "|" in text and "<" in text  # bar, ETA


# ---- DS ------------------------------------------------------------------------------------
DS_SMALL = "zipkin:L=1,p=9,horizon=60,warmup=10"


def ds_quick(epochs=40, **kw):
    return DSConfig(epochs=epochs, batch_size=32, validation_skus=64, eval_every=5,
                    checkpoint_every=5, **kw)


def test_ds_short_ds_run_beats_the_best_constant_order():
    instance = InstanceConfig.from_name(DS_SMALL)
    policy, result = train_ds(instance, PolicyConfig(head="base", hidden=(16, 16)),
                              ds_quick(epochs=60, lr=1e-2), progress=False)
    assert result.stopped in ("completed", "early_stopped") and result.iterations >= 10
    test = instance.replace(num_skus=256, horizon=200)
    trained = evaluate(policy, test, seed=5).average_cost
    best_constant = best_constant_order_cost(test, 5, lead_time=1, penalty_cost=9.0, warmup=10)
    assert trained < 0.9 * best_constant, (trained, best_constant)


def test_ds_validation_history_and_best_weights_kept():
    policy, result = train_ds(DS_SMALL, PolicyConfig(hidden=(8,)), ds_quick(epochs=20),
                              progress=False)
    assert [h["iteration"] for h in result.history] == [0, 5, 10, 15, 20]  # 0: untrained
    assert result.best_validation == min(h["validation_cost"] for h in result.history)
    config = InstanceConfig.from_name(DS_SMALL).replace(num_skus=64)
    valid = InventoryEnv(config, seed=seeding.stream(0, "validation")).sample_episode()
    with torch.no_grad():
        again = InventoryEnv(config, seed=0).simulate(policy, valid).average_cost.mean()
    assert float(again) == pytest.approx(result.best_validation, rel=1e-6)


def test_ds_resume_in_process_matches_an_uninterrupted_run(tmp_path):
    full, full_result = train_ds(DS_SMALL, PolicyConfig(hidden=(8,)), ds_quick(epochs=30),
                                 out_dir=tmp_path / "full", progress=False)
    part, part_result = train_ds(DS_SMALL, PolicyConfig(hidden=(8,)),
                                 ds_quick(epochs=30, time_budget=1e-9),  # stops after epoch 1
                                 out_dir=tmp_path / "part", progress=False)
    assert part_result.stopped == "time_budget" and part_result.iterations == 1
    # resume needs the same hyperparameters: continue with the time budget lifted, as after an
    # interruption (a finished run's checkpoint is not trained further)
    state = load_file(tmp_path / "part" / "checkpoint.pt")
    state["identity"]["config"]["time_budget"], state["stopped"] = None, None
    torch.save(state, tmp_path / "part" / "checkpoint.pt")
    resumed, resumed_result = train_ds(DS_SMALL, PolicyConfig(hidden=(8,)), ds_quick(epochs=30),
                                       out_dir=tmp_path / "part", resume=True, progress=False)
    assert resumed_result.iterations == 30
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    assert resumed_result.history == [
        {**h, "seconds": r["seconds"], "cpu_seconds": r["cpu_seconds"]}
        for h, r in zip(full_result.history,
                                                        resumed_result.history)]


def test_ds_resuming_a_finished_run_does_not_train_further(tmp_path):
    first, r1 = train_ds(DS_SMALL, PolicyConfig(hidden=(8,)), ds_quick(epochs=10), out_dir=tmp_path,
                         progress=False)
    again, r2 = train_ds(DS_SMALL, PolicyConfig(hidden=(8,)), ds_quick(epochs=10), out_dir=tmp_path,
                         resume=True, progress=False)
    assert r2.iterations == 10 and r2.history == r1.history and r2.stopped == "completed"
    for a, b in zip(first.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)


def test_ds_resume_refuses_other_hyperparameters(tmp_path):
    train_ds(DS_SMALL, PolicyConfig(hidden=(8,)), ds_quick(epochs=5), out_dir=tmp_path,
             progress=False)
    with pytest.raises(ValueError, match=r"other settings: config.lr: 0.003 there, 0.1 here"):
        train_ds(DS_SMALL, PolicyConfig(hidden=(8,)), ds_quick(epochs=5, lr=0.1), out_dir=tmp_path,
                 resume=True, progress=False)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train_ds(DS_SMALL, PolicyConfig(hidden=(8,)), ds_quick(epochs=5), out_dir=tmp_path / "none",
                 resume=True, progress=False)


def test_ds_divergence_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    calls = {"n": 0}
    original = InventoryEnv.simulate

    def poisoned(self, policy, episode=None, step=ds.inventory_step):
        result = original(self, policy, episode, step)
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] > 12:  # the 13th training epoch's loss is NaN
                return result._replace(average_cost=result.average_cost * math.nan)
        return result

    monkeypatch.setattr(InventoryEnv, "simulate", poisoned)
    policy, result = train_ds(DS_SMALL, PolicyConfig(hidden=(8,)), ds_quick(epochs=30),
                              out_dir=tmp_path, progress=False)
    assert result.stopped == "diverged" and "loss is nan at epoch 13" in result.message
    assert "last good checkpoint" in result.message
    state = load_file(tmp_path / "checkpoint.pt")
    assert state["done"] == 10  # the last scheduled checkpoint before the NaN
    assert all(torch.isfinite(p).all() for p in policy.parameters())
    assert (tmp_path / "policy.pt").exists()


def test_ppo_loss_is_the_clipped_surrogate():
    from deepstock_fast.trainers.ppo import ppo_loss

    config = PPOConfig(clip=0.2, vf_coef=0.5, ent_coef=0.01)
    old = torch.zeros(4)
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0])  # normalised: +-0.866
    a = adv / adv.std()
    logp = torch.log(torch.tensor([1.5, 1.5, 0.5, 0.5]))  # ratios 1.5, 1.5, 0.5, 0.5
    ratio = logp.exp()
    clipped = torch.minimum(ratio * a, ratio.clamp(0.8, 1.2) * a)  # 1.2a, 1.5a, 0.5a, 0.8a
    torch.testing.assert_close(clipped, torch.stack([1.2 * a[0], 1.5 * a[1], 0.5 * a[2],
                                                     0.8 * a[3]]))
    values, returns, entropy = torch.ones(4), torch.zeros(4), torch.full((4,), 2.0)
    loss = ppo_loss(logp, old, adv, values, returns, entropy, config)
    torch.testing.assert_close(loss, -clipped.mean() + 0.5 * 1.0 - 0.01 * 2.0)


def test_gae_of_a_terminated_and_a_truncated_step():
    from deepstock_fast.trainers.ppo import gae

    rewards = torch.tensor([[1.0], [2.0], [3.0]])
    values = torch.tensor([[0.5], [0.5], [0.5]])
    dones = torch.tensor([[0.0], [1.0], [0.0]])  # the episode ends after step 2
    adv = gae(rewards, values, torch.tensor([10.0]), dones, gamma=0.9, lam=1.0)
    # step 3 bootstraps from next_value; step 2 ends its episode; step 1 sees step 2 only
    torch.testing.assert_close(adv[2], torch.tensor([3.0 + 0.9 * 10.0 - 0.5]))
    torch.testing.assert_close(adv[1], torch.tensor([2.0 - 0.5]))
    torch.testing.assert_close(adv[0], torch.tensor([1.0 + 0.9 * 2.0 - 0.5]))
