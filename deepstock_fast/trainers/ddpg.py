"""DDPG on the batched environment, with the policy regularizations (docs/METHOD.md: the method
deployed at Tmall, with Base/Coeff).

The actor is the same :class:`~deepstock_fast.policies.Policy` as DS and PPO. Its action in the
RL sense is the pre-projection output (``raw``); the projection to an order is part of the
environment, so the critic Q(obs, raw) always passes a gradient to the actor, also where the
projection clamps. Every environment step adds ``num_envs`` transitions to a replay buffer that
lives on the device; every ``train_freq`` steps the critic and actor take ``gradient_steps``
updates on minibatches, with target networks updated softly (``tau``). The first
``critic_warmup`` updates train the critic alone: the actor starts from a sensible policy (the
head's initial output) and following an untrained critic would destroy it (with a lead time,
today's reward does not depend on today's order). At the horizon the target bootstraps from
the final observation when the episode is truncated (a long-run problem cut short) and not when
it terminates (a ``finite_horizon`` instance, whose warm-up days' costs are not counted). Optional Gaussian exploration noise on ``raw`` (the paper ran without). Learning rates
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

from .. import seeding
from ..envs import InstanceConfig
from ..policies import Policy, PolicyConfig, default_bounds, mlp
from . import TRAINERS, register
from .population import choose_threads, torch_threads
from .common import (DISCOUNT, NON_NEGATIVE, SEEDS, Range, RunResult, Scalars, check_fields,
                     objective_reward, reward_scale, run_loop, setup)


@dataclass
class DDPGConfig:
    """Hyperparameters; defaults inside the paper's DDPG search space (64x64 networks, no
    exploration noise) except where batching changes their meaning: one step adds ``num_envs``
    transitions, so ``learning_starts`` is larger and each step takes ``gradient_steps`` updates
    (16 updates of 256 samples per 64 stored transitions: 64 sampled per stored transition,
    and 0.25 updates per transition where SB3 makes 1)."""

    total_steps: int = 300_000        # environment transitions (SKU-periods; docs/BENCHMARKS.md)
    num_envs: int = 64
    lr: float = 1e-3
    lr_final: float = 1e-4            # linear decay target
    tau: float = 1e-3                 # the paper's lowest: larger ones oscillated
    gamma: float = 0.99
    batch_size: int = 256
    buffer_size: int = 100_000        # transitions
    learning_starts: int = 5000       # transitions before the first update
    train_freq: int = 1               # environment steps between updates
    gradient_steps: int = 16          # updates each time
    critic_warmup: int = 3000         # updates of the critic alone before the actor's first
    exploration_noise: float = 0.0    # std of Gaussian noise on raw, in raw units
    warmup_noise: float = 0.0         # the same, while the actor waits for the critic's warm-up
    critic_hidden: tuple[int, ...] = (64, 64)
    eval_every: int = 100             # environment steps between validations
    patience: int = 10
    validation_skus: int = 512
    checkpoint_every: int = 100
    time_budget: float | None = None
    seed: int = 0

    def __post_init__(self):
        check_fields(self, lr_final=NON_NEGATIVE, tau=DISCOUNT, gamma=DISCOUNT,
                     learning_starts=Range(0), critic_warmup=Range(0),
                     exploration_noise=NON_NEGATIVE, warmup_noise=NON_NEGATIVE, seed=SEEDS)

    @property
    def iterations(self) -> int:
        return max(1, self.total_steps // self.num_envs)


class ReplayBuffer(nn.Module):
    """A ring buffer of transitions (obs, raw, reward, next_obs, terminal) on the device; its contents and
    position are buffers, so a checkpoint keeps them."""

    def __init__(self, capacity: int, obs_size: int, action_size: int, device):
        super().__init__()
        f = dict(device=device, dtype=torch.float32)
        self.register_buffer("obs", torch.zeros(capacity, obs_size, **f))
        self.register_buffer("raw", torch.zeros(capacity, action_size, **f))
        self.register_buffer("reward", torch.zeros(capacity, **f))
        self.register_buffer("next_obs", torch.zeros(capacity, obs_size, **f))
        self.register_buffer("terminal", torch.zeros(capacity, **f))  # 1: nothing after it
        self.register_buffer("position", torch.zeros((), dtype=torch.int64))
        self.register_buffer("size", torch.zeros((), dtype=torch.int64))
        self.capacity = capacity

    # Positions stay on the device: adding and sampling never wait for the host.
    def add(self, obs, raw, reward, next_obs, terminal) -> None:
        n = obs.shape[0]
        idx = (torch.arange(n, device=obs.device) + self.position) % self.capacity
        self.obs[idx], self.raw[idx] = obs.float(), raw.float()
        self.reward[idx], self.next_obs[idx] = reward.float(), next_obs.float()
        self.terminal[idx] = terminal.float()
        self.position.copy_((self.position + n) % self.capacity)
        self.size.copy_((self.size + n).clamp(max=self.capacity))

    def sample(self, batch: int, generator: torch.Generator):
        """``batch`` stored transitions, uniformly with replacement (the buffer is not empty)."""
        u = torch.rand(batch, generator=generator, dtype=torch.float64, device=self.obs.device)
        idx = torch.minimum((u * self.size).long(), self.size - 1)
        return (self.obs[idx], self.raw[idx], self.reward[idx], self.next_obs[idx],
                self.terminal[idx])


@register("ddpg", DDPGConfig, hidden=(64, 64))
def train_ddpg(instance: InstanceConfig | str, policy_config: PolicyConfig | None = None,
               config: DDPGConfig | None = None, *, device: str | torch.device = "cpu",
               out_dir: str | pathlib.Path | None = None, resume: bool = False,
               progress: bool = True, label: str = "DDPG",
               callbacks=(), threads: int | None = None) -> tuple[Policy, RunResult]:
    """Trains a regularized policy with DDPG; returns (the best policy, the run's record).
    ``threads``: torch threads (None: from the SKUs stepped together,
    :func:`~.population.choose_threads`). Populations (lists of configurations) are DS's and
    PPO's only so far."""
    if isinstance(policy_config, (list, tuple)) or isinstance(config, (list, tuple)):
        raise ValueError("population training (lists of configurations) is implemented for "
                         "DS and PPO only so far; train DDPG configurations one at a time")
    if isinstance(instance, str):
        instance = InstanceConfig.from_name(instance)
    policy_config = policy_config or PolicyConfig(hidden=TRAINERS["ddpg"].hidden)
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
    extra.scalars = Scalars(reward_scale=reward_scale(instance, config.seed, device)).to(device)
    actor_opt = torch.optim.Adam(actor.parameters(), lr=config.lr)
    critic_opt = torch.optim.Adam(extra.critic.parameters(), lr=config.lr)
    reward_unit = float(extra.scalars.reward_scale) / (1 - config.gamma + 1e-3)
    sampler = seeding.generator(config.seed, "minibatch", env.device)
    noise = seeding.generator(config.seed, "exploration", env.device)
    # the first step (counted from 1) after which updates run: learning_starts transitions stored
    first_update_step = max(1, -(-config.learning_starts // config.num_envs))

    def updates_before(i: int) -> int:
        """update() calls in steps 0 .. i - 1 (a function of i, so resumes need no counter)."""
        f = config.train_freq
        return config.gradient_steps * max(0, i // f - (first_update_step - 1) // f)

    def q(critic, obs, raw):
        x = (obs - actor.obs_mean) / actor.obs_std
        return critic(torch.cat([x, raw], 1)).squeeze(1)

    # Losses are checked on the device; run_loop reads the flag back only before a validation
    # or a checkpoint.
    finite = torch.ones((), dtype=torch.bool, device=env.device)

    def update(train_actor: bool) -> None:
        obs, raw, reward, next_obs, terminal = extra.buffer.sample(config.batch_size, sampler)
        with torch.no_grad():
            target = reward + config.gamma * (1 - terminal) * q(
                extra.target_critic, next_obs, extra.target_actor.raw(next_obs))
        critic_loss = (q(extra.critic, obs, raw) - target).pow(2).mean()
        critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        critic_opt.step()
        finite.logical_and_(torch.isfinite(critic_loss.detach()))
        nets = [(extra.critic, extra.target_critic)]
        if train_actor:
            actor_loss = -q(extra.critic, obs, actor.raw(obs)).mean()
            finite.logical_and_(torch.isfinite(actor_loss.detach()))
            actor_opt.zero_grad(set_to_none=True)
            actor_loss.backward(inputs=list(actor.parameters()))
            actor_opt.step()
            nets.append((actor, extra.target_actor))
        with torch.no_grad():
            for net, target_net in nets:
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
            std = (config.warmup_noise if updates_before(i) < config.critic_warmup
                   else config.exploration_noise)
            if std > 0:
                raw = raw + std * torch.randn(raw.shape, generator=noise, device=raw.device)
            _, reward, terminated, _, info = env.step(actor.project(raw, state))
        next_obs = info.get("final_obs", env.state().obs)
        # rewards in units of (mean cost per period) / (1 - gamma): Q-values are O(1)
        reward = objective_reward(env, reward, state.day)
        extra.buffer.add(state.obs, raw, reward / reward_unit, next_obs, terminated)
        if i + 1 >= first_update_step and (i + 1) % config.train_freq == 0:
            done_updates = updates_before(i)
            for k in range(config.gradient_steps):
                update(train_actor=done_updates + k >= config.critic_warmup)
        return -reward.mean()

    with torch_threads(choose_threads(config.num_envs) if threads is None else threads):
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
            out_dir=out_dir, resume=resume, progress=progress, callbacks=callbacks, unit="step",
            healthy=lambda: bool(finite))
    return actor, result
