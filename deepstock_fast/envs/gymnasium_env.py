"""gymnasium adapters (optional extra: ``pip install deepstock_fast[gymnasium]``).

- :class:`GymnasiumVectorEnv`: a ``gymnasium.vector.VectorEnv`` over all SKUs, NumPy in and out,
  Box spaces, same-step autoreset (``metadata["autoreset_mode"]``), info arrays with their
  ``_key`` masks.
- :class:`GymnasiumEnv`: one SKU as a ``gymnasium.Env`` (passes ``gymnasium.utils.env_checker``),
  for single-environment libraries such as Stable-Baselines3 (wrap it in their vector env).

The action is the order quantity in units, in ``[0, max_order]``; the config needs a finite
``max_order`` so that the action space is bounded.
"""

from __future__ import annotations

import gymnasium
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from .config import InstanceConfig
from .env import InventoryEnv


def _make(config, device, seed) -> InventoryEnv:
    env = InventoryEnv(config, device=device, seed=seed)
    if env.max_order is None:
        raise ValueError("the gymnasium adapters need a finite max_order in the instance config "
                         "(e.g. 'zipkin:L=2,p=9,max_order=40')")
    return env


def _spaces(env: InventoryEnv) -> tuple[spaces.Box, spaces.Box]:
    observation = spaces.Box(-np.inf, np.inf, (env.obs_size,), np.float32)
    action = spaces.Box(0.0, float(env.max_order), (1,), np.float32)
    return observation, action


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


class GymnasiumVectorEnv(gymnasium.vector.VectorEnv):
    """All SKUs of an instance as one gymnasium vector environment (actions [B, 1] or [B])."""

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, config: InstanceConfig | dict | str, device="cpu", seed: int | None = None):
        self.env = _make(config, device, seed)
        self.num_envs = self.env.num_envs
        self.single_observation_space, self.single_action_space = _spaces(self.env)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

    def reset(self, *, seed=None, options=None):
        obs, _ = self.env.reset(seed=seed)
        return _numpy(obs).astype(np.float32), {}

    def step(self, actions):
        actions = np.asarray(actions, dtype=np.float64).reshape(self.num_envs, -1)
        if actions.shape[1] != 1:
            raise ValueError(f"actions must have shape ({self.num_envs}, 1) or ({self.num_envs},)")
        order = torch.as_tensor(actions[:, 0], device=self.env.device).clamp(min=0)
        obs, reward, terminated, truncated, info = self.env.step(order)
        out = {"cost": _numpy(info["cost"]), "stats": _numpy(info["stats"])}
        mask = np.ones(self.num_envs, dtype=bool)
        out["_cost"] = out["_stats"] = mask
        if "final_obs" in info:
            out["final_obs"] = _numpy(info["final_obs"]).astype(np.float32)
            out["_final_obs"] = mask
        return (_numpy(obs).astype(np.float32), _numpy(reward).astype(np.float64),
                _numpy(terminated), _numpy(truncated), out)


class GymnasiumEnv(gymnasium.Env):
    """One SKU (the config's ``num_skus`` must be 1) as a gymnasium environment.

    The episode ends at the horizon (terminated for a ``finite_horizon`` instance, truncated
    otherwise); call ``reset()`` to start the next one.
    """

    metadata = {"render_modes": []}

    def __init__(self, config: InstanceConfig | dict | str, device="cpu", seed: int | None = None):
        self.env = _make(config, device, seed)
        if self.env.num_envs != 1:
            raise ValueError(f"GymnasiumEnv is one SKU; the config has num_skus = "
                             f"{self.env.num_envs} (use GymnasiumVectorEnv)")
        self.observation_space, self.action_space = _spaces(self.env)
        self._next_obs = None  # the next episode's first obs, once the inner env auto-reset

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None or self._next_obs is None:
            obs, _ = self.env.reset(seed=seed)
        else:
            obs = self._next_obs
        self._next_obs = None
        return _numpy(obs[0]).astype(np.float32), {}

    def step(self, action):
        order = torch.as_tensor(np.asarray(action, dtype=np.float64).reshape(1),
                                device=self.env.device).clamp(min=0)
        obs, reward, terminated, truncated, info = self.env.step(order)
        if "final_obs" in info:
            self._next_obs, obs = obs, info["final_obs"]
        return (_numpy(obs[0]).astype(np.float32), float(reward[0]), bool(terminated[0]),
                bool(truncated[0]),
                {"cost": _numpy(info["cost"][0]), "stats": _numpy(info["stats"][0])})
