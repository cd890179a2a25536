"""DDPG on the batched environment, with the policy regularizations (PAPER.md: the method
deployed at Tmall, with Base/Coeff).

The actor is the same :class:`~deepstock_fast.policies.Policy` as DS and PPO. Its action in the
RL sense is the pre-projection output (``raw``); the projection to an order is part of the
environment, so the critic Q(obs, raw) always passes a gradient to the actor, also where the
projection clamps. Every environment step adds ``num_envs`` transitions to a replay buffer that
lives on the device; every ``train_freq`` steps the critic and actor take ``gradient_steps``
updates on minibatches, with target networks updated softly (``tau``). Episodes end by
truncation at the horizon, so the target always bootstraps (from the final observation at the
horizon). Optional Gaussian exploration noise on ``raw`` (the paper ran without). Learning rates
decay linearly to ``lr_final``. Validation, early stopping, checkpoints (the buffer included),
resume and divergence handling are those of :func:`~deepstock_fast.trainers.common.run_loop`.
"""

from __future__ import annotations

import copy
import dataclasses
import pathlib
from dataclasses import dataclass

import torch
from torch import nn

from ..envs import InstanceConfig
from ..policies import Policy, PolicyConfig, default_bounds
from .common import (DISCOUNT, NON_NEGATIVE, SEEDS, Range, RunResult, check_fields, run_loop,
                     setup)
from .ppo import Scalars, mlp, reward_scale


@dataclass
class DDPGConfig:
    """Hyperparameters; defaults inside PAPER.md's DDPG search space (64x64 networks, no
    exploration noise) except where batching changes their meaning: one step adds ``num_envs``
    transitions, so ``learning_starts`` is larger and each step takes ``gradient_steps`` updates
    (about one sampled transition per stored one, as SB3's one update per step does)."""

    total_steps: int = 300_000        # environment transitions (SKU-periods); with 200k, one
    # of four Base runs on L = 2, p = 9 / L = 4, p = 39 ended at +2.5% (all within 2% at 300k)
    num_envs: int = 64
    lr: float = 1e-3
    lr_final: float = 1e-4            # linear decay target
    tau: float = 1e-3                 # 5e-3 oscillated on L = 4, p = 39 (+2.7% vs +1.4%)
    gamma: float = 0.99
    batch_size: int = 256
    buffer_size: int = 100_000        # transitions
    learning_starts: int = 5000       # transitions before the first update
    train_freq: int = 1               # environment steps between updates
    gradient_steps: int = 16          # updates each time (16 x 256 samples per 64 transitions)
    exploration_noise: float = 0.0    # std of Gaussian noise on raw, in raw units
    critic_hidden: tuple[int, ...] = (64, 64)
    eval_every: int = 100             # environment steps between validations
    patience: int = 10
    validation_skus: int = 512
    checkpoint_every: int = 100
    time_budget: float | None = None
    seed: int = 0

    def __post_init__(self):
        check_fields(self, lr_final=NON_NEGATIVE, tau=DISCOUNT, gamma=DISCOUNT,
                     learning_starts=Range(0), exploration_noise=NON_NEGATIVE, seed=SEEDS)

    @property
    def iterations(self) -> int:
        return max(1, self.total_steps // self.num_envs)


class ReplayBuffer(nn.Module):
    """A ring buffer of transitions (obs, raw, reward, next_obs) on the device; its contents and
    position are buffers, so a checkpoint keeps them."""

    def __init__(self, capacity: int, obs_size: int, action_size: int, device):
        super().__init__()
        f = dict(device=device, dtype=torch.float32)
        self.register_buffer("obs", torch.zeros(capacity, obs_size, **f))
        self.register_buffer("raw", torch.zeros(capacity, action_size, **f))
        self.register_buffer("reward", torch.zeros(capacity, **f))
        self.register_buffer("next_obs", torch.zeros(capacity, obs_size, **f))
        self.register_buffer("position", torch.zeros((), dtype=torch.int64))
        self.register_buffer("size", torch.zeros((), dtype=torch.int64))
        self.capacity = capacity

    # Positions stay on the device: adding and sampling never wait for the host.
    def add(self, obs, raw, reward, next_obs) -> None:
        n = obs.shape[0]
        idx = (torch.arange(n, device=obs.device) + self.position) % self.capacity
        self.obs[idx], self.raw[idx] = obs.float(), raw.float()
        self.reward[idx], self.next_obs[idx] = reward.float(), next_obs.float()
        self.position.copy_((self.position + n) % self.capacity)
        self.size.copy_((self.size + n).clamp(max=self.capacity))

    def sample(self, batch: int, generator: torch.Generator):
        """``batch`` stored transitions, uniformly with replacement (the buffer is not empty)."""
        u = torch.rand(batch, generator=generator, dtype=torch.float64, device=self.obs.device)
        idx = torch.minimum((u * self.size).long(), self.size - 1)
        return self.obs[idx], self.raw[idx], self.reward[idx], self.next_obs[idx]


def train_ddpg(instance: InstanceConfig | str, policy_config: PolicyConfig | None = None,
               config: DDPGConfig | None = None, *, device: str | torch.device = "cpu",
               out_dir: str | pathlib.Path | None = None, resume: bool = False,
               progress: bool = True, label: str = "DDPG") -> tuple[Policy, RunResult]:
    """Trains a regularized policy with DDPG; returns (the best policy, the run's record)."""
    if isinstance(instance, str):
        instance = InstanceConfig.from_name(instance)
    policy_config = policy_config or PolicyConfig()
    if policy_config.output_bounds is None:  # DDPG needs bounded actions
        policy_config = dataclasses.replace(
            policy_config, output_bounds=default_bounds(policy_config.head, instance))
    config = config or DDPGConfig()
    run = setup(instance, policy_config, train_skus=config.num_envs,
                validation_skus=config.validation_skus, seed=config.seed, device=device,
                reset=True)
    instance, env, actor = run.instance, run.env, run.policy
    k = actor.head.out_features
    extra = nn.Module()
    extra.critic = mlp([env.obs_size + k, *config.critic_hidden, 1],
                       policy_config.activation).to(device)
    extra.target_critic = copy.deepcopy(extra.critic)
    extra.target_actor = copy.deepcopy(actor)
    extra.buffer = ReplayBuffer(config.buffer_size, env.obs_size, k, device)
    extra.scalars = Scalars(reward_scale=reward_scale(env, actor)).to(device)
    actor_opt = torch.optim.Adam(actor.parameters(), lr=config.lr)
    critic_opt = torch.optim.Adam(extra.critic.parameters(), lr=config.lr)
    reward_unit = float(extra.scalars.reward_scale) / (1 - config.gamma + 1e-3)
    sampler = torch.Generator(env.device).manual_seed(config.seed + 31)
    noise = torch.Generator(env.device).manual_seed(config.seed + 37)

    def q(critic, obs, raw):
        x = (obs - actor.obs_mean) / actor.obs_std
        return critic(torch.cat([x, raw], 1)).squeeze(1)

    # Losses are checked on the device; run_loop reads the flag back only before a validation
    # or a checkpoint.
    finite = torch.ones((), dtype=torch.bool, device=env.device)

    def update() -> None:
        obs, raw, reward, next_obs = extra.buffer.sample(config.batch_size, sampler)
        with torch.no_grad():
            target = reward + config.gamma * q(extra.target_critic, next_obs,
                                               extra.target_actor.raw(next_obs))
        critic_loss = (q(extra.critic, obs, raw) - target).pow(2).mean()
        critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        critic_opt.step()
        actor_loss = -q(extra.critic, obs, actor.raw(obs)).mean()
        finite.logical_and_(torch.isfinite(critic_loss.detach())
                            & torch.isfinite(actor_loss.detach()))
        actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward(inputs=list(actor.parameters()))
        actor_opt.step()
        with torch.no_grad():
            for net, target_net in ((extra.critic, extra.target_critic),
                                    (actor, extra.target_actor)):
                for p, tp in zip(net.parameters(), target_net.parameters()):
                    tp.lerp_(p, config.tau)

    def step(i: int) -> float:
        frac = i / config.iterations
        for opt in (actor_opt, critic_opt):
            for group in opt.param_groups:
                group["lr"] = config.lr_final + (config.lr - config.lr_final) * (1 - frac)
        state = env.state()
        with torch.no_grad():
            raw = actor.raw(state.obs)
            if config.exploration_noise > 0:
                raw = raw + config.exploration_noise * torch.randn(
                    raw.shape, generator=noise, device=raw.device)
            _, reward, _, _, info = env.step(actor.project(raw, state))
        next_obs = info.get("final_obs", env.state().obs)  # bootstrap through truncation
        # rewards in units of (mean cost per period) / (1 - gamma): Q-values are O(1)
        extra.buffer.add(state.obs, raw, reward / reward_unit, next_obs)
        stored = (i + 1) * config.num_envs  # transitions added so far
        if stored >= config.learning_starts and (i + 1) % config.train_freq == 0:
            for _ in range(config.gradient_steps):
                update()
        return -reward.mean()

    result = run_loop(
        label=label, total=config.iterations, iterate=step, validate=run.validate,
        eval_every=config.eval_every, patience=config.patience,
        checkpoint_every=config.checkpoint_every, time_budget=config.time_budget,
        policy=actor, stateful={"actor": actor, "extra": extra, "actor_opt": actor_opt,
                                "critic_opt": critic_opt, "env": env},
        generators={"sampler": sampler, "noise": noise},
        identity={"algo": "ddpg", "instance": instance.to_dict(),
                  "config": dataclasses.asdict(config),
                  "policy_config": dataclasses.asdict(actor.config)},
        out_dir=out_dir, resume=resume, progress=progress, unit="step",
        healthy=lambda: bool(finite))
    return actor, result
