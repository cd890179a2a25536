"""Training sets: ``demand["trajectories"] = n`` fixes n training trajectories, drawn once;
validation and test draw fresh ones (the paper's protocol: train / validation / test sets)."""

import pytest
import torch

from deepstock_fast import compare
from deepstock_fast.envs import InstanceConfig, InventoryEnv


def rows_of(demand: torch.Tensor) -> set:
    return {tuple(r) for r in demand.tolist()}


@pytest.mark.parametrize("setting", [1, 2, 4])
def test_every_env_of_a_training_set_replays_its_trajectories(setting):
    c = InstanceConfig.from_name(f"paper:setting={setting},trajectories=6")
    full = InventoryEnv(c, seed=0).sample_episode()
    assert full.demand.shape[0] == 6 and len(rows_of(full.demand)) == 6
    # another env seed, the same set, in order, every episode
    again = InventoryEnv(c, seed=123)
    for _ in range(2):
        e = again.sample_episode()
        assert torch.equal(e.demand, full.demand) and torch.equal(e.exogenous_obs,
                                                                  full.exogenous_obs)
    # a smaller batch draws subsets of it, different ones from episode to episode
    small = InventoryEnv(c.replace(num_skus=3), seed=1)
    draws = [small.sample_episode() for _ in range(6)]
    assert all(rows_of(d.demand) <= rows_of(full.demand) for d in draws)
    assert len({frozenset(rows_of(d.demand)) for d in draws}) > 1
    # a larger one cycles through it
    big = InventoryEnv(c.replace(num_skus=13), seed=2).sample_episode()
    assert rows_of(big.demand) == rows_of(full.demand)
    # another dataset seed, another set
    other = InventoryEnv(InstanceConfig.from_name(
        f"paper:setting={setting},trajectories=6,dataset_seed=1"), seed=0).sample_episode()
    assert not rows_of(other.demand) & rows_of(full.demand)


@pytest.mark.parametrize("setting", [2, 4])
def test_validation_and_test_draw_fresh_trajectories_with_their_own_parameters(setting):
    c = InstanceConfig.from_name(f"paper:setting={setting},trajectories=10")
    train = InventoryEnv(c, seed=0).sample_episode()
    valid, test = c.for_period("validation"), compare.held_out_instance(c)
    assert valid.dataset_size is None and test.dataset_size is None
    assert test.num_skus == compare.TEST_TRAJECTORIES
    assert c.for_period("train") is c
    processes = [x.demand_process("cpu") for x in (c.dataset_instance(), valid, test)]
    name = "phi" if setting != 4 else "std"
    params = [set(getattr(p, name).tolist()) for p in processes]
    assert not params[0] & params[1] and not params[0] & params[2] and not params[1] & params[2]
    for other in (valid, test):
        assert not rows_of(InventoryEnv(other, seed=0).sample_episode().demand) & \
            rows_of(train.demand)


def test_setting_1_keeps_its_days_distributions_across_the_sets():
    c = InstanceConfig.from_name("paper:setting=1,trajectories=10")
    lows = [x.demand_process("cpu").lows for x in (c.dataset_instance(), c.for_period("test"))]
    assert torch.equal(lows[0], lows[1])  # the instance; only the draws differ


def test_references_of_a_training_set_are_searched_on_it_alone():
    c = InstanceConfig.from_name("paper:setting=2,trajectories=20")
    rows = [compare.reference_rows(c, compare.held_out_instance(c, skus=skus), seed=0)
            for skus in (200, 300)]
    notes = [r["note"] for r in rows[0]]
    assert any("the 20 training trajectories" in n for n in notes)
    # the same level whatever the test set holds
    assert [n.split("(")[1] for n in notes] == [r["note"].split("(")[1] for r in rows[1]]


@pytest.mark.parametrize("spec, message", [
    ("paper:setting=2,trajectories=0", "demand.trajectories"),
    ("paper:setting=2,trajectories=2.5", "demand.trajectories"),
    ("paper:setting=2,dataset_seed=-1", "demand.dataset_seed"),
])
def test_bad_training_sets_are_refused_by_name(spec, message):
    with pytest.raises(ValueError, match=message):
        InstanceConfig.from_name(spec)


def test_a_training_set_needs_one_value_per_cost():
    c = InstanceConfig.from_name("paper:setting=2,num_skus=2")
    with pytest.raises(ValueError, match="trajectories"):
        c.replace(holding_cost=[0.1, 0.2], demand=dict(c.demand, trajectories=5))


def test_a_catalog_takes_no_training_set():
    with pytest.raises(ValueError, match="unknown \\['trajectories'\\]"):
        InstanceConfig(demand={"kind": "replay", "history": [[1.0] * 200], "trajectories": 2},
                       horizon=10)


def test_paper_settings_without_forecasts_observe_no_future_demand():
    with_forecasts = InstanceConfig.from_name("paper:setting=2,trajectories=5")
    without = InstanceConfig.from_name("paper:setting=2,trajectories=5,forecasts=false")
    assert {"forecast_7", "forecast_28"} <= set(with_forecasts.features)
    assert not any(f.startswith("forecast") for f in without.features)
    # observed: the state, the trailing means, the constant and yesterday's demand
    env = InventoryEnv(without, seed=0)
    episode = env.sample_episode()
    assert "yesterday" in env.obs_names and episode.exogenous_obs.shape[2] == \
        len(without.features) + 1
    with pytest.raises(ValueError, match="forecasts"):
        InstanceConfig.from_name("paper:setting=2,forecasts=3")
