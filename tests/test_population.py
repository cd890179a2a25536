"""Population training: K configurations trained at once end as each trained alone.

The single runs compared with are written here with torch's own optimizer, clipping and
plateau schedule on one :class:`Policy` (the trainers' code before populations), so that the
population's per-member arithmetic is checked against something independent of it."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from deepstock_fast.checkpoint import load_file
from deepstock_fast.envs import InventoryEnv
from deepstock_fast.policies import Policy, PolicyConfig
from deepstock_fast.trainers import DSConfig, train_ds
from deepstock_fast.trainers.common import setup
from deepstock_fast.trainers.population import (PlateauLR, StackedAdam, StackedPolicy,
                                                choose_threads, clip_grad_norms_)

SMALL = "zipkin:L=1,p=9,horizon=40,warmup=10"
POLICY = PolicyConfig(hidden=(16, 16))


def config(**kw) -> DSConfig:
    return DSConfig(**{**dict(epochs=18, batch_size=16, validation_skus=32, eval_every=3,
                              checkpoint_every=3, lr_patience=1, lr_factor=0.5), **kw})


#: Members differing in every per-member hyperparameter the plateau, clipping and seeds touch.
MEMBERS = [config(lr=3e-3, seed=0, grad_clip=10.0),
           config(lr=1e-2, seed=1, grad_clip=0.5, lr_factor=0.8),
           config(lr=3e-2, seed=2, grad_clip=1.0, min_lr=2e-2)]


@pytest.fixture
def float64():
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # the policies' weights too
    yield
    torch.set_default_dtype(before)


def solo(instance, policy_config: PolicyConfig, c: DSConfig):
    """A single DS run written with torch.optim.Adam, clip_grad_norm_ and ReduceLROnPlateau:
    the policy's weights and the validation cost at each validation (no early stopping)."""
    run = setup(instance, policy_config, train_skus=c.batch_size,
                validation_skus=c.validation_skus, seed=c.seed, device="cpu")
    params = list(run.policy.parameters())
    optimizer = torch.optim.Adam(params, lr=c.lr)
    schedule = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=c.lr_factor, patience=c.lr_patience, min_lr=c.min_lr)
    states = [{k: v.clone() for k, v in run.policy.state_dict().items()}]
    costs, lrs = [run.validate()], [c.lr]
    for i in range(c.epochs):
        loss = run.env.simulate(run.policy, run.env.sample_episode()).average_cost.mean()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, c.grad_clip)
        optimizer.step()
        if (i + 1) % c.eval_every == 0:
            costs.append(run.validate())
            schedule.step(costs[-1])
            lrs.append(optimizer.param_groups[0]["lr"])
            states.append({k: v.clone() for k, v in run.policy.state_dict().items()})
    return states, costs, lrs


def assert_member_is_solo(policy, result, instance, policy_config, c, tol):
    states, costs, lrs = solo(instance, policy_config, c)
    got = [h["validation_cost"] for h in result.history]
    assert got == pytest.approx(costs, rel=tol, abs=0)
    assert [h["lr"] for h in result.history] == lrs
    best = states[result.best_iteration // c.eval_every]
    for name, value in policy.state_dict().items():
        torch.testing.assert_close(value, best[name], rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-12), ("float32", 2e-5)])
def test_each_member_ends_as_its_single_run(dtype, tol, request):
    """float64: equal to rounding; float32: within 2e-5 (relative) after 12 epochs."""
    if dtype == "float64":
        request.getfixturevalue("float64")
    instance = f"{SMALL},dtype={dtype}"
    policies, results = train_ds(instance, POLICY, MEMBERS, progress=False)
    assert len(policies) == len(results) == 3
    for policy, result, c in zip(policies, results, MEMBERS):
        assert result.stopped == "completed" and result.iterations == c.epochs
        assert_member_is_solo(policy, result, instance, POLICY, c, tol)
    assert any(h["lr"] < c.lr for r, c in zip(results, MEMBERS) for h in r.history)


def test_members_with_their_own_heads_bias_and_budgets(float64):
    """Initial outputs, epochs and patience per member; early stopping freezes a member."""
    instance = f"{SMALL},dtype=float64"
    pcs = [POLICY, dataclasses.replace(POLICY, initial_output=[2.5])]
    cfgs = [config(epochs=6, seed=3), config(epochs=15, seed=4, patience=1, lr=0.05)]
    policies, results = train_ds(instance, pcs, cfgs, progress=False)
    assert results[0].stopped == "completed" and results[0].iterations == 6
    assert results[1].stopped == "early_stopped" and results[1].iterations < 15
    for policy, result, pc, c in zip(policies, results, pcs, cfgs):
        c = dataclasses.replace(c, epochs=result.iterations)
        assert_member_is_solo(policy, result, instance, pc, c, 1e-12)


def test_a_diverging_member_is_frozen_and_the_others_go_on():
    blowing_up = config(lr=1e30, grad_clip=1e30, seed=7)
    policies, results = train_ds(SMALL, POLICY, [MEMBERS[0], blowing_up, MEMBERS[1]],
                                 progress=False)
    assert results[1].stopped == "diverged" and "not finite" in results[1].message
    assert results[1].iterations < 18
    assert all(torch.isfinite(v).all() for v in policies[1].state_dict().values())
    for k, c in ((0, MEMBERS[0]), (2, MEMBERS[1])):
        assert_member_is_solo(policies[k], results[k], SMALL, POLICY, c, 2e-5)


def test_files_and_a_killed_population_resumes_exactly(tmp_path):
    cfgs = MEMBERS[:2]
    whole, whole_results = train_ds(SMALL, POLICY, cfgs, progress=False)

    def kill(metrics):  # a second Ctrl-C at member 1's validation at epoch 9
        if metrics["member"] == 1 and metrics["iteration"] == 9:
            raise KeyboardInterrupt

    _, part = train_ds(SMALL, POLICY, cfgs, out_dir=tmp_path, progress=False, callbacks=[kill])
    assert [r.stopped for r in part] == ["interrupted"] * 2
    assert load_file(tmp_path / "checkpoint.pt")["done"] == 6  # the last checkpoint stays
    policies, results = train_ds(SMALL, POLICY, cfgs, out_dir=tmp_path, resume=True,
                                 progress=False)
    for k in range(2):
        assert [h["validation_cost"] for h in results[k].history] == \
            [h["validation_cost"] for h in whole_results[k].history]
        saved = Policy.load(tmp_path / f"member-{k}" / "policy.pt")
        for name, value in whole[k].state_dict().items():
            assert torch.equal(value, policies[k].state_dict()[name])
            assert torch.equal(value, saved.state_dict()[name])
        rows = (tmp_path / f"member-{k}" / "metrics.csv").read_text().splitlines()
        assert len(rows) == 1 + len(results[k].history)
    with pytest.raises(ValueError, match=r"members\.1\.config\.lr: 0\.01 there, 0\.02 here"):
        train_ds(SMALL, POLICY, [cfgs[0], dataclasses.replace(cfgs[1], lr=0.02)],
                 out_dir=tmp_path, resume=True, progress=False)


def test_a_callback_stops_one_member_which_then_costs_nothing(monkeypatch):
    from deepstock_fast.envs import InventoryEnv

    def prune(metrics):
        return metrics["member"] == 0 and metrics["iteration"] >= 3

    skus, simulate = [], InventoryEnv.simulate

    def counting(self, policy, episode=None, **kw):
        skus.append(episode.demand.shape[0])
        return simulate(self, policy, episode, **kw)

    monkeypatch.setattr(InventoryEnv, "simulate", counting)
    policies, results = train_ds(SMALL, POLICY, MEMBERS[:2], progress=False, callbacks=[prune])
    assert results[0].stopped == "callback" and results[0].iterations == 3
    assert results[1].stopped == "completed" and results[1].iterations == 18
    # after the validation at epoch 3: member 1's 16 training and 32 validation SKUs alone
    assert skus[-1] == 32 and set(skus[-20:]) == {16, 32}
    assert_member_is_solo(policies[1], results[1], SMALL, POLICY, MEMBERS[1], 2e-5)


def test_configs_of_other_shapes_are_split_into_populations(tmp_path):
    cfgs = [config(seed=0), config(seed=1, batch_size=8), config(seed=2)]
    pcs = [POLICY, POLICY, PolicyConfig(hidden=(8,))]
    seen = []
    policies, results = train_ds(SMALL, pcs, cfgs, out_dir=tmp_path, progress=False,
                                 callbacks=[lambda m: seen.append(m["member"])])
    assert [p.config.hidden for p in policies] == [(16, 16), (16, 16), (8,)]
    assert seen[:7] == [0] * 7 and seen[7:14] == [1] * 7 and seen[14:] == [2] * 7
    assert {p.name for p in tmp_path.glob("checkpoint*.pt")} == {
        "checkpoint.pt", "checkpoint-1.pt", "checkpoint-2.pt"}
    for k in range(3):
        alone, result = train_ds(SMALL, pcs[k], cfgs[k], progress=False)
        assert [h["validation_cost"] for h in result.history] == \
            [h["validation_cost"] for h in results[k].history]


def test_one_config_broadcast_to_a_list_and_bad_lists():
    policies, results = train_ds(SMALL, [POLICY, dataclasses.replace(POLICY, head="none")],
                                 config(epochs=3), progress=False)
    assert [p.config.head for p in policies] == ["base", "none"]
    with pytest.raises(ValueError, match="same length, got 2 and 3"):
        train_ds(SMALL, [POLICY] * 2, MEMBERS, progress=False)
    with pytest.raises(ValueError, match="empty list"):
        train_ds(SMALL, POLICY, [], progress=False)
    with pytest.raises(ValueError, match=r"config\[1\] must be a DSConfig, got dict"):
        train_ds(SMALL, POLICY, [config(), {"lr": 0.1}], progress=False)
    with pytest.raises(ValueError, match="threads must be an int >= 1"):
        train_ds(SMALL, POLICY, config(), progress=False, threads=0)
    from deepstock_fast.trainers import train_ddpg, train_ppo

    for train in (train_ppo, train_ddpg):
        with pytest.raises(ValueError, match=r"policy_config\[1\] must be a PolicyConfig"):
            train(SMALL, [POLICY, "base"], progress=False)


# ---- the per-member optimizer, clipping and schedule against torch's ------------------------
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_stacked_adam_is_torch_adam_per_member(dtype):
    g = torch.Generator().manual_seed(0)
    K, lrs = 3, [1e-3, 0.1, 3.0]
    start = torch.randn(K, 4, 5, generator=g, dtype=dtype)
    stacked = start.clone().requires_grad_()
    alone = [start[k].clone().requires_grad_() for k in range(K)]
    adam = StackedAdam([stacked], lrs)
    torch_adams = [torch.optim.Adam([p], lr=lr) for p, lr in zip(alone, lrs)]
    for step in range(6):
        grad = torch.randn(K, 4, 5, generator=g, dtype=dtype) * 10 ** step
        active = [True, step % 2 == 0, True]  # member 1 sits out odd steps
        stacked.grad = grad.clone()
        adam.step(active)
        for k in range(K):
            if active[k]:
                alone[k].grad = grad[k].clone()
                torch_adams[k].step()
        if step == 3:
            adam.lr[2] = torch_adams[2].param_groups[0]["lr"] = 0.5
    for k in range(K):
        assert torch.equal(stacked[k], alone[k]), k
    assert adam.steps == [6, 3, 6]


def test_clip_grad_norms_is_torch_clipping_per_member():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(3, 4, 5, generator=g), torch.randn(3, 7, generator=g)
    params = [torch.zeros_like(a, requires_grad=True), torch.zeros_like(b, requires_grad=True)]
    params[0].grad, params[1].grad = a.clone(), b.clone()
    top = [0.1, 100.0, 1.0]
    norms = clip_grad_norms_(params, top)
    for k in range(3):
        alone = [torch.zeros_like(a[k], requires_grad=True), torch.zeros_like(b[k],
                                                                          requires_grad=True)]
        alone[0].grad, alone[1].grad = a[k].clone(), b[k].clone()
        norm = torch.nn.utils.clip_grad_norm_(alone, top[k])
        torch.testing.assert_close(norms[k], norm)
        for p, q in zip(params, alone):
            torch.testing.assert_close(p.grad[k], q.grad)


def test_plateau_is_torch_reduce_lr_on_plateau_per_member():
    values = [5.0, 4.0, 4.0, 3.9999, 4.1, 4.2, 4.3, 2.0, 2.0, 2.0, 2.0, 2.0]
    adam = StackedAdam([torch.zeros(2, 1)], [0.1, 0.1])
    plateau = PlateauLR(adam, [0.5, 0.9], [1, 2], [1e-3, 0.08])
    for k, (factor, patience, low) in enumerate([(0.5, 1, 1e-3), (0.9, 2, 0.08)]):
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        reference = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=factor,
                                                               patience=patience, min_lr=low)
        for v in values:
            plateau.step(k, v)
            reference.step(v)
            assert adam.lr[k] == opt.param_groups[0]["lr"]


def test_stacked_policy_is_its_members(float64):
    instance = f"{SMALL},dtype=float64"
    members = [setup(instance, PolicyConfig(head=h, hidden=(8, 8), output_bounds=b),
                     train_skus=4, validation_skus=4, seed=s, device="cpu").policy
               for s, (h, b) in enumerate([("coeff", (-30.0, 30.0)), ("coeff", (-20.0, 10.0))])]
    stacked = StackedPolicy(members)
    obs = torch.randn(2 * 5, len(members[0].obs_names))
    raw = stacked.raw(obs).view(2, 5, -1)
    for k, p in enumerate(members):
        torch.testing.assert_close(raw[k], p.raw(obs[5 * k:5 * (k + 1)]), rtol=1e-13, atol=0)
        for name, value in stacked.member(k).state_dict().items():
            assert torch.equal(value, p.state_dict()[name])
    with pytest.raises(ValueError, match="policy 1: hidden"):
        StackedPolicy([members[0], Policy(members[0].obs_names, members[0].features,
                                          PolicyConfig(head="coeff", hidden=(4,)))])


def test_a_member_with_non_finite_outputs_is_stopped_not_the_population():
    # member 1's normaliser divides by ~0: finite on the health probe (mean +- std), infinite
    # on other states; the ops, which refuse NaN orders, must not see them and fail member 0
    members = [setup(SMALL, PolicyConfig(head="base", hidden=(8, 8)), train_skus=4,
                     validation_skus=4, seed=s, device="cpu").policy for s in range(2)]
    with torch.no_grad():
        members[1].obs_std[0] = 1e-38
    stacked = StackedPolicy(members)
    assert stacked.healthy() == [True, True]
    env = InventoryEnv(f"{SMALL},num_skus=8", seed=0)  # each member on 4 SKUs
    with torch.no_grad():
        result = env.simulate(stacked, env.sample_episode())  # no error from the ops
    assert torch.isfinite(result.average_cost).all()
    assert stacked.healthy() == [True, False]
    stacked.load_member_state(1, members[0].state_dict())  # e.g. its best weights
    assert stacked.healthy() == [True, True]


def test_a_member_whose_finite_output_overflows_into_orders_is_stopped():
    # a None head's order is its output times the demand scale: a finite output near float32's
    # largest makes an infinite order, which the ops refuse
    members = [setup(SMALL, PolicyConfig(head="none", hidden=(8, 8)), train_skus=4,
                     validation_skus=4, seed=s, device="cpu").policy for s in range(2)]
    stacked = StackedPolicy(members)
    with torch.no_grad():
        stacked.net.bias[-1][1].fill_(3e38)
    env = InventoryEnv(f"{SMALL},num_skus=8", seed=0)
    with torch.no_grad():
        result = env.simulate(stacked, env.sample_episode())  # no error from the ops
    assert torch.isfinite(result.average_cost).all()
    assert stacked.healthy() == [True, False]


def test_threads_follow_the_work():
    assert choose_threads(128) == 1 and choose_threads(16 * 128) == 1
    assert 1 <= choose_threads(2 ** 20) <= (__import__("os").cpu_count() or 1)


# ---- the command line ------------------------------------------------------------------------
def test_deepstock_train_population(tmp_path):
    from deepstock_fast import cli

    out = tmp_path / "run"
    args = ["train", "--instance", SMALL, "--batch-size", "16", "--validation-skus", "32",
            "--eval-every", "5", "--checkpoint-every", "5", "--test-skus", "64",
            "--test-horizon", "120", "--hidden", "8", "--no-progress", "--population", "2",
            "--threads", "1", "--seed", "3", "--out", str(out)]
    assert cli.main([*args, "--epochs", "5"]) == 0
    results = __import__("json").loads((out / "results.json").read_text())
    assert set(results["runs"]) == {"base seed 3", "base seed 4"} and results["population"] == 2
    assert load_file(out / "base" / "checkpoint.pt")["done"] == 5
    assert cli.main([*args, "--epochs", "10", "--resume"]) == 0  # trains on to 10 epochs
    assert load_file(out / "base" / "checkpoint.pt")["done"] == 10
    rows = (out / "base" / "member-1" / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["0", "5", "10"]
    with pytest.raises(SystemExit):
        cli.main([*args[:-2], "--threads", "0"])
    with pytest.raises(SystemExit):
        cli.main([*args[:-2], "--population", "0"])


# ---- PPO ---------------------------------------------------------------------------------------
def assert_members_are_single_runs(policies, results, members, solo, instance, policy_config,
                                   tol):
    """Each member ran its budget, validated as its single run (``solo``: (weights at every
    validation, validation costs)) did, and ended with that run's weights at its best."""
    for policy, result, c in zip(policies, results, members):
        assert result.stopped == "completed" and result.iterations == c.iterations
        states, costs = solo(instance, policy_config, c)
        assert [h["validation_cost"] for h in result.history] == pytest.approx(costs, rel=tol)
        best = states[result.best_iteration // c.eval_every]
        for name, value in policy.state_dict().items():
            torch.testing.assert_close(value, best[name], rtol=tol, atol=tol)


def solo_ppo(instance, policy_config: PolicyConfig, c):
    """A single PPO run as the trainer was written before populations (torch.optim.Adam and
    clip_grad_norm_ on one Policy and one critic): the validation costs at each validation
    and the policy's weights at each."""
    from deepstock_fast import seeding
    from deepstock_fast.policies import mlp
    from deepstock_fast.trainers.common import objective_reward, reward_scale
    from deepstock_fast.trainers.ppo import gae, ppo_loss

    run = setup(instance, policy_config, train_skus=c.num_envs,
                validation_skus=c.validation_skus, seed=c.seed, device="cpu", reset=True)
    env, policy = run.env, run.policy
    critic = mlp([env.obs_size, *c.critic_hidden, 1], policy_config.activation)
    log_std = torch.nn.Parameter(torch.full((policy.head.out_features,), c.log_std_init))
    scale = reward_scale(run.instance, c.seed, "cpu")
    params = list(policy.parameters()) + list(critic.parameters()) + [log_std]
    optimizer = torch.optim.Adam(params, lr=c.lr, eps=1e-5)
    noise = seeding.generator(c.seed, "exploration")
    minibatches = seeding.generator(c.seed, "minibatch")

    def value(obs):
        return critic((obs.float() - policy.obs_mean) / policy.obs_std).squeeze(-1)

    states, costs = [{k: v.clone() for k, v in policy.state_dict().items()}], [run.validate()]
    for i in range(c.iterations):
        optimizer.param_groups[0]["lr"] = c.lr_final + (c.lr - c.lr_final) * (1 - i / c.iterations)
        bufs = [[] for _ in range(6)]
        with torch.no_grad():
            for _ in range(c.n_steps // c.num_envs):
                state = env.state()
                mean = policy.raw(state.obs)
                dist = torch.distributions.Normal(mean, log_std.exp())
                raw = mean + log_std.exp() * torch.randn(mean.shape, generator=noise)
                _, reward, terminated, truncated, info = env.step(policy.project(raw, state))
                reward = objective_reward(env, reward, state.day).float() / scale
                v = value(state.obs)
                if truncated.any():
                    reward = reward + c.gamma * truncated * value(info["final_obs"])
                for buf, x in zip(bufs, (state.obs.float(), raw, dist.log_prob(raw).sum(-1), v,
                                         reward, (terminated | truncated).float())):
                    buf.append(x)
            obs_b, raw_b, logp_b, val_b, rew_b, done_b = (torch.stack(b) for b in bufs)
            adv = gae(rew_b, val_b, value(env.state().obs), done_b, c.gamma, c.gae_lambda)
            ret = adv + val_b
        obs, raw, old, adv, ret = (x.flatten(0, 1) for x in (obs_b, raw_b, logp_b, adv, ret))
        for _ in range(c.update_epochs):
            order = torch.randperm(obs.shape[0], generator=minibatches)
            for lo in range(0, obs.shape[0], c.batch_size):
                idx = order[lo:lo + c.batch_size]
                dist = torch.distributions.Normal(policy.raw(obs[idx]), log_std.exp())
                loss = ppo_loss(dist.log_prob(raw[idx]).sum(-1), old[idx], adv[idx],
                                value(obs[idx]), ret[idx], dist.entropy().sum(-1), c)
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, c.max_grad_norm)
                optimizer.step()
        if (i + 1) % c.eval_every == 0:
            costs.append(run.validate())
            states.append({k: v.clone() for k, v in policy.state_dict().items()})
    return states, costs


def ppo_config(**kw):
    from deepstock_fast.trainers import PPOConfig

    return PPOConfig(**{**dict(total_steps=1536, num_envs=16, n_steps=256, batch_size=64,
                               update_epochs=2, validation_skus=32, eval_every=2,
                               checkpoint_every=2, critic_hidden=(16,), patience=100), **kw})


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-7), ("float32", 1e-5)])
def test_each_ppo_member_ends_as_its_single_run(dtype, tol, request):
    """Within 1e-7 (float64) and 1e-5 (float32) after 6 updates: PPO keeps rewards and
    observations in float32 whatever the instance's dtype, and its updates (the normalised
    advantages, Adam on small gradients) magnify the batched products' rounding: measured
    1e-9 and 1e-7."""
    from deepstock_fast.trainers import train_ppo

    if dtype == "float64":
        request.getfixturevalue("float64")
    instance = f"zipkin:L=1,p=9,horizon=32,warmup=8,dtype={dtype}"
    members = [ppo_config(seed=0), ppo_config(seed=1, lr=3e-3, clip=0.1, ent_coef=0.0,
                                               gamma=0.9, gae_lambda=0.8, max_grad_norm=0.1,
                                               log_std_init=-2.0, update_epochs=3),
               ppo_config(seed=2, total_steps=1024, vf_coef=1.0)]
    policy_config = PolicyConfig(hidden=(16,))
    policies, results = train_ppo(instance, policy_config, members, progress=False)
    assert_members_are_single_runs(policies, results, members, solo_ppo, instance, policy_config,
                                   tol)


def test_a_killed_ppo_population_resumes_exactly_and_a_diverging_member(tmp_path):
    from deepstock_fast.trainers import train_ppo

    members = [ppo_config(seed=0), ppo_config(seed=1, lr=1e30, max_grad_norm=1e30),
               ppo_config(seed=2, update_epochs=1)]
    whole, whole_results = train_ppo(SMALL, POLICY, members, progress=False)
    assert whole_results[1].stopped == "diverged"
    assert [r.stopped for r in whole_results[::2]] == ["completed"] * 2

    def kill(metrics):  # a second Ctrl-C at member 2's validation after update 4
        if metrics["member"] == 2 and metrics["iteration"] == 4:
            raise KeyboardInterrupt

    train_ppo(SMALL, POLICY, members, out_dir=tmp_path, progress=False, callbacks=[kill])
    policies, results = train_ppo(SMALL, POLICY, members, out_dir=tmp_path, resume=True,
                                  progress=False)
    for k in range(3):
        assert results[k].stopped == whole_results[k].stopped
        assert [h["validation_cost"] for h in results[k].history] == \
            [h["validation_cost"] for h in whole_results[k].history]
        for name, value in whole[k].state_dict().items():
            assert torch.equal(value, policies[k].state_dict()[name])


# ---- DDPG --------------------------------------------------------------------------------------
def solo_ddpg(instance, policy_config: PolicyConfig, c):
    """A single DDPG run as the trainer was written before populations (torch.optim.Adam on
    one Policy and one critic, a replay buffer of its own): the validation costs at each
    validation and the actor's weights at each."""
    import copy

    from deepstock_fast import seeding
    from deepstock_fast.policies import default_bounds, mlp
    from deepstock_fast.trainers.common import objective_reward, reward_scale
    from deepstock_fast.trainers.ddpg import ReplayBuffer

    inst = __import__("deepstock_fast").envs.InstanceConfig.from_name(instance)
    policy_config = dataclasses.replace(
        policy_config, output_bounds=default_bounds(policy_config.head, inst))
    run = setup(inst, policy_config, train_skus=c.num_envs, validation_skus=c.validation_skus,
                seed=c.seed, device="cpu", reset=True)
    env, actor = run.env, run.policy
    k = actor.head.out_features
    critic = mlp([env.obs_size + k, *c.critic_hidden, 1], policy_config.activation)
    target_critic, target_actor = copy.deepcopy(critic), copy.deepcopy(actor)
    buffer = ReplayBuffer(c.buffer_size, env.obs_size, k, "cpu")
    unit = reward_scale(inst, c.seed, "cpu") / (1 - c.gamma + 1e-3)
    actor_opt = torch.optim.Adam(actor.parameters(), lr=c.lr)
    critic_opt = torch.optim.Adam(critic.parameters(), lr=c.lr)
    sampler = seeding.generator(c.seed, "minibatch")
    noise = seeding.generator(c.seed, "exploration")
    first = max(1, -(-c.learning_starts // c.num_envs))

    def q(net, obs, raw):
        return net(torch.cat([(obs - actor.obs_mean) / actor.obs_std, raw], 1)).squeeze(1)

    updates = 0
    states = [{n: v.clone() for n, v in actor.state_dict().items()}]
    costs = [run.validate()]
    for i in range(c.iterations):
        for opt in (actor_opt, critic_opt):
            opt.param_groups[0]["lr"] = c.lr_final + (c.lr - c.lr_final) * (1 - i / c.iterations)
        state = env.state()
        with torch.no_grad():
            raw = actor.raw(state.obs)
            std = c.warmup_noise if updates < c.critic_warmup else c.exploration_noise
            if std > 0:
                raw = raw + std * torch.randn(raw.shape, generator=noise)
            _, reward, terminated, _, info = env.step(actor.project(raw, state))
        next_obs = info.get("final_obs", env.state().obs)
        reward = objective_reward(env, reward, state.day)
        buffer.add(state.obs, raw, reward / unit, next_obs, terminated)
        if i + 1 >= first and (i + 1) % c.train_freq == 0:
            for _ in range(c.gradient_steps):
                obs, raw, reward, next_obs, terminal = buffer.sample(c.batch_size, sampler)
                with torch.no_grad():
                    target = reward + c.gamma * (1 - terminal) * q(
                        target_critic, next_obs, target_actor.raw(next_obs))
                loss = (q(critic, obs, raw) - target).pow(2).mean()
                critic_opt.zero_grad()
                loss.backward()
                critic_opt.step()
                nets = [(critic, target_critic)]
                if updates >= c.critic_warmup:
                    loss = -q(critic, obs, actor.raw(obs)).mean()
                    actor_opt.zero_grad()
                    loss.backward(inputs=list(actor.parameters()))
                    actor_opt.step()
                    nets.append((actor, target_actor))
                with torch.no_grad():
                    for net, target_net in nets:
                        for p, tp in zip(net.parameters(), target_net.parameters()):
                            tp.lerp_(p, c.tau)
                updates += 1
        if (i + 1) % c.eval_every == 0:
            costs.append(run.validate())
            states.append({n: v.clone() for n, v in actor.state_dict().items()})
    return states, costs


def ddpg_config(**kw):
    from deepstock_fast.trainers import DDPGConfig

    return DDPGConfig(**{**dict(total_steps=16 * 48, num_envs=16, batch_size=32,
                                learning_starts=64, gradient_steps=2, validation_skus=32,
                                eval_every=8, checkpoint_every=8, critic_hidden=(16,),
                                buffer_size=256, critic_warmup=8, patience=100), **kw})


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-7), ("float32", 1e-5)])
def test_each_ddpg_member_ends_as_its_single_run(dtype, tol, request):
    """Within 1e-7 (float64) and 1e-5 (float32): DDPG's replay buffer holds float32 whatever
    the instance's dtype."""
    from deepstock_fast.trainers import train_ddpg

    if dtype == "float64":
        request.getfixturevalue("float64")
    instance = f"zipkin:L=1,p=9,horizon=32,warmup=8,dtype={dtype}"
    members = [ddpg_config(seed=0),
               ddpg_config(seed=1, lr=3e-3, tau=0.05, gamma=0.9, exploration_noise=0.3,
                           warmup_noise=1.0),
               ddpg_config(seed=2, total_steps=16 * 32, lr_final=1e-3)]
    policy_config = PolicyConfig(hidden=(16,))
    policies, results = train_ddpg(instance, policy_config, members, progress=False)
    assert_members_are_single_runs(policies, results, members, solo_ddpg, instance, policy_config,
                                   tol)


def test_a_diverging_ddpg_member_is_frozen_and_the_others_go_on():
    from deepstock_fast.trainers import train_ddpg

    members = [ddpg_config(seed=0), ddpg_config(seed=1, lr=1e30)]
    policies, results = train_ddpg(SMALL, POLICY, members, progress=False)
    alone, result = train_ddpg(SMALL, POLICY, members[0], progress=False)
    assert results[1].stopped == "diverged" and results[0].stopped == "completed"
    assert [h["validation_cost"] for h in results[0].history] == pytest.approx(
        [h["validation_cost"] for h in result.history], rel=1e-5)
