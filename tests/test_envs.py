"""InventoryEnv and InstanceConfig: determinism, agreement with the eager reference and the fused
rollout, features, normalisation, autoreset, metrics, replay, the differentiable path, bad input."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

import pytest
import torch

import deepstock_fast as ds
from deepstock_fast import checks, compare, reference
from deepstock_fast import demand as demand_lib
from deepstock_fast.envs import InstanceConfig, InventoryEnv, demand_features, instances
from deepstock_fast.metrics import aggregate, business_metrics

from helpers import requires_cuda
from helpers import restored

SMALL = dict(num_skus=16, lead_time=[0, 1, 2, 3] * 4, review_period=2, horizon=12, warmup=4,
             holding_cost=1.0, penalty_cost=[4.0, 9.0] * 8, order_cost=0.5, max_order=30.0,
             observed_demand_days=3, dtype="float64")


def base_stock(level: float):
    return lambda s: ds.base_stock_order(torch.full_like(s.on_hand, level), s.inventory_position)


def run(env, policy, steps):
    out = []
    for _ in range(steps):
        s = env.state()
        obs, reward, terminated, truncated, info = env.step(policy(s))
        out.append((obs, reward, truncated, info))
    return out


# ---- config -----------------------------------------------------------------------------------
def test_config_round_trips_through_json():
    for config in (InstanceConfig(**SMALL), InstanceConfig.from_name("zipkin:L=3,p=19"),
                   InstanceConfig.from_name("paper:setting=4")):
        again = InstanceConfig.from_dict(json.loads(json.dumps(config.to_dict())))
        assert again == config


def test_named_instances():
    z = InstanceConfig.from_name("zipkin:L=4,p=39,num_skus=8,horizon=300")
    assert (z.lead_time, z.penalty_cost, z.holding_cost, z.lost_sales) == (4, 39.0, 1.0, True)
    assert (z.num_skus, z.horizon, z.demand) == (8, 300, {"kind": "poisson", "rate": 5.0})
    p = InstanceConfig.from_name("paper:setting=2")
    assert (p.review_period, p.lead_time, p.lost_sales, p.max_order) == (2, 1, False, 100.0)
    assert p.demand["kind"] == "paper_ar1" and p.extra_observations == ("yesterday",)


@pytest.mark.parametrize("changes,message", [
    (dict(holding_cost=-1.0), "holding_cost must be a finite number in [0, 1e+09], got -1.0"),
    (dict(penalty_cost=[1.0, 2.0]), "penalty_cost needs one value or num_skus = 16"),
    (dict(lead_time=5, max_lead_time=3), "lead_time 5 exceeds max_lead_time = 3"),
    (dict(lead_time=-1), "lead_time must be an int in 0..100000, got -1"),
    (dict(review_period=0), "review_period must be an int in 1..100000, got 0"),
    (dict(horizon=13), "horizon = 13 must be a positive multiple of review_period = 2"),
    (dict(warmup=12), "horizon = 12 must be longer than warmup = 12"),
    (dict(warmup=3), "warmup = 3 must be a multiple of review_period"),
    (dict(max_order=0.0), "max_order must be None or a finite number in (0, 1e+09], got 0.0"),
    (dict(features=("trailing_28", "weather")), "(unknown: ['weather'])"),
    (dict(demand={"kind": "zipf"}), "demand must be a dict with 'kind'"),
    (dict(demand={"kind": "poisson"}), "missing ['rate']"),
    (dict(demand={"kind": "poisson", "rate": -2.0}), "demand.rate must be a finite number in [0, 1e+06]"),
    (dict(demand={"kind": "replay", "history": [[1.0] * 80] * 3}),
     "lead_time needs one value or one per SKU of the catalog = 3 values (rows of the demand "
     "history), got 16"),
    (dict(demand={"kind": "replay", "history": [[1.0] * 20] * 16}),
     "demand history has 20 days; an episode needs"),
    (dict(initial_state="full"), "initial_state must be one of"),
    (dict(dtype="float16"), "dtype must be"),
])
def test_bad_configs_name_the_field(changes, message):
    with pytest.raises(ValueError) as e:
        InstanceConfig(**{**SMALL, **changes})
    assert message in str(e.value)


@pytest.mark.parametrize("name,message", [
    ("zipkin:L=5,p=9", "zipkin needs L in 1..4"),
    ("paper:setting=7", "paper needs setting in 1..4"),
    ("nowhere:x=1", "unknown instance family"),
    ("zipkin:L=2,p=9,colour=red", "unknown instance config fields ['colour']"),
    ("zipkin:L=2,p", "expected key=value"),
])
def test_bad_instance_names(name, message):
    with pytest.raises(ValueError, match=None) as e:
        InstanceConfig.from_name(name)
    assert message in str(e.value)


# ---- determinism and independence ---------------------------------------------------------------
def trajectory(seed, steps=15):
    env = InventoryEnv(SMALL, seed=seed)
    obs, _ = env.reset()
    out = run(env, base_stock(14.0), steps)
    return torch.stack([obs] + [o for o, *_ in out]), torch.stack([r for _, r, *_ in out])


def test_same_seed_same_trajectory_different_seed_differs():
    a, b, c = trajectory(0), trajectory(0), trajectory(1)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_reset_with_seed_restarts_the_stream():
    env = InventoryEnv(SMALL, seed=5)
    first, _ = env.reset(seed=3)
    run(env, base_stock(10.0), 4)
    again, _ = env.reset(seed=3)
    assert torch.equal(first, again)


def test_environments_are_independent():
    config = InstanceConfig(num_skus=512, lead_time=2, horizon=60, dtype="float64")
    env = InventoryEnv(config, seed=0)
    demand = env.sample_episode().demand  # [512, 60]
    centred = demand - demand.mean(1, keepdim=True)
    corr = (centred @ centred.T) / (centred.norm(dim=1, keepdim=True) * centred.norm(dim=1))
    off_diagonal = corr[~torch.eye(512, dtype=torch.bool)]
    assert off_diagonal.abs().mean() < 0.15 and off_diagonal.abs().max() < 0.7

    # one SKU's orders do not change another's trajectory
    runs = []
    for bump in (0.0, 7.0):
        env = InventoryEnv(SMALL, seed=2)
        env.reset()
        rewards = []
        for _ in range(5):
            order = base_stock(12.0)(env.state()).clone()
            order[0] += bump
            rewards.append(env.step(order)[1])
        runs.append(torch.stack(rewards))
    assert not torch.equal(runs[0][:, 0], runs[1][:, 0])
    assert torch.equal(runs[0][:, 1:], runs[1][:, 1:])


def test_state_dict_restores_the_rest_of_the_run():
    env = InventoryEnv(SMALL, seed=4)
    env.reset()
    run(env, base_stock(12.0), 4)
    saved = {k: (v.clone() if isinstance(v, torch.Tensor) else v)
             for k, v in env.state_dict().items()}
    after = run(env, base_stock(12.0), 10)  # crosses the horizon: a new episode is drawn
    other = InventoryEnv(SMALL, seed=99)
    other.load_state_dict(saved)
    again = run(other, base_stock(12.0), 10)
    for (o1, r1, t1, _), (o2, r2, t2, _) in zip(after, again):
        assert torch.equal(o1, o2) and torch.equal(r1, r2) and torch.equal(t1, t2)


# ---- agreement with the reference -----------------------------------------------------------------
def test_trajectory_equals_a_step_by_step_reference_run():
    config = InstanceConfig(**SMALL)
    env = InventoryEnv(config, seed=9)
    episode = InventoryEnv(config, seed=9).sample_episode()  # what reset(seed=9) draws
    env.reset()
    lead = torch.tensor(config.lead_time)
    h = torch.tensor(config.holding_cost, dtype=torch.float64)
    p = torch.tensor(config.penalty_cost, dtype=torch.float64)
    x, pipe = episode.on_hand, episode.pipeline
    g = torch.Generator().manual_seed(0)
    for epoch in range(env.num_epochs):
        order = torch.rand(16, generator=g, dtype=torch.float64) * 40  # some above max_order
        obs, reward, _, truncated, info = env.step(order)
        day = epoch * config.review_period
        x, pipe, cost, stats = reference.inventory_step(
            x, pipe, lead, order.clamp(max=30.0), episode.demand[:, day:day + 2], h, p, 0.5, True)
        torch.testing.assert_close(reward, -cost.sum(1))
        torch.testing.assert_close(info["stats"], stats)
        state_obs = info.get("final_obs", obs)[:, :1 + config.max_lead]
        torch.testing.assert_close(state_obs, torch.cat([x[:, None], pipe], 1)
                                   / episode.scale[:, None])
    assert truncated.all()


def test_episode_metrics_equal_the_fused_rollout():
    config = InstanceConfig(**{**SMALL, "horizon": 40, "max_order": None})
    env = InventoryEnv(config, seed=4)
    episode = InventoryEnv(config, seed=4).sample_episode()
    env.reset()
    out = run(env, base_stock(15.0), env.num_epochs)
    got = out[-1][3]["episode"]
    want = ds.rollout(episode.demand, "base_stock", torch.tensor([[15.0]], dtype=torch.float64),
                      torch.tensor(config.lead_time), review_period=2, warmup=4,
                      holding_cost=1.0, penalty_cost=torch.tensor(config.penalty_cost,
                                                                  dtype=torch.float64),
                      order_cost=0.5)
    torch.testing.assert_close(got.average_cost, want.average_cost)
    metrics = business_metrics(want.cost, want.stats, episode.demand[:, 4:].sum(1), 36)
    for name in metrics._fields:
        torch.testing.assert_close(getattr(got, name), getattr(metrics, name))
    assert env.last_metrics is got


def test_aggregate_metrics_are_ratios_of_totals():
    cost = torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.0, 1.0]])
    stats = torch.tensor([[8.0, 2.0, 1.0, 20.0], [2.0, 0.0, 0.0, 10.0]])
    m = aggregate(cost, stats, torch.tensor([10.0, 2.0]), 5)
    assert m.average_cost.item() == pytest.approx(3.5 / 5)
    assert m.fill_rate.item() == pytest.approx(10 / 12)
    assert m.stockout_rate.item() == pytest.approx(1 / 10)
    assert m.turnover_days.item() == pytest.approx(30 / 10)


# ---- autoreset --------------------------------------------------------------------------------
def test_autoreset_at_the_horizon():
    env = InventoryEnv(SMALL, seed=0)
    env.reset()
    flags = [t.all().item() for _, _, t, _ in run(env, base_stock(12.0), 3 * env.num_epochs)]
    assert flags == ([False] * (env.num_epochs - 1) + [True]) * 3
    # after the horizon the state is the new episode's initial state: empty
    assert env.state().day == 0 and env.state().inventory_position.abs().sum() == 0


# ---- observations and features ---------------------------------------------------------------
def test_features_against_direct_means():
    g = torch.Generator().manual_seed(0)
    path = torch.poisson(torch.full((3, 28 + 10 + 28), 6.0, dtype=torch.float64), generator=g)
    names = ("trailing_28", "trailing_7", "forecast_7", "forecast_28", "constant")
    f = demand_features(path, 28, range(10), names, noise_std=0.0).transpose(0, 1)
    for t in range(10):
        a = 28 + t
        want = torch.stack([path[:, a - 28:a].mean(1), path[:, a - 7:a].mean(1),
                            path[:, a:a + 7].mean(1), path[:, a:a + 28].mean(1),
                            torch.ones(3, dtype=torch.float64)], 1)
        torch.testing.assert_close(f[:, t], want)
    every_third = demand_features(path, 28, range(1, 10, 3), names, noise_std=0.0).transpose(0, 1)
    torch.testing.assert_close(every_third, f[:, 1::3])
    noisy = demand_features(path, 28, range(10), ("forecast_7",), noise_std=3.0, generator=g)
    assert 2.0 < (noisy[..., 0].T - f[..., 2]).std() < 4.0
    short = demand_features(path[:, 25:], 3, range(10), ("trailing_7",), noise_std=0.0)
    torch.testing.assert_close(short[0, :, 0], path[:, 25:28].mean(1))  # fewer days at the start
    torch.testing.assert_close(short[5, :, 0], path[:, 26:33].mean(1))
    first = demand_features(path, 0, range(3), ("trailing_7",), noise_std=0.0)
    assert torch.all(first[0, :, 0] == 0)
    torch.testing.assert_close(first[2, :, 0], path[:, :2].mean(1))
    with pytest.raises(ValueError, match="forecast_28 needs 28 days"):
        demand_features(path, 28, range(20), ("forecast_28",))


def test_observation_layout_and_normalisation():
    config = InstanceConfig(**{**SMALL, "extra_observations": ("day", "yesterday"),
                               "forecast_noise_std": 0.0})
    env = InventoryEnv(config, seed=1)
    episode = InventoryEnv(config, seed=1).sample_episode()
    obs, _ = env.reset()
    assert env.obs_names == (["on_hand", "pipeline_0", "pipeline_1", "pipeline_2",
                              "demand_-3", "demand_-2", "demand_-1"] + list(config.features)
                             + ["lead_time", "penalty_cost", "day", "yesterday"])
    run(env, base_stock(12.0), 2)
    s = env.state()
    col = {n: s.obs[:, i] for i, n in enumerate(env.obs_names)}
    scale = episode.scale
    assert torch.equal(scale, s.scale)
    demand = episode.demand  # day 4 is the current day; days 1..3 are the last three
    torch.testing.assert_close(col["demand_-1"], demand[:, 3] / scale)
    torch.testing.assert_close(col["yesterday"], demand[:, 3] / scale)
    torch.testing.assert_close(col["demand_-3"], demand[:, 1] / scale)
    torch.testing.assert_close(col["forecast_7"], demand[:, 4:11].mean(1) / scale)
    torch.testing.assert_close(s.features[:, 2], demand[:, 4:11].mean(1))
    assert torch.all(col["constant"] == 1) and torch.all(col["day"] == 4 / 12)
    torch.testing.assert_close(col["lead_time"], torch.tensor(config.lead_time,
                                                              dtype=torch.float64))
    torch.testing.assert_close(col["on_hand"], s.on_hand / scale)


def test_features_can_stay_out_of_the_observation():
    env = InventoryEnv("zipkin:L=2,p=9,num_skus=4", seed=0)
    env.reset()
    assert env.obs_names == ["on_hand", "pipeline_0", "pipeline_1"]
    assert env.state().features.shape == (4, 3)  # still there for the Coeff heads


def test_scale_is_the_history_mean_or_a_number():
    config = InstanceConfig(num_skus=64, demand={"kind": "poisson", "rate": [2.0, 50.0] * 32},
                            horizon=10)
    episode = InventoryEnv(config, seed=0).sample_episode()
    assert episode.scale[0::2].mean() == pytest.approx(2.0, rel=0.1)
    assert episode.scale[1::2].mean() == pytest.approx(50.0, rel=0.05)
    fixed = InventoryEnv(config.replace(obs_scale=5.0), seed=0).sample_episode()
    assert torch.all(fixed.scale == 5.0)


def test_mean_demand_initial_state():
    config = InstanceConfig(**{**SMALL, "initial_state": "mean_demand"})
    episode = InventoryEnv(config, seed=0).sample_episode()
    assert torch.all(episode.on_hand > 0)
    in_transit = (episode.pipeline > 0).sum(1)
    assert torch.equal(in_transit, torch.tensor(config.lead_time))


# ---- replay -------------------------------------------------------------------------------------
def test_replay_file_reproduces_the_demand(tmp_path):
    rows = torch.randint(0, 20, (4, 28 + 10 + 28)).to(torch.float64)
    path = tmp_path / "demand.csv"
    path.write_text("\n".join(",".join(str(int(v)) for v in r) for r in rows))
    config = InstanceConfig(num_skus=4, horizon=10, demand={"kind": "replay", "path": str(path)},
                            dtype="float64")
    episode = InventoryEnv(config, seed=0).sample_episode()
    assert torch.equal(episode.demand, rows[:, 28:38])

    longer = torch.arange(4 * 200, dtype=torch.float64).view(4, 200)
    config = config.replace(demand={"kind": "replay", "history": longer.tolist()})
    episode = InventoryEnv(config, seed=0).sample_episode()
    start = episode.demand[:, :1] - longer[:, :1]  # a random window of each SKU's row
    assert torch.equal(episode.demand, longer[:, :1] + start + torch.arange(10))


# ---- the differentiable path -------------------------------------------------------------------
def test_simulate_equals_stepping_and_has_gradients():
    config = InstanceConfig(**SMALL)
    env = InventoryEnv(config, seed=3)
    episode = InventoryEnv(config, seed=3).sample_episode()
    level = torch.full((16,), 13.0, dtype=torch.float64, requires_grad=True)

    def policy(s):
        assert s.obs.shape == (16, env.obs_size) and s.features.shape == (16, 5)
        return ds.base_stock_order(level + 0.1 * s.features[:, 1], s.inventory_position)

    result = env.simulate(policy, episode)
    env.reset()
    out = run(env, policy, env.num_epochs)
    torch.testing.assert_close(result.average_cost, out[-1][3]["episode"].average_cost)
    (grad,) = torch.autograd.grad(result.average_cost.sum(), level)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


# ---- bad use -------------------------------------------------------------------------------------
def test_bad_actions_and_order_of_calls():
    env = InventoryEnv(SMALL, seed=0)
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(torch.zeros(16, dtype=torch.float64))
    env.reset()
    with pytest.raises(ValueError, match=r"action must be a tensor of shape \[16\]"):
        env.step(torch.zeros(16, 1))
    with pytest.raises(ValueError, match="action must be a tensor"):
        env.step([0.0] * 16)
    with pytest.raises(RuntimeError, match="order"):
        env.step(torch.full((16,), -1.0, dtype=torch.float64))


def test_std_observation_needs_a_std_parameter():
    with pytest.raises(ValueError, match="extra observation 'std'"):
        InventoryEnv(InstanceConfig(extra_observations=("std",)))


@requires_cuda
def test_env_runs_on_cuda():
    env = InventoryEnv(SMALL, device="cuda", seed=0)
    obs, _ = env.reset()
    out = run(env, base_stock(12.0), env.num_epochs)
    assert obs.is_cuda and out[-1][1].is_cuda and out[-1][2].all()
    assert math.isfinite(env.last_metrics.average_cost.mean().item())


def test_registered_demand_kind_reaches_configs_and_references():
    with restored(demand_lib.DEMAND_KINDS):
        @demand_lib.register("fixed")
        @dataclass
        class Fixed(demand_lib.DemandProcess):
            """``level`` units every day."""

            params = {"level": checks.per_sku(checks.number(0, 100))}
            iid = True
            level: float
            num_skus: int = 1
            device: str = "cpu"

            def sample(self, days, *, generator, paths=1):
                return torch.full((self.num_skus, paths, days), float(self.level),
                                  dtype=torch.float64)

        config = InstanceConfig(num_skus=3, horizon=20, demand={"kind": "fixed", "level": 4.0})
        assert isinstance(config.demand_process("cpu"), Fixed)
        assert compare.identical_skus(config)  # iid: a long-run test on 1024 copies
        assert compare.held_out_instance(config).num_skus == 1024
        env = InventoryEnv(config, seed=0)
        assert torch.all(env.sample_episode().demand == 4)
        with pytest.raises(ValueError, match=re.escape("demand.level must be a finite number in "
                                                       "[0, 100], got -1.0")):
            InstanceConfig(demand={"kind": "fixed", "level": -1.0})
        with pytest.raises(ValueError, match="needs \\['level'\\]"):
            InstanceConfig(demand={"kind": "fixed"})
        with pytest.raises(ValueError, match="'fixed'"):  # unknown kinds list the registered
            InstanceConfig(demand={"kind": "nowhere"})
    with pytest.raises(ValueError, match="demand must be a dict with 'kind' in"):
        InstanceConfig(demand={"kind": "fixed", "level": 4.0})


def test_registered_instance_family():
    with restored(instances.FAMILIES):
        @instances.register("fixed_lead")
        def fixed_lead(params):
            lead = params.pop("L", None)
            if lead not in (0, 1, 2):
                raise ValueError("fixed_lead needs L in 0..2")
            return dict(lead_time=lead, horizon=40, lost_sales=False)

        config = InstanceConfig.from_name("fixed_lead:L=2,num_skus=3")
        assert (config.lead_time, config.horizon, config.num_skus) == (2, 40, 3)
        with pytest.raises(ValueError, match=re.escape("instance 'fixed_lead:L=5': fixed_lead "
                                                       "needs L in 0..2")):
            InstanceConfig.from_name("fixed_lead:L=5")
        with pytest.raises(ValueError, match=re.escape(
                "use one of 'zipkin:...', 'paper:...', 'sales:...', 'fixed_lead:...', or a "
                "config file")):
            InstanceConfig.from_name("nowhere:x=1")
        with pytest.raises(ValueError, match="'zipkin' is registered already"):
            instances.register("zipkin")(fixed_lead)
    with pytest.raises(ValueError, match="unknown instance family 'fixed_lead'"):
        InstanceConfig.from_name("fixed_lead:L=2")
