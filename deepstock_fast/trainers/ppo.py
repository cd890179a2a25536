"""PPO on the batched environment, with the policy regularizations.

The actor is the same :class:`~deepstock_fast.policies.Policy` as DS; PPO's Gaussian acts on its
pre-projection output (``raw``: a base-stock target, coefficients, or an order in units of the
demand scale), and the environment receives ``policy.project(raw, state)``. Rollout storage,
networks and environment stay on one device; an iteration collects ``n_steps`` transitions
(``n_steps / num_envs`` steps of every SKU), computes GAE advantages (at the horizon, the value of the
final observation is bootstrapped when the episode is truncated, a long-run problem cut short,
and not when it terminates, a ``finite_horizon`` instance, whose warm-up days' costs are not
counted either), then runs ``update_epochs`` passes
of clipped-objective minibatch updates with a value loss and an entropy bonus. The learning rate
decays linearly to ``lr_final``. Validation, early stopping, checkpoints, resume and divergence
handling are those of :func:`~deepstock_fast.trainers.common.run_members`.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass
from types import SimpleNamespace

import torch
from torch import nn

from .. import seeding
from ..envs import InstanceConfig
from ..policies import PolicyConfig
from . import TRAINERS, register
from .common import (DISCOUNT, NON_NEGATIVE, SEEDS, UNIT, MemberPlan, Range, check_fields,
                     objective_reward, run_members)
from .population import (StackedAdam, StackedWeights, actor_critic, clip_grad_norms_, identity,
                         train_members, validation)


@dataclass
class PPOConfig:
    """Hyperparameters; defaults inside the paper's PPO search space (256x256 networks)."""

    total_steps: int = 200_000        # environment transitions (SKU-periods)
    num_envs: int = 64                # SKUs stepped together
    n_steps: int = 2048               # transitions per rollout (n_steps / num_envs per SKU)
    batch_size: int = 256             # minibatch
    update_epochs: int = 5            # passes over each rollout (docs/BENCHMARKS.md)
    lr: float = 1e-3
    lr_final: float = 1e-4            # linear decay target
    clip: float = 0.2
    ent_coef: float = 1e-3
    vf_coef: float = 0.5
    gamma: float = 0.99
    gae_lambda: float = 0.95
    max_grad_norm: float = 0.5
    log_std_init: float = -1.0        # of the Gaussian on the pre-projection output
    critic_hidden: tuple[int, ...] = (256, 256)
    eval_every: int = 5               # iterations (rollout + update) between validations
    patience: int = 10                # evaluations without improvement before stopping
    validation_skus: int = 512
    checkpoint_every: int = 5
    time_budget: float | None = None
    seed: int = 0

    def __post_init__(self):
        check_fields(self, lr_final=NON_NEGATIVE, ent_coef=NON_NEGATIVE, vf_coef=NON_NEGATIVE,
                     gamma=DISCOUNT, gae_lambda=UNIT, log_std_init=Range(-20.0, 5.0),
                     seed=SEEDS)
        if self.n_steps % self.num_envs:
            raise ValueError(f"n_steps = {self.n_steps} must be a multiple of num_envs = "
                             f"{self.num_envs}")

    @property
    def iterations(self) -> int:
        return max(1, self.total_steps // self.n_steps)


def gae(rewards: torch.Tensor, values: torch.Tensor, next_value: torch.Tensor,
        dones: torch.Tensor, gamma, lam) -> torch.Tensor:
    """Generalised advantage estimates [T, B] of a rollout: rewards, values and dones [T, B]
    (done: the episode ended at that step; a truncated episode's reward already holds the
    discounted value of its final state), next_value [B] the value after the last step.
    ``gamma``, ``lam``: numbers, or float64 tensors [B] (a population's members' values per
    SKU, multiplied in float64 as numbers are)."""
    discount = gamma * lam
    if isinstance(discount, torch.Tensor):
        gamma, discount = gamma.to(rewards.dtype), discount.to(rewards.dtype)
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(next_value)
    for t in reversed(range(rewards.shape[0])):
        not_done = 1.0 - dones[t]
        following = next_value if t == rewards.shape[0] - 1 else values[t + 1]
        delta = rewards[t] + gamma * following * not_done - values[t]
        last = delta + discount * not_done * last
        advantages[t] = last
    return advantages


def ppo_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
             values: torch.Tensor, returns: torch.Tensor, entropy: torch.Tensor,
             config) -> torch.Tensor:
    """PPO's minibatch loss from [..., N] tensors (a population: [K, N], one loss per member):
    the clipped surrogate on the minibatch-normalised advantages, plus ``vf_coef`` times the
    value error, minus ``ent_coef`` times the entropy. ``config``: a :class:`PPOConfig`, or
    anything with ``clip``, ``vf_coef`` and ``ent_coef`` as float64 tensors [K, 1]."""
    def number(x):
        return x.to(logp.dtype) if isinstance(x, torch.Tensor) else x

    a = advantages
    if a.shape[-1] > 1:
        a = (a - a.mean(-1, keepdim=True)) / (a.std(-1, keepdim=True) + 1e-8)
    ratio = (logp - old_logp).exp()
    low, high = number(1 - config.clip), number(1 + config.clip)
    policy_loss = -torch.min(ratio * a, ratio.clamp(low, high) * a).mean(-1)
    value_loss = (values - returns).pow(2).mean(-1)
    vf, ent = (number(c).squeeze(-1) if isinstance(c, torch.Tensor) else c
               for c in (config.vf_coef, config.ent_coef))
    return policy_loss + vf * value_loss - ent * entropy.mean(-1)


#: PPOConfig fields that members of one population may differ in; the others (SKUs, rollout
#: length, minibatch, critic widths, the schedule of validations and checkpoints) must match,
#: and lists mixing them are split into populations (:func:`~.population.train_members`).
PER_MEMBER = ("total_steps", "update_epochs", "lr", "lr_final", "clip", "ent_coef", "vf_coef",
              "gamma", "gae_lambda", "max_grad_norm", "log_std_init", "patience",
              "time_budget", "seed")


@register("ppo", PPOConfig, hidden=(256, 256))
def train_ppo(instance: InstanceConfig | str,
              policy_config: PolicyConfig | list[PolicyConfig] | None = None,
              config: PPOConfig | list[PPOConfig] | None = None, *,
              device: str | torch.device = "cpu", out_dir: str | pathlib.Path | None = None,
              resume: bool = False, progress: bool = True, label: str = "PPO", callbacks=(),
              threads: int | None = None):
    """Trains a regularized policy with PPO; returns (the best policy, the run's record).
    Lists of configurations train a population, as :func:`~.ds.train_ds` describes.
    ``threads``: torch threads (None: from the work's size)."""
    return train_members(
        "ppo", _train_group, instance, policy_config, config, per_member=PER_MEMBER,
        default_policy=lambda: PolicyConfig(hidden=TRAINERS["ppo"].hidden),
        config_class=PPOConfig, device=device, out_dir=out_dir, resume=resume,
        progress=progress, label=label, callbacks=callbacks, threads=threads,
        skus=lambda c: c.num_envs)


def _train_group(instance: InstanceConfig, policy_configs: list[PolicyConfig],
                 configs: list[PPOConfig], *, members, checkpoint_path, dirs, population,
                 resume, progress, label, callbacks, interruption, device, write=True):
    """One population of PPO members of the same shapes: (K policies, K RunResults)."""
    K, first = len(configs), configs[0]
    runs, policy, env, extra = actor_critic(instance, policy_configs, configs, device,
                                            critic_inputs=lambda run: run.env.obs_size)
    instance = runs[0].instance
    B, k_out = first.num_envs, runs[0].policy.head.out_features
    extra.log_std = nn.Parameter(torch.tensor([[c.log_std_init] * k_out for c in configs],
                                              device=device))
    params = list(policy.parameters()) + list(extra.parameters())
    optimizer = StackedAdam(params, [c.lr for c in configs], eps=1e-5)
    steps = first.n_steps // B
    noise = [seeding.generator(c.seed, "exploration", device) for c in configs]
    minibatches = [seeding.generator(c.seed, "minibatch", device) for c in configs]
    finite = torch.ones(K, dtype=torch.bool, device=device)  # per member, read back per update
    # (members share no weights: a member's NaN spoils only its own)

    def per_sku(values) -> torch.Tensor:
        """Members' numbers as float64 [K * B], member k's on its B SKUs."""
        return torch.tensor(values, dtype=torch.float64, device=device).repeat_interleave(B)

    gamma, lam = per_sku([c.gamma for c in configs]), per_sku([c.gae_lambda for c in configs])
    coefficients = SimpleNamespace(**{name: torch.tensor(
        [[getattr(c, name)] for c in configs], dtype=torch.float64, device=device)
        for name in ("clip", "vf_coef", "ent_coef")})

    def value(obs):  # [K * N, n] -> [K * N]
        return extra.critic(policy.normalize(obs.float())).reshape(-1)

    def by_member(x):  # [T, K * B, ...] -> [K, T * B, ...]: member k's transitions, t-major
        return x.view(x.shape[0], K, B, *x.shape[2:]).transpose(0, 1).flatten(1, 2)

    def iteration(done: list[int], active: list[bool]):
        for k, c in enumerate(configs):
            optimizer.lr[k] = c.lr_final + (c.lr - c.lr_final) * (1 - done[k] / c.iterations)
        scale = per_sku(extra.reward_scale.tolist())
        std = extra.log_std.detach().exp().repeat_interleave(B, 0)  # [K * B, k]
        acting = torch.tensor(active, device=std.device).repeat_interleave(B).unsqueeze(1)
        obs_buf, raw_buf, logp_buf, val_buf, rew_buf, done_buf = [], [], [], [], [], []
        cost = 0.0
        with torch.no_grad():
            for _ in range(steps):
                state = env.state()
                mean = policy.raw(state.obs)
                dist = torch.distributions.Normal(mean, std, validate_args=False)
                draws = [torch.randn((B, k_out), generator=g, device=mean.device)
                         if a else mean.new_zeros(B, k_out) for g, a in zip(noise, active)]
                # stopped members act deterministically (a diverged one's spread may be inf)
                raw = mean + torch.where(acting, std * torch.cat(draws), 0.0)
                _, reward, terminated, truncated, info = env.step(policy.project(raw, state))
                cost = cost - reward.view(K, B).mean(1)
                reward = objective_reward(env, reward, state.day).float() / scale.to(
                    torch.float32)
                v = value(state.obs)
                if truncated.any():  # a long-run problem cut short: bootstrap the final state
                    reward = reward + gamma.to(v.dtype) * truncated * value(info["final_obs"])
                obs_buf.append(state.obs.float())
                raw_buf.append(raw)
                logp_buf.append(dist.log_prob(raw).sum(-1))
                val_buf.append(v)
                rew_buf.append(reward)
                done_buf.append((terminated | truncated).float())
            values = torch.stack(val_buf)
            advantages = gae(torch.stack(rew_buf), values, value(env.state().obs),
                             torch.stack(done_buf), gamma, lam)
            returns = advantages + values
        obs, raw = by_member(torch.stack(obs_buf)), by_member(torch.stack(raw_buf))
        old_logp, adv, ret = (by_member(torch.stack(logp_buf)), by_member(advantages),
                              by_member(returns))
        n, rows = obs.shape[1], torch.arange(K, device=obs.device).unsqueeze(1)
        for epoch in range(max(c.update_epochs for c in configs)):
            updating = [a and epoch < c.update_epochs for a, c in zip(active, configs)]
            order = torch.stack([torch.randperm(n, generator=g, device=obs.device) if u else
                                 torch.arange(n, device=obs.device)
                                 for g, u in zip(minibatches, updating)])
            for lo in range(0, n, first.batch_size):
                idx = order[:, lo:lo + first.batch_size]  # [K, m]
                m = idx.shape[1]
                o = obs[rows, idx].flatten(0, 1)
                dist = torch.distributions.Normal(
                    policy.raw(o), extra.log_std.exp().repeat_interleave(m, 0),
                    validate_args=False)  # NaNs: checked below
                loss = ppo_loss(dist.log_prob(raw[rows, idx].flatten(0, 1)).sum(-1).view(K, m),
                                old_logp[rows, idx], adv[rows, idx], value(o).view(K, m),
                                ret[rows, idx], dist.entropy().sum(-1).view(K, m),
                                coefficients)  # [K]
                optimizer.zero_grad()
                torch.where(torch.isfinite(loss), loss, 0.0).sum().backward()
                norms = clip_grad_norms_(params, [c.max_grad_norm for c in configs])
                # read back after the update: a member whose loss or gradient was not finite
                # then stops as diverged, its best weights restored before the next rollout
                finite.logical_and_(torch.isfinite(loss.detach()) & torch.isfinite(norms)
                                    | ~torch.tensor(updating, device=norms.device))
                optimizer.step(updating)
        return (cost / steps).tolist(), {}  # the rollout's cost per period

    def healthy() -> list[bool]:
        """Per member: its losses and gradients were finite, and so are its actions' means
        (on typical inputs) and standard deviations."""
        spread = torch.isfinite(extra.log_std.detach().exp()).all(1)
        return [f and h and s for f, h, s in zip(finite.tolist(), policy.healthy(),
                                                 spread.tolist())]

    results = run_members(
        label=label, plans=[MemberPlan(c.iterations, c.patience, c.time_budget, d)
                            for c, d in zip(configs, dirs)],
        iterate=iteration, validate=validation(runs, policy), eval_every=first.eval_every,
        checkpoint_every=first.checkpoint_every, weights=StackedWeights(policy, instance),
        stateful={"policy": policy, "extra": extra, "optimizer": optimizer, "env": env},
        generators={**{f"noise{k}": g for k, g in enumerate(noise)},
                    **{f"minibatches{k}": g for k, g in enumerate(minibatches)},
                    **{f"train{k}": r.env.generator for k, r in enumerate(runs)}},
        identity=identity("ppo", instance, policy_configs, configs, members, population,
                          [r.policy for r in runs]),
        checkpoint_path=checkpoint_path, resume=resume, progress=progress,
        on_validation=None, lrs=lambda: optimizer.lr, unit="update",
        healthy=healthy,
        callbacks=callbacks, interruption=interruption,
        population=population, member_ids=members, check_every_iteration=True,
        write=write)
    return [policy.member(k) for k in range(K)], results
