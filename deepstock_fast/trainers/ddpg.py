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
resume and divergence handling are those of :func:`~deepstock_fast.trainers.common.run_members`.
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
from ..policies import PolicyConfig, default_bounds
from . import TRAINERS, register
from .common import (DISCOUNT, NON_NEGATIVE, SEEDS, MemberPlan, Range, check_fields,
                     objective_reward, run_members)
from .population import (StackedAdam, StackedWeights, actor_critic, identity, train_members,
                         validation)


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


class StackedReplayBuffer(nn.Module):
    """K members' :class:`ReplayBuffer` s as one: contents [K, capacity, ...], one position
    (every member adds its B transitions each step); member k samples from its own part with
    its own generator, as its single run would."""

    def __init__(self, members: int, capacity: int, obs_size: int, action_size: int, device):
        super().__init__()
        f = dict(device=device, dtype=torch.float32)
        K = members
        self.register_buffer("obs", torch.zeros(K, capacity, obs_size, **f))
        self.register_buffer("raw", torch.zeros(K, capacity, action_size, **f))
        self.register_buffer("reward", torch.zeros(K, capacity, **f))
        self.register_buffer("next_obs", torch.zeros(K, capacity, obs_size, **f))
        self.register_buffer("terminal", torch.zeros(K, capacity, **f))
        self.register_buffer("position", torch.zeros((), dtype=torch.int64))
        self.register_buffer("size", torch.zeros((), dtype=torch.int64))
        self.capacity, self.members = capacity, K

    def add(self, obs, raw, reward, next_obs, terminal) -> None:
        """Transitions [K * B, ...], member k's at rows k B .. (k + 1) B - 1."""
        K = self.members
        n = obs.shape[0] // K
        idx = (torch.arange(n, device=obs.device) + self.position) % self.capacity
        for mine, new in ((self.obs, obs), (self.raw, raw), (self.reward, reward),
                          (self.next_obs, next_obs), (self.terminal, terminal)):
            mine[:, idx] = new.float().view(K, n, *mine.shape[2:])
        self.position.copy_((self.position + n) % self.capacity)
        self.size.copy_((self.size + n).clamp(max=self.capacity))

    def sample(self, batch: int, generators: list[torch.Generator], drawing: list[bool]):
        """``batch`` transitions per member [K * batch, ...], uniformly with replacement from
        its own; members not ``drawing`` draw nothing (their rows are transition 0)."""
        device = self.obs.device
        u = torch.stack([torch.rand(batch, generator=g, dtype=torch.float64, device=device)
                         if d else torch.zeros(batch, dtype=torch.float64, device=device)
                         for g, d in zip(generators, drawing)])
        idx = torch.minimum((u * self.size).long(), self.size - 1)
        rows = torch.arange(self.members, device=device).unsqueeze(1)
        return tuple(t[rows, idx].flatten(0, 1) for t in
                     (self.obs, self.raw, self.reward, self.next_obs, self.terminal))


#: DDPGConfig fields that members of one population may differ in; the others (SKUs, replay,
#: minibatch, the update schedule, critic widths, validations and checkpoints) must match,
#: and lists mixing them are split into populations (:func:`~.population.train_members`).
PER_MEMBER = ("total_steps", "lr", "lr_final", "tau", "gamma", "exploration_noise",
              "warmup_noise", "patience", "time_budget", "seed")


@register("ddpg", DDPGConfig, hidden=(64, 64))
def train_ddpg(instance: InstanceConfig | str,
               policy_config: PolicyConfig | list[PolicyConfig] | None = None,
               config: DDPGConfig | list[DDPGConfig] | None = None, *,
               device: str | torch.device = "cpu", out_dir: str | pathlib.Path | None = None,
               resume: bool = False, progress: bool = True, label: str = "DDPG",
               callbacks=(), threads: int | None = None):
    """Trains a regularized policy with DDPG; returns (the best policy, the run's record).
    Lists of configurations train a population, as :func:`~.ds.train_ds` describes (a policy
    config without ``output_bounds`` gets its head's :func:`default_bounds`).
    ``threads``: torch threads (None: from the work's size)."""
    if isinstance(instance, str):
        instance = InstanceConfig.from_name(instance)

    def bounded(pc):  # DDPG needs bounded actions (anything else: refused by train_members)
        pc = pc or PolicyConfig(hidden=TRAINERS["ddpg"].hidden)
        if isinstance(pc, PolicyConfig) and pc.output_bounds is None:
            pc = dataclasses.replace(pc, output_bounds=default_bounds(pc.head, instance))
        return pc

    policy_config = [bounded(p) for p in policy_config] if isinstance(
        policy_config, (list, tuple)) else bounded(policy_config)
    return train_members(
        "ddpg", _train_group, instance, policy_config, config, per_member=PER_MEMBER,
        default_policy=lambda: bounded(None), config_class=DDPGConfig, device=device,
        out_dir=out_dir, resume=resume, progress=progress, label=label, callbacks=callbacks,
        threads=threads, skus=lambda c: c.num_envs)


def _train_group(instance: InstanceConfig, policy_configs: list[PolicyConfig],
                 configs: list[DDPGConfig], *, members, checkpoint_path, dirs, population,
                 resume, progress, label, callbacks, interruption, device, write=True):
    """One population of DDPG members of the same shapes: (K policies, K RunResults)."""
    K, first = len(configs), configs[0]
    runs, actor, env, extra = actor_critic(  # the critic sees the state and the raw action
        instance, policy_configs, configs, device,
        critic_inputs=lambda run: run.env.obs_size + run.policy.head.out_features)
    instance, B, k_out = runs[0].instance, first.num_envs, runs[0].policy.head.out_features
    extra.target_critic = copy.deepcopy(extra.critic)
    extra.target_actor = copy.deepcopy(actor)
    extra.buffer = StackedReplayBuffer(K, first.buffer_size, env.obs_size, k_out, device)
    actor_opt = StackedAdam(actor.parameters(), [c.lr for c in configs])
    critic_opt = StackedAdam(extra.critic.parameters(), [c.lr for c in configs])
    samplers = [seeding.generator(c.seed, "minibatch", device) for c in configs]
    noise = [seeding.generator(c.seed, "exploration", device) for c in configs]
    # the first step (counted from 1) after which updates run: learning_starts transitions stored
    first_update_step = max(1, -(-first.learning_starts // B))
    finite = torch.ones(K, dtype=torch.bool, device=device)  # per member, read back per step

    def per_member(values, n: int, dtype) -> torch.Tensor:
        """Members' numbers [K * n], member k's on its n rows (from float64, as numbers)."""
        return torch.tensor(values, dtype=torch.float64, device=device).to(
            dtype).repeat_interleave(n)

    def updates_before(i: int) -> int:
        """update() calls in steps 0 .. i - 1 (a function of i, so resumes need no counter)."""
        f = first.train_freq
        return first.gradient_steps * max(0, i // f - (first_update_step - 1) // f)

    def q(critic, obs, raw):  # [K * N, ...] -> [K * N]
        x = actor.normalize(obs)
        return critic(torch.cat([x, raw.view(K, -1, raw.shape[-1])], 2)).reshape(-1)

    @torch.no_grad()
    def soft_update(net, target_net, moving: list[bool]) -> None:
        tau = torch.tensor([c.tau if m else 0.0 for c, m in zip(configs, moving)],
                           dtype=torch.float64, device=device)
        for p, tp in zip(net.parameters(), target_net.parameters()):
            tp.lerp_(p, tau.to(p.dtype).view((K,) + (1,) * (p.dim() - 1)))

    def update(updating: list[bool], train_actor: list[bool]) -> None:
        n = first.batch_size
        obs, raw, reward, next_obs, terminal = extra.buffer.sample(n, samplers, updating)
        with torch.no_grad():
            target = reward + per_member([c.gamma for c in configs], n, reward.dtype) * (
                1 - terminal) * q(extra.target_critic, next_obs, extra.target_actor.raw(next_obs))
        critic_loss = (q(extra.critic, obs, raw) - target).pow(2).view(K, n).mean(1)
        critic_opt.zero_grad()
        torch.where(torch.isfinite(critic_loss), critic_loss, 0.0).sum().backward()
        # read back after the environment step: a member whose loss was not finite then stops
        # as diverged, its best weights restored before its next action (members share no
        # weights: a member's NaN spoils only its own)
        finite.logical_and_(torch.isfinite(critic_loss.detach())
                            | ~torch.tensor(updating, device=device))
        critic_opt.step(updating)
        soft_update(extra.critic, extra.target_critic, updating)
        acting = [t and u for t, u in zip(train_actor, updating)]
        if any(acting):
            actor_loss = -q(extra.critic, obs, actor.raw(obs)).view(K, n).mean(1)
            finite.logical_and_(torch.isfinite(actor_loss.detach())
                                | ~torch.tensor(acting, device=device))
            actor_opt.zero_grad()
            torch.where(torch.isfinite(actor_loss), actor_loss, 0.0).sum().backward(
                inputs=list(actor.parameters()))
            actor_opt.step(acting)
            soft_update(actor, extra.target_actor, acting)

    def step(done: list[int], active: list[bool]):
        for k, c in enumerate(configs):
            lr = c.lr_final + (c.lr - c.lr_final) * (1 - done[k] / c.iterations)
            actor_opt.lr[k] = critic_opt.lr[k] = lr
        state = env.state()
        with torch.no_grad():
            raw = actor.raw(state.obs)
            stds = [c.warmup_noise if updates_before(i) < first.critic_warmup
                    else c.exploration_noise for c, i in zip(configs, done)]
            if any(s > 0 and a for s, a in zip(stds, active)):
                k_raw = raw.shape[1]
                draws = torch.cat([torch.randn((B, k_raw), generator=g, device=raw.device)
                                   if s > 0 and a else raw.new_zeros(B, k_raw)
                                   for g, s, a in zip(noise, stds, active)])
                raw = raw + per_member(stds, B, raw.dtype).unsqueeze(1) * draws
            _, reward, terminated, _, info = env.step(actor.project(raw, state))
        next_obs = info.get("final_obs", env.state().obs)
        # rewards in units of (mean cost per period) / (1 - gamma): Q-values are O(1)
        reward = objective_reward(env, reward, state.day)
        units = [s / (1 - c.gamma + 1e-3) for s, c in zip(extra.reward_scale.tolist(), configs)]
        extra.buffer.add(state.obs, raw, reward / per_member(units, B, reward.dtype), next_obs,
                         terminated)
        due = [a and i + 1 >= first_update_step and (i + 1) % first.train_freq == 0
               for a, i in zip(active, done)]
        if any(due):
            for j in range(first.gradient_steps):
                update(due, [d and updates_before(i) + j >= first.critic_warmup
                             for d, i in zip(due, done)])
        return (-reward.view(K, B).mean(1)).tolist(), {}

    results = run_members(
        label=label, plans=[MemberPlan(c.iterations, c.patience, c.time_budget, d)
                            for c, d in zip(configs, dirs)],
        iterate=step, validate=validation(runs, actor), eval_every=first.eval_every,
        checkpoint_every=first.checkpoint_every, weights=StackedWeights(actor, instance),
        stateful={"actor": actor, "extra": extra, "actor_opt": actor_opt,
                  "critic_opt": critic_opt, "env": env},
        generators={**{f"sampler{k}": g for k, g in enumerate(samplers)},
                    **{f"noise{k}": g for k, g in enumerate(noise)},
                    **{f"train{k}": r.env.generator for k, r in enumerate(runs)}},
        identity=identity("ddpg", instance, policy_configs, configs, members, population,
                          [r.policy for r in runs]),
        checkpoint_path=checkpoint_path, resume=resume, progress=progress,
        on_validation=None, lrs=lambda: actor_opt.lr, unit="step",
        healthy=lambda: [f and h for f, h in zip(finite.tolist(), actor.healthy())],
        callbacks=callbacks, interruption=interruption,
        population=population, member_ids=members, check_every_iteration=True,
        write=write)
    return [actor.member(k) for k in range(K)], results
