"""gymnasium adapters (optional extra: ``pip install deepstock_fast[gymnasium]``).

- :class:`GymnasiumVectorEnv`: a ``gymnasium.vector.VectorEnv`` over all SKUs, NumPy in and out,
  Box spaces, same-step autoreset (``metadata["autoreset_mode"]``), info arrays with their
  ``_key`` masks, laid out as gymnasium's own ``SyncVectorEnv`` lays them out in that mode.
- :class:`GymnasiumEnv`: one SKU as a ``gymnasium.Env`` (passes ``gymnasium.utils.env_checker``),
  for single-environment libraries such as Stable-Baselines3 (wrap it in their vector env).

The action is the order quantity in units, in ``[0, max_order]``; the config needs a finite
``max_order`` so that the action space is bounded.

Importing this module registers ``deepstock/Inventory-v0`` (see :func:`make_env` and
:func:`make_vector_env`)::

    gymnasium.make("deepstock/Inventory-v0", instance="zipkin:L=2,p=9")          # one SKU
    gymnasium.make_vec("deepstock/Inventory-v0", num_envs=64, instance="paper:setting=1")
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

ENV_ID = "deepstock/Inventory-v0"
#: The order cap that the registered id gives an instance without one (gymnasium's Box action
#: spaces need bounds): 20 days of the Zipkin instances' mean demand of 5 units.
DEFAULT_MAX_ORDER = 100.0


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


def _refuse_unknown_options(options: dict | None, known: set[str]) -> dict:
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise ValueError(f"options must be a dict or None, got {type(options).__name__}")
    unknown = sorted(map(str, set(options) - known))
    if unknown:
        raise ValueError(f"unknown reset options {unknown}; this environment knows "
                         f"{sorted(known) or 'none'}")
    return options


def _shared_seed(seed, num_envs: int) -> int | None:
    """The one generator seed for ``reset(seed=...)`` of all SKUs (they share a generator).

    ``None``: no reseeding. An int: that seed. A list of ``num_envs`` ints: gymnasium reads an int
    ``s`` as the per-environment seeds ``[s, s + 1, ...]``, so that list gives ``s``; any other
    list gives one seed hashed from the whole list (``numpy.random.SeedSequence``): the same list,
    the same trajectories. A list of only ``None`` means no reseeding."""
    if seed is None or (isinstance(seed, (int, np.integer)) and not isinstance(seed, bool)):
        return None if seed is None else int(seed)
    if not isinstance(seed, (list, tuple, np.ndarray)):
        raise ValueError(f"seed must be None, an int or a list of num_envs = {num_envs} ints, got "
                         f"{type(seed).__name__}")
    seeds = list(seed)
    if len(seeds) != num_envs:
        raise ValueError(f"seed: a list of seeds needs one per SKU, num_envs = {num_envs}, got "
                         f"{len(seeds)}")
    if all(s is None for s in seeds):
        return None
    if not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 0
               for s in seeds):
        raise ValueError("seed: the SKUs share one generator, so a list of seeds must hold "
                         f"non-negative ints only (or only None), got {seeds}")
    seeds = [int(s) for s in seeds]
    if seeds == list(range(seeds[0], seeds[0] + num_envs)):
        return seeds[0]
    return int(np.random.SeedSequence(seeds).generate_state(1, np.uint64)[0])


class GymnasiumVectorEnv(gymnasium.vector.VectorEnv):
    """All SKUs of an instance as one gymnasium vector environment (actions [B, 1] or [B]).

    Every SKU's episode ends at the horizon at once, ``terminated`` for a ``finite_horizon``
    instance and ``truncated`` otherwise, and restarts in the same step
    (``AutoresetMode.SAME_STEP``): the returned obs [B, obs_size] starts the next episode, and
    ``info`` is what gymnasium's ``SyncVectorEnv`` returns in that mode: ``final_obs`` (an object
    array of B obs [obs_size]) and ``final_info`` (the step's infos ``cost`` [B, 3] and ``stats``
    [B, 4] with their masks, and ``episode``: the finished episode's per-SKU
    :class:`~deepstock_fast.metrics.Metrics` fields, each [B]), each with its ``_key`` mask, and
    nothing else (the new episodes' reset infos are empty). Other steps' infos are ``cost`` and
    ``stats`` with their masks.

    ``reset(seed=...)``: None, an int or a list of ``num_envs`` seeds (see :func:`_shared_seed`:
    the SKUs share one generator, so a list becomes one seed). ``options``: only
    ``{"reset_mask": mask}`` (gymnasium's partial reset, a bool array [num_envs]); the SKUs share
    one horizon, so only an all-True mask is accepted (a full reset).
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, config: InstanceConfig | dict | str, device="cpu", seed: int | None = None):
        self.env = _make(config, device, seed)
        self.num_envs = self.env.num_envs
        self.single_observation_space, self.single_action_space = _spaces(self.env)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

    def reset(self, *, seed=None, options=None):
        options = _refuse_unknown_options(options, {"reset_mask"})
        if "reset_mask" in options:
            mask = np.asarray(options["reset_mask"])
            if mask.shape != (self.num_envs,) or mask.dtype != np.bool_:
                raise ValueError(f"options['reset_mask'] must be a bool array of shape "
                                 f"({self.num_envs},), got {mask.dtype} {mask.shape}")
            if not mask.all():
                raise ValueError(
                    "options['reset_mask'] must be all True: the SKUs of an InventoryEnv share "
                    "one horizon (every episode ends and restarts together), so some of them "
                    f"cannot be reset alone; got {int(mask.sum())} of {self.num_envs} True")
        obs, _ = self.env.reset(seed=_shared_seed(seed, self.num_envs))
        return _numpy(obs).astype(np.float32), {}

    def step(self, actions):
        actions = np.asarray(actions, dtype=np.float64).reshape(self.num_envs, -1)
        if actions.shape[1] != 1:
            raise ValueError(f"actions must have shape ({self.num_envs}, 1) or ({self.num_envs},)")
        order = torch.as_tensor(actions[:, 0], device=self.env.device).clamp(min=0)
        obs, reward, terminated, truncated, info = self.env.step(order)
        mask = np.ones(self.num_envs, dtype=bool)
        out = {"cost": _numpy(info["cost"]), "_cost": mask, "stats": _numpy(info["stats"]),
               "_stats": mask.copy()}
        if "final_obs" in info:
            final_obs = np.empty(self.num_envs, dtype=object)
            final_obs[:] = list(_numpy(info["final_obs"]).astype(np.float32))
            episode = {}
            for name, value in info["episode"]._asdict().items():
                episode[name], episode[f"_{name}"] = _numpy(value), mask.copy()
            out = {"final_obs": final_obs, "_final_obs": mask.copy(),
                   "final_info": {**out, "episode": episode, "_episode": mask.copy()},
                   "_final_info": mask.copy()}
        return (_numpy(obs).astype(np.float32), _numpy(reward).astype(np.float64),
                _numpy(terminated), _numpy(truncated), out)


class GymnasiumEnv(gymnasium.Env):
    """One SKU (the config's ``num_skus`` must be 1) as a gymnasium environment.

    The episode ends at the horizon (terminated for a ``finite_horizon`` instance, truncated
    otherwise) with ``info["episode"]``: the finished episode's
    :class:`~deepstock_fast.metrics.Metrics` as a dict of scalars; call ``reset()`` to start the
    next one. ``reset`` takes no options (any key is refused).
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
        _refuse_unknown_options(options, set())
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
        out = {"cost": _numpy(info["cost"][0]), "stats": _numpy(info["stats"][0])}
        if "final_obs" in info:
            self._next_obs, obs = obs, info["final_obs"]
            out["episode"] = {k: _numpy(v)[0] for k, v in info["episode"]._asdict().items()}
        return (_numpy(obs[0]).astype(np.float32), float(reward[0]), bool(terminated[0]),
                bool(truncated[0]), out)


# ---- gymnasium.make / make_vec --------------------------------------------------------------
def _registered_config(instance, num_skus: int, default_max_order: float | None) -> InstanceConfig:
    if isinstance(instance, str):
        instance = InstanceConfig.from_name(instance)
    elif isinstance(instance, dict):
        instance = InstanceConfig.from_dict(instance)
    elif not isinstance(instance, InstanceConfig):
        raise ValueError(f"instance must be a name such as 'zipkin:L=2,p=9', a dict of "
                         f"InstanceConfig fields or an InstanceConfig, got "
                         f"{type(instance).__name__}")
    if instance.max_order is None:
        instance = instance.replace(max_order=default_max_order)
    return instance.replace(num_skus=num_skus)


def make_env(instance: InstanceConfig | dict | str = "zipkin:L=2,p=9", *,
             default_max_order: float | None = DEFAULT_MAX_ORDER, device="cpu",
             seed: int | None = None) -> GymnasiumEnv:
    """``gymnasium.make("deepstock/Inventory-v0", instance=..., ...)``: one SKU of ``instance``
    (any instance name, e.g. ``"zipkin:L=4,p=39"`` or ``"paper:setting=1"``, a dict or an
    :class:`InstanceConfig`; its ``num_skus`` is replaced by 1). An instance without an order cap
    gets ``default_max_order`` (set ``max_order`` in the instance to choose another; None refuses
    an uncapped instance)."""
    return GymnasiumEnv(_registered_config(instance, 1, default_max_order), device, seed)


def make_vector_env(num_envs: int = 1, instance: InstanceConfig | dict | str = "zipkin:L=2,p=9",
                    *, default_max_order: float | None = DEFAULT_MAX_ORDER, device="cpu",
                    seed: int | None = None) -> GymnasiumVectorEnv:
    """``gymnasium.make_vec("deepstock/Inventory-v0", num_envs=B, instance=...)``: B SKUs of
    ``instance`` (its ``num_skus`` is replaced by ``num_envs``) as a :class:`GymnasiumVectorEnv`
    (gymnasium's default ``vector_entry_point`` mode); ``default_max_order`` as in
    :func:`make_env`."""
    return GymnasiumVectorEnv(_registered_config(instance, num_envs, default_max_order), device,
                              seed)


if ENV_ID not in gymnasium.registry:  # a module reload must not re-register (gymnasium warns)
    gymnasium.register(id=ENV_ID, entry_point=f"{__name__}:make_env",
                       vector_entry_point=f"{__name__}:make_vector_env")
