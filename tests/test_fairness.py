"""A comparison between heads or algorithms is fair: same inputs, same objective, same reachable
policies, the same constraints for the references, disjoint random streams, standard errors."""

from __future__ import annotations

import math

import pytest
import torch

from deepstock_fast import baselines, compare, seeding
from deepstock_fast.envs import InstanceConfig, InventoryEnv
from deepstock_fast.evaluation import evaluate, held_out_env, paired_gap
from deepstock_fast.ops import base_stock_order
from deepstock_fast.policies import HEADS, PolicyConfig, default_bounds, initial_output
from deepstock_fast.trainers import DDPGConfig, PPOConfig, ppo, train_ddpg, train_ppo
from deepstock_fast.trainers.common import setup

ZIPKIN = "zipkin:L=2,p=9,horizon=60,warmup=20"


# ---- 1. the input normalisation does not depend on the head or the algorithm ----------------
@pytest.mark.parametrize("name", [ZIPKIN, "paper:setting=2"])
def test_normalizer_is_the_same_for_every_head_and_algorithm(name):
    fitted = []
    for head in HEADS:
        for train_skus, reset in ((128, False), (64, True)):  # DS's and PPO/DDPG's setups
            run = setup(name, PolicyConfig(head=head, hidden=(8,)), train_skus=train_skus,
                        validation_skus=16, seed=3, device="cpu", reset=reset)
            fitted.append((run.policy.obs_mean, run.policy.obs_std))
    for mean, std in fitted[1:]:
        assert torch.equal(mean, fitted[0][0]) and torch.equal(std, fitted[0][1])
    # the fit sees states that vary: no state column is nearly constant (on the paper's settings
    # an order arrives inside its own review period, so the pipeline is empty at every review)
    state = [i for i, n in enumerate(run.env.obs_names) if n.startswith(("on_hand", "pipeline"))]
    if name == ZIPKIN:
        assert (fitted[0][1][state] > 0.05).all()


# ---- 2. the horizon's meaning is the instance's, and every trainer honours it ---------------
@pytest.mark.parametrize("name,finite", [(ZIPKIN, False), ("paper:setting=1", True)])
def test_episode_end_is_terminal_for_finite_horizons_only(name, finite):
    env = InventoryEnv(name, seed=0)
    env.reset()
    for _ in range(env.num_epochs):
        _, _, terminated, truncated, info = env.step(torch.zeros(env.num_envs))
    assert bool(terminated.all()) == finite and bool(truncated.all()) == (not finite)
    assert "final_obs" in info


def test_ppo_does_not_bootstrap_or_count_warmup_on_a_finite_horizon(monkeypatch):
    seen = []
    original = ppo.gae

    def spy(rewards, values, next_value, dones, gamma, lam):
        seen.append((rewards.clone(), dones.clone()))
        return original(rewards, values, next_value, dones, gamma, lam)

    monkeypatch.setattr(ppo, "gae", spy)
    name = "paper:setting=1"
    instance = InstanceConfig.from_name(name)
    steps = []
    step = InventoryEnv.step

    def recording_step(self, action):
        out = step(self, action)
        steps.append(out)
        return out

    monkeypatch.setattr(InventoryEnv, "step", recording_step)
    policy, _ = train_ppo(name, PolicyConfig(hidden=(8,)), PPOConfig(
        total_steps=120, num_envs=8, n_steps=120, batch_size=40, update_epochs=1, eval_every=1,
        validation_skus=8, critic_hidden=(8,)), progress=False)
    rewards, dones = seen[0]
    epochs = instance.horizon // instance.review_period
    assert dones.shape[0] == 15 and bool(dones[epochs - 1].all()) and not dones[:-1].any()
    raw = steps[epochs - 1][1].float()  # the final step's reward: no value added to it
    ratio = rewards[epochs - 1][raw != 0] / raw[raw != 0]
    assert ratio.numel() and torch.allclose(ratio, ratio[0].expand_as(ratio))
    warmup_epochs = instance.warmup // instance.review_period
    assert (rewards[:warmup_epochs] == 0).all() and (rewards[warmup_epochs:] != 0).any()


@pytest.mark.parametrize("name,finite", [(ZIPKIN, False), ("paper:setting=1", True)])
def test_ddpg_stores_terminal_transitions_for_finite_horizons_only(name, finite, tmp_path):
    config = DDPGConfig(total_steps=8 * 40, num_envs=8, learning_starts=64, batch_size=16,
                        gradient_steps=1, critic_warmup=0, eval_every=40, checkpoint_every=40,
                        validation_skus=8, buffer_size=1000, critic_hidden=(8,))
    train_ddpg(name, PolicyConfig(hidden=(8,)), config, out_dir=tmp_path, progress=False)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    terminal = state["stateful"]["extra"]["buffer.terminal"][:8 * 40]
    epochs = InventoryEnv(name).num_epochs
    assert float(terminal.sum()) == (8 * (40 // epochs) if finite else 0)


# ---- 3. DDPG never destroys its initial policy without saying so ----------------------------
def test_ddpg_first_validation_is_no_worse_than_its_initial_policy():
    # defaults: 5000 transitions before the first update, then 3000 updates of the critic alone
    # (16 per step of 64 transitions): the actor waits until step 266, after the first
    # validations (every 100 steps), which therefore equal the initial policy's
    config = DDPGConfig(total_steps=64 * 200, validation_skus=128)
    policy, result = train_ddpg(ZIPKIN, PolicyConfig(), config, progress=False)
    costs = {h["iteration"]: h["validation_cost"] for h in result.history}
    assert list(costs) == [0, 100, 200] and costs[100] == costs[200] == costs[0]
    assert result.best_validation == costs[0] and result.best_iteration == 0


def test_a_run_returns_its_initial_policy_when_nothing_improved_and_says_so(tmp_path):
    from deepstock_fast.trainers.common import run_loop

    policy = torch.nn.Linear(1, 1)
    start = {k: v.clone() for k, v in policy.state_dict().items()}
    costs = iter([1.0, 2.0, 3.0])

    def iterate(i):
        with torch.no_grad():
            policy.weight.add_(1.0)
        return 0.0

    policy.save = lambda path, instance: None
    result = run_loop(label="t", total=2, iterate=iterate, validate=lambda: next(costs),
                      eval_every=1, patience=5, checkpoint_every=5, time_budget=None,
                      policy=policy, stateful={}, generators={}, identity={"instance": {}},
                      progress=False)
    assert result.best_iteration == 0 and "initial policy" in result.message
    assert all(torch.equal(v, start[k]) for k, v in policy.state_dict().items())


# ---- 4. bounds give every head the same reachable policies ----------------------------------
@pytest.mark.parametrize("name", ["zipkin:L=2,p=9", "paper:setting=2"])
def test_bounds_admit_the_best_base_stock_policy_for_every_head(name):
    instance = InstanceConfig.from_name(name).replace(num_skus=64)
    env = InventoryEnv(instance, seed=0)
    episodes = [env.sample_episode() for _ in range(16)]
    demand = torch.stack([e.demand for e in episodes], 1).double()  # [S, N, T]
    scale = torch.stack([e.scale for e in episodes], 1).double()    # [S, N]
    lead = instance.per_sku_tensor("lead_time", "cpu", torch.int64)
    policy, _ = baselines.fit("base_stock", demand, lead, holding_cost=instance.holding_cost,
                              penalty_cost=instance.penalty_cost,
                              lost_sales=instance.lost_sales,
                              review_period=instance.review_period, warmup=instance.warmup,
                              max_order=instance.max_order)
    level = policy.params[:, :1]                         # [S, 1] in demand units
    # the largest level in units of the SKU's typical scale (a static level over episodes whose
    # scale, a 28-day mean, swings 10x for a strongly autocorrelated SKU is no target for a
    # bound: a state-dependent policy adapts its level to the observed demand instead)
    need = float((level[:, 0] / scale.mean(1)).max())
    for head in HEADS:
        low, high = default_bounds(head, instance)
        assert low <= 0 and need <= high, (head, need, high)
    # none orders at most the level, the largest order a base-stock policy places
    assert default_bounds("none", instance) == default_bounds("base", instance)
    # both: the level as a multiple of the 28-day trailing mean (a demand-mean feature)
    trailing = torch.stack([e.features[0, :, 0] for e in episodes], 1).double()
    assert float((level[:, 0] / trailing.mean(1)).max()) <= default_bounds("both", instance)[1]


# ---- 5. setting 4 is feasible, and references are costed like the policies ------------------
def test_paper_setting_4_orders_can_meet_demand_and_its_benchmark_is_reachable():
    instance = InstanceConfig.from_name("paper:setting=4")
    assert instance.review_period == 1 and instance.lead_time == 0
    env = InventoryEnv(instance.replace(num_skus=200), seed=0)
    sigma = env._process.std.double()
    benchmark = 100 + 1.2816 * sigma  # the newsvendor level per SKU
    assert float(benchmark.max()) < instance.max_order
    level = benchmark.to(env.dtype)
    episode = env.sample_episode()
    capped = env.simulate(lambda s: base_stock_order(level, s.inventory_position,
                                                     instance.max_order), episode)
    free = env.simulate(lambda s: base_stock_order(level, s.inventory_position, math.inf),
                        episode)
    assert torch.equal(capped.average_cost, free.average_cost)  # the cap never binds
    result = capped
    assert float(result.average_cost.mean()) < 20  # not the 811 of an infeasible cap


@pytest.mark.parametrize("name", ["paper:setting=4", "paper:setting=2",
                                  "zipkin:L=2,p=9,horizon=60,warmup=10,max_order=6,"
                                  "initial_state=mean_demand"])
def test_reference_rows_cost_policies_as_the_environment_does(name):
    instance = InstanceConfig.from_name(name)
    test = compare.held_out_instance(instance, skus=64, horizon=instance.horizon)
    rows = {r["policy"]: r for r in compare.reference_rows(instance, test, seed=4,
                                                           train_paths=8)}
    for label in ("best base-stock", "best capped base-stock"):
        row = rows[label]
        assert row["cost"] is not None, row["note"]
    # rebuild the best base-stock policy and cost it through the environment itself
    env = held_out_env(test, 4)
    episode = env.sample_episode()
    fit = compare.fit_episodes(instance, test, compare.identical_skus(instance), 8, 4, "cpu")
    lead = test.per_sku_tensor("lead_time", "cpu", torch.int64)
    pooled = compare.identical_skus(instance)
    policy, _ = baselines.fit("base_stock", fit[1], lead[:1] if pooled else lead,
                              on_hand=fit[2], pipeline=fit[3], **compare.costing(fit[0], "cpu"))
    level = policy.params[:, 0].expand(test.num_skus).to(env.dtype)
    cap = test.max_order if test.max_order is not None else math.inf
    via_env = env.simulate(lambda s: base_stock_order(level, s.inventory_position, cap),
                           episode).average_cost
    torch.testing.assert_close(rows["best base-stock"]["per_sku"], via_env.double(),
                               rtol=1e-5, atol=1e-5)


# ---- 6. training, validation and test streams never coincide --------------------------------
def test_streams_of_all_purposes_and_seeds_are_distinct():
    seeds = [seeding.stream(s, p) for s in range(200) for p in seeding.PURPOSES]
    assert len(set(seeds)) == len(seeds)
    with pytest.raises(ValueError, match="purpose"):
        seeding.stream(0, "tset")
    with pytest.raises(ValueError, match="seed"):
        seeding.stream(-1, "test")


def test_no_seed_trains_on_another_seeds_test_demand():
    instance = InstanceConfig.from_name(ZIPKIN).replace(num_skus=16)
    tests = {s: held_out_env(instance, s).sample_episode().demand for s in range(6)}
    for s in range(6):
        train = setup(instance, PolicyConfig(hidden=(8,)), train_skus=None, validation_skus=16,
                      seed=s, device="cpu")
        drawn = [train.env.sample_episode().demand for _ in range(3)] + [
            train.validation.demand]
        for t, test in tests.items():
            assert not any(torch.equal(d, test) for d in drawn), (s, t)


# ---- 7. costs and gaps come with standard errors ---------------------------------------------
def test_evaluation_and_paired_gaps_have_standard_errors():
    instance = InstanceConfig.from_name(ZIPKIN).replace(num_skus=400)
    low = evaluate(lambda s: base_stock_order(torch.full_like(s.on_hand, 20.0),
                                              s.inventory_position, math.inf), instance, seed=0)
    high = evaluate(lambda s: base_stock_order(torch.full_like(s.on_hand, 24.0),
                                               s.inventory_position, math.inf), instance, seed=0)
    per_sku = low.per_sku.average_cost.double()
    assert low.average_cost_se == pytest.approx(float(per_sku.std()) / 20, rel=1e-6)
    gap, se = paired_gap(high.per_sku.average_cost, low.per_sku.average_cost)
    assert gap == pytest.approx(100 * (high.average_cost / low.average_cost - 1), rel=1e-5)
    # common demand: the paired SE is far below what two independent SEs would give
    independent = 100 * math.hypot(low.average_cost_se, high.average_cost_se) / low.average_cost
    assert 0 < se < independent


def test_test_instances_are_at_least_the_papers_test_sizes():
    assert compare.held_out_instance(InstanceConfig.from_name("paper:setting=1")).num_skus >= 100
    assert compare.held_out_instance(InstanceConfig.from_name("paper:setting=3")).num_skus >= 100
    zipkin = compare.held_out_instance(InstanceConfig.from_name("zipkin:L=2,p=9"))
    assert zipkin.num_skus == 1024 and zipkin.horizon == 1000


def test_initial_output_of_base_is_the_reference_level():
    # the normaliser's reference policy and the Base head start from the same level
    instance = InstanceConfig.from_name("zipkin:L=2,p=9")
    assert initial_output("base", instance) == [4.0]
