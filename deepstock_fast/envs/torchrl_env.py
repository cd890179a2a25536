"""torchrl adapter (optional extra: ``pip install deepstock_fast[torchrl]``).

:class:`TorchRLEnv` is a batched ``torchrl.envs.EnvBase`` (batch size [B]) with keys
``observation`` [B, obs_size], ``action`` [B, 1] (the order, in [0, max_order]), ``reward``
[B, 1], ``done``/``terminated``/``truncated`` [B, 1]. Every SKU's episode ends at the horizon at
the same time (terminated for a ``finite_horizon`` instance, truncated otherwise); the following
``reset`` starts the next episode (which the inner :class:`InventoryEnv` has already drawn, so the
demand stream is the same as the native env's).

The instance needs a finite ``max_order``: torchrl's random rollouts (``rand_action``,
``check_env_specs``) draw actions uniformly from the ``Bounded`` action spec, which an infinite
bound would turn into infinite orders.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Bounded, Categorical, Composite, Unbounded
from torchrl.envs import EnvBase

from .config import InstanceConfig
from .env import InventoryEnv


class TorchRLEnv(EnvBase):
    def __init__(self, config: InstanceConfig | dict | str, device="cpu", seed: int | None = None):
        env = InventoryEnv(config, device=device, seed=seed)
        if env.max_order is None:
            raise ValueError("TorchRLEnv needs a finite max_order in the instance config for its "
                             "bounded action spec (e.g. 'zipkin:L=2,p=9,max_order=40', or "
                             "InstanceConfig(..., max_order=40.0))")
        B = env.num_envs
        super().__init__(device=env.device, batch_size=torch.Size([B]))
        self.env = env
        self._next_obs = None  # the next episode's first obs, once the inner env auto-reset
        self._seed = None      # applied by the next reset
        self.observation_spec = Composite(
            observation=Unbounded(shape=(B, env.obs_size), dtype=env.dtype, device=env.device),
            shape=(B,))
        self.action_spec = Bounded(low=0.0, high=env.max_order, shape=(B, 1), dtype=env.dtype,
                                   device=env.device)
        self.reward_spec = Unbounded(shape=(B, 1), dtype=env.dtype, device=env.device)
        flag = dict(n=2, shape=(B, 1), dtype=torch.bool, device=env.device)
        self.done_spec = Composite(done=Categorical(**flag), terminated=Categorical(**flag),
                                   truncated=Categorical(**flag), shape=(B,))

    def _flags(self, terminated: torch.Tensor, truncated: torch.Tensor) -> dict:
        terminated, truncated = terminated.view(-1, 1), truncated.view(-1, 1)
        return {"done": terminated | truncated, "terminated": terminated.clone(),
                "truncated": truncated.clone()}

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        if tensordict is not None and "_reset" in tensordict.keys():
            mask = tensordict["_reset"]
            if not (mask.all() or not mask.any()):
                raise NotImplementedError("all SKUs of a TorchRLEnv share one horizon; a partial "
                                          "reset of some of them is not supported")
        if self._next_obs is None or self._seed is not None:
            obs, _ = self.env.reset(seed=self._seed)
        else:
            obs = self._next_obs
        self._next_obs = self._seed = None
        false = torch.zeros(self.env.num_envs, dtype=torch.bool, device=self.env.device)
        return TensorDict({"observation": obs, **self._flags(false, false)},
                          batch_size=self.batch_size, device=self.device)

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        order = tensordict["action"].reshape(self.env.num_envs).clamp(min=0)
        obs, reward, terminated, truncated, info = self.env.step(order)
        if "final_obs" in info:  # the inner env has started the next episode: keep it for reset
            self._next_obs, obs = obs, info["final_obs"]
        return TensorDict({"observation": obs, "reward": reward.unsqueeze(1),
                           **self._flags(terminated, truncated)}, batch_size=self.batch_size,
                          device=self.device)

    def _set_seed(self, seed: int | None):
        self._seed = seed
        return seed
