"""The gymnasium and torchrl adapters pass their libraries' checkers and replay the native env."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepstock_fast.envs import InventoryEnv
from deepstock_fast.metrics import Metrics

NAME = "zipkin:L=2,p=9,max_order=40,horizon=20,warmup=4,num_skus=8"


def native_rewards(seed, orders):
    env = InventoryEnv(NAME, seed=seed)
    env.reset()
    return np.stack([env.step(torch.as_tensor(o, dtype=torch.float32))[1].numpy()
                     for o in orders])


def orders(steps, seed=0):
    return np.random.default_rng(seed).uniform(0, 15, (steps, 8)).astype(np.float32)


# ---- gymnasium -------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::UserWarning")  # the checker's advice on unbounded Box spaces
def test_gymnasium_single_env_passes_the_env_checker():
    pytest.importorskip("gymnasium")
    from gymnasium.utils.env_checker import check_env

    from deepstock_fast.envs.gymnasium_env import GymnasiumEnv

    env = GymnasiumEnv(NAME.replace("num_skus=8", "num_skus=1"), seed=0)
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=1)
    done, steps = False, 0
    while not done:
        obs, reward, terminated, done, info = env.step(env.action_space.sample())
        assert obs in env.observation_space and reward <= 0 and not terminated
        steps += 1
    assert steps == 20
    with pytest.raises(ValueError, match="num_skus = 8"):
        GymnasiumEnv(NAME, seed=0)


def test_gymnasium_vector_env_spaces_autoreset_and_replay():
    pytest.importorskip("gymnasium")
    from gymnasium.vector import AutoresetMode

    from deepstock_fast.envs.gymnasium_env import GymnasiumVectorEnv

    env = GymnasiumVectorEnv(NAME, seed=3)
    assert env.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    obs, _ = env.reset(seed=3)
    assert obs.shape == (8, env.single_observation_space.shape[0]) and obs in env.observation_space
    actions = orders(25)
    rewards = []
    for t, a in enumerate(actions):
        obs, reward, terminated, truncated, info = env.step(a[:, None])
        assert obs in env.observation_space and not terminated.any()
        assert truncated.all() == (t == 19) and ("final_obs" in info) == (t == 19)
        rewards.append(reward)
    np.testing.assert_allclose(np.stack(rewards), native_rewards(3, actions), rtol=1e-6)
    with pytest.raises(ValueError, match="finite max_order"):
        GymnasiumVectorEnv("zipkin:L=2,p=9", seed=0)


# ---- torchrl -----------------------------------------------------------------------------------
def test_torchrl_env_passes_check_env_specs_and_replays():
    pytest.importorskip("torchrl")
    from tensordict import TensorDict
    from torchrl.envs.utils import check_env_specs

    from deepstock_fast.envs.torchrl_env import TorchRLEnv

    env = TorchRLEnv(NAME, seed=0)
    check_env_specs(env)
    env.set_seed(5)
    td = env.reset()
    actions = orders(25, seed=1)
    rewards, done_at = [], []
    for t, a in enumerate(actions):
        td["action"] = torch.as_tensor(a).unsqueeze(1)
        td = env.step(td)
        rewards.append(td["next", "reward"].squeeze(1).numpy())
        if td["next", "done"].all():
            done_at.append(t)
        td = env.step_mdp(td) if not td["next", "done"].any() else env.reset()
        assert isinstance(td, TensorDict)
    assert done_at == [19]
    np.testing.assert_allclose(np.stack(rewards), native_rewards(5, actions), rtol=1e-6)
    with pytest.raises(NotImplementedError, match="partial reset"):
        env.reset(TensorDict({"_reset": torch.tensor([True] + [False] * 7).unsqueeze(1)},
                             batch_size=[8]))


def test_torchrl_env_refuses_an_instance_without_max_order():
    pytest.importorskip("torchrl")
    from deepstock_fast.envs.torchrl_env import TorchRLEnv

    with pytest.raises(ValueError, match=r"finite max_order.*'zipkin:L=2,p=9,max_order=40'"):
        TorchRLEnv("zipkin:L=2,p=9,num_skus=4", seed=0)


# ---- gymnasium conventions ---------------------------------------------------------------------
FINITE = "paper:setting=1,num_skus=8"   # finite_horizon: episodes end as terminated (15 steps)
LONG_RUN = NAME                         # the horizon truncates a long-run problem (20 steps)


def info_layout(info):
    """Keys, types, dtypes and shapes of a vector info dict (values left out)."""
    out = {}
    for key, value in info.items():
        if isinstance(value, dict):
            out[key] = info_layout(value)
        elif value.dtype == object:
            out[key] = ("object", value.shape, [np.asarray(v).dtype.str for v in value])
        else:
            out[key] = (value.dtype.str, value.shape)
    return out


def run_to_horizon(env, actions):
    env.reset(seed=4)
    for t, a in enumerate(actions):
        obs, reward, terminated, truncated, info = env.step(a)
        if (terminated | truncated).any():
            return t, obs, info
    raise AssertionError("the episode did not end")


def test_gymnasium_vector_env_final_info_is_laid_out_as_sync_vector_envs():
    pytest.importorskip("gymnasium")
    from gymnasium.vector import AutoresetMode, SyncVectorEnv

    from deepstock_fast.envs.gymnasium_env import GymnasiumEnv, GymnasiumVectorEnv

    actions = orders(25)[:, :2, None]
    single = NAME.replace("num_skus=8", "num_skus=1")
    sync = SyncVectorEnv([lambda: GymnasiumEnv(single, seed=0)] * 2,
                         autoreset_mode=AutoresetMode.SAME_STEP)
    ours = GymnasiumVectorEnv(NAME.replace("num_skus=8", "num_skus=2"), seed=0)
    (t_sync, _, sync_info), (t, obs, info) = run_to_horizon(sync, actions), run_to_horizon(ours,
                                                                                          actions)
    assert t == t_sync == 19
    assert info_layout(info) == info_layout(sync_info)
    assert set(info) == {"final_obs", "_final_obs", "final_info", "_final_info"}
    assert set(info["final_info"]["episode"]) == {
        *Metrics._fields, *(f"_{f}" for f in Metrics._fields)}
    # the values are the native env's: final obs and per-SKU metrics of the finished episode
    native = InventoryEnv(NAME.replace("num_skus=8", "num_skus=2"), seed=4)
    native.reset()
    for a in actions[:20]:
        native_obs, _, _, _, native_info = native.step(torch.as_tensor(a[:, 0]))
    np.testing.assert_allclose(np.stack(info["final_obs"]), native_info["final_obs"].numpy())
    np.testing.assert_allclose(obs, native_obs.numpy())
    for name, value in native_info["episode"]._asdict().items():
        np.testing.assert_allclose(info["final_info"]["episode"][name], value.numpy())
        assert info["final_info"]["episode"][f"_{name}"].all()
    # before the horizon: the step's infos with their masks, no final_*
    ours.reset()
    assert set(ours.step(actions[0])[4]) == {"cost", "_cost", "stats", "_stats"}


def test_gymnasium_vector_env_reset_seeds_and_options():
    pytest.importorskip("gymnasium")
    from deepstock_fast.envs.gymnasium_env import GymnasiumVectorEnv

    env = GymnasiumVectorEnv(NAME, seed=0)

    def first(**reset):  # the first step's rewards after reset(**reset)
        env.reset(**reset)
        return env.step(orders(1)[0])[1]

    np.testing.assert_array_equal(first(seed=7), native_rewards(7, orders(1))[0])
    # gymnasium reads seed=7 as the per-environment seeds [7, 8, ...]: the same episodes
    np.testing.assert_array_equal(first(seed=list(range(7, 15))), first(seed=7))
    other = [3, 1, 4, 1, 5, 9, 2, 6]
    np.testing.assert_array_equal(first(seed=other), first(seed=other))
    assert not np.array_equal(first(seed=other), first(seed=7))
    with pytest.raises(ValueError, match="num_envs = 8, got 3"):
        env.reset(seed=[1, 2, 3])
    with pytest.raises(ValueError, match="non-negative ints only"):
        env.reset(seed=[1, None] * 4)
    # gymnasium's partial reset: all SKUs share one horizon, so only a full mask is accepted
    obs, info = env.reset(seed=7, options={"reset_mask": np.ones(8, dtype=bool)})
    np.testing.assert_array_equal(obs, env.reset(seed=7)[0])
    with pytest.raises(ValueError, match=r"reset_mask.*share one horizon"):
        env.reset(options={"reset_mask": np.array([True] * 4 + [False] * 4)})
    with pytest.raises(ValueError, match=r"reset_mask.*share one horizon"):
        env.reset(options={"reset_mask": np.zeros(8, dtype=bool)})
    with pytest.raises(ValueError, match=r"reset_mask.*shape \(8,\)"):
        env.reset(options={"reset_mask": np.ones(3, dtype=bool)})
    with pytest.raises(ValueError, match=r"unknown reset options \['horizon'\]"):
        env.reset(options={"horizon": 10})


def test_gymnasium_single_env_refuses_options_and_reports_the_episode():
    pytest.importorskip("gymnasium")
    from deepstock_fast.envs.gymnasium_env import GymnasiumEnv

    env = GymnasiumEnv(NAME.replace("num_skus=8", "num_skus=1"), seed=0)
    with pytest.raises(ValueError, match=r"unknown reset options \['reset_mask'\]"):
        env.reset(options={"reset_mask": np.ones(1, dtype=bool)})
    env.reset(seed=2, options={})
    infos = [env.step(np.array([5.0], dtype=np.float32))[4] for _ in range(20)]
    assert all("episode" not in i for i in infos[:-1])
    assert set(infos[-1]["episode"]) == set(Metrics._fields)
    assert 0 <= infos[-1]["episode"]["fill_rate"] <= 1


@pytest.mark.filterwarnings("ignore::UserWarning")  # the checker's advice on unbounded Box spaces
def test_gymnasium_make_and_make_vec_build_registered_instances():
    gymnasium = pytest.importorskip("gymnasium")
    from gymnasium.utils.env_checker import check_env

    from deepstock_fast.envs.gymnasium_env import (DEFAULT_MAX_ORDER, GymnasiumEnv,
                                                   GymnasiumVectorEnv)

    env = gymnasium.make("deepstock/Inventory-v0", instance="zipkin:L=2,p=9", seed=0)
    assert isinstance(env.unwrapped, GymnasiumEnv)
    assert env.unwrapped.env.config.lead_time == 2 and env.unwrapped.env.num_envs == 1
    assert env.action_space.high[0] == DEFAULT_MAX_ORDER
    check_env(env.unwrapped, skip_render_check=True)
    env.reset(seed=0)
    assert env.step(env.action_space.sample())[0] in env.observation_space
    capped = gymnasium.make("deepstock/Inventory-v0", instance="paper:setting=4")
    assert capped.action_space.high[0] == 300  # the instance's own cap wins
    with pytest.raises(ValueError, match="finite max_order"):
        gymnasium.make("deepstock/Inventory-v0", instance="zipkin:L=2,p=9",
                       default_max_order=None)

    vec = gymnasium.make_vec("deepstock/Inventory-v0", num_envs=5, instance="paper:setting=1",
                             seed=0)
    assert isinstance(vec, GymnasiumVectorEnv) and vec.num_envs == 5
    obs, _ = vec.reset(seed=1)
    assert obs.shape == (5, vec.single_observation_space.shape[0])
    assert vec.step(vec.action_space.sample())[0] in vec.observation_space


@pytest.mark.parametrize("name, steps, finite", [(FINITE, 15, True), (LONG_RUN, 20, False)])
def test_adapters_end_finite_episodes_as_terminated_and_long_runs_as_truncated(name, steps,
                                                                              finite):
    pytest.importorskip("gymnasium")
    pytest.importorskip("torchrl")
    from deepstock_fast.envs.gymnasium_env import GymnasiumEnv, GymnasiumVectorEnv
    from deepstock_fast.envs.torchrl_env import TorchRLEnv

    vec = GymnasiumVectorEnv(name, seed=0)
    vec.reset(seed=0)
    for t in range(steps):
        _, _, terminated, truncated, _ = vec.step(orders(1)[0])
        last = t == steps - 1
        assert terminated.tolist() == [last and finite] * 8
        assert truncated.tolist() == [last and not finite] * 8

    single = GymnasiumEnv(name.replace("num_skus=8", "num_skus=1"), seed=0)
    single.reset(seed=0)
    for t in range(steps):
        _, _, terminated, truncated, _ = single.step(np.array([5.0], dtype=np.float32))
        last = t == steps - 1
        assert (terminated, truncated) == (last and finite, last and not finite)

    env = TorchRLEnv(name, seed=0)
    td = env.reset()
    for t in range(steps):
        td["action"] = torch.full((8, 1), 5.0)
        td = env.step(td)
        last = t == steps - 1
        flags = {k: td["next", k].squeeze(1).tolist() for k in ("terminated", "truncated", "done")}
        assert flags == {"terminated": [last and finite] * 8,
                         "truncated": [last and not finite] * 8, "done": [last] * 8}
        td = env.step_mdp(td)
