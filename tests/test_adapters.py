"""The gymnasium and torchrl adapters pass their libraries' checkers and replay the native env."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepstock_fast.envs import InventoryEnv

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
