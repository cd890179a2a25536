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
handling are those of :func:`~deepstock_fast.trainers.common.run_loop`.
"""

from __future__ import annotations

import dataclasses
import pathlib
from dataclasses import dataclass

import torch
from torch import nn

from .. import seeding
from ..envs import InstanceConfig
from ..policies import Policy, PolicyConfig, mlp
from . import TRAINERS, register
from .population import choose_threads, torch_threads
from .common import (DISCOUNT, NON_NEGATIVE, SEEDS, UNIT, Range, RunResult, Scalars,
                     check_fields, objective_reward, reward_scale, run_loop, setup)


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
        dones: torch.Tensor, gamma: float, lam: float) -> torch.Tensor:
    """Generalised advantage estimates [T, B] of a rollout: rewards, values and dones [T, B]
    (done: the episode ended at that step; a truncated episode's reward already holds the
    discounted value of its final state), next_value [B] the value after the last step."""
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(next_value)
    for t in reversed(range(rewards.shape[0])):
        not_done = 1.0 - dones[t]
        following = next_value if t == rewards.shape[0] - 1 else values[t + 1]
        delta = rewards[t] + gamma * following * not_done - values[t]
        last = delta + gamma * lam * not_done * last
        advantages[t] = last
    return advantages


def ppo_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
             values: torch.Tensor, returns: torch.Tensor, entropy: torch.Tensor,
             config: PPOConfig) -> torch.Tensor:
    """PPO's minibatch loss from [N] tensors: the clipped surrogate on the minibatch-normalised
    advantages, plus ``vf_coef`` times the value error, minus ``ent_coef`` times the entropy."""
    a = advantages
    a = (a - a.mean()) / (a.std() + 1e-8) if a.numel() > 1 else a
    ratio = (logp - old_logp).exp()
    policy_loss = -torch.min(ratio * a, ratio.clamp(1 - config.clip, 1 + config.clip) * a).mean()
    value_loss = (values - returns).pow(2).mean()
    return policy_loss + config.vf_coef * value_loss - config.ent_coef * entropy.mean()


@register("ppo", PPOConfig, hidden=(256, 256))
def train_ppo(instance: InstanceConfig | str, policy_config: PolicyConfig | None = None,
              config: PPOConfig | None = None, *, device: str | torch.device = "cpu",
              out_dir: str | pathlib.Path | None = None, resume: bool = False,
              progress: bool = True, label: str = "PPO",
              callbacks=(), threads: int | None = None) -> tuple[Policy, RunResult]:
    """Trains a regularized policy with PPO; returns (the best policy, the run's record).
    ``threads``: torch threads (None: from the SKUs stepped together,
    :func:`~.population.choose_threads`). Populations (lists of configurations) are DS's only
    so far."""
    if isinstance(policy_config, (list, tuple)) or isinstance(config, (list, tuple)):
        raise ValueError("population training (lists of configurations) is implemented for "
                         "DS only so far; train PPO configurations one at a time")
    policy_config = policy_config or PolicyConfig(hidden=TRAINERS["ppo"].hidden)
    config = config or PPOConfig()
    run = setup(instance, policy_config, train_skus=config.num_envs,
                validation_skus=config.validation_skus, seed=config.seed, device=device,
                reset=True)
    instance, env, policy = run.instance, run.env, run.policy
    k = policy.head.out_features
    critic = mlp([env.obs_size, *config.critic_hidden, 1], policy_config.activation).to(device)
    log_std = nn.Parameter(torch.full((k,), config.log_std_init, device=device))
    extra = nn.Module()
    extra.critic, extra.log_std = critic, log_std
    extra.scalars = Scalars(reward_scale=reward_scale(instance, config.seed, device)).to(device)
    params = list(policy.parameters()) + list(extra.parameters())
    optimizer = torch.optim.Adam(params, lr=config.lr, eps=1e-5)
    steps = config.n_steps // config.num_envs
    noise = seeding.generator(config.seed, "exploration", env.device)
    minibatches = seeding.generator(config.seed, "minibatch", env.device)
    # Losses and gradient norms are checked on the device; run_loop reads the flag back only
    # before a validation or a checkpoint.
    finite = torch.ones((), dtype=torch.bool, device=env.device)

    def value(obs):
        return critic((obs.float() - policy.obs_mean) / policy.obs_std).squeeze(-1)

    def iteration(i: int) -> float:
        frac = i / config.iterations
        for group in optimizer.param_groups:
            group["lr"] = config.lr_final + (config.lr - config.lr_final) * (1 - frac)
        scale = float(extra.scalars.reward_scale)
        obs_buf, raw_buf, logp_buf, val_buf, rew_buf, done_buf = [], [], [], [], [], []
        cost = 0.0
        with torch.no_grad():
            for _ in range(steps):
                state = env.state()
                mean = policy.raw(state.obs)
                dist = torch.distributions.Normal(mean, log_std.exp(), validate_args=False)
                raw = mean + log_std.exp() * torch.randn(mean.shape, generator=noise,
                                                         device=mean.device)
                _, reward, terminated, truncated, info = env.step(policy.project(raw, state))
                cost = cost - reward.mean()
                reward = objective_reward(env, reward, state.day).float() / scale
                v = value(state.obs)
                if truncated.any():  # a long-run problem cut short: bootstrap the final state
                    reward = reward + config.gamma * truncated * value(info["final_obs"])
                obs_buf.append(state.obs.float())
                raw_buf.append(raw)
                logp_buf.append(dist.log_prob(raw).sum(-1))
                val_buf.append(v)
                rew_buf.append(reward)
                done_buf.append((terminated | truncated).float())
            values = torch.stack(val_buf)
            advantages = gae(torch.stack(rew_buf), values, value(env.state().obs),
                             torch.stack(done_buf), config.gamma, config.gae_lambda)
            returns = advantages + values
        obs, raw = torch.stack(obs_buf).flatten(0, 1), torch.stack(raw_buf).flatten(0, 1)
        old_logp = torch.stack(logp_buf).flatten()
        adv, ret = advantages.flatten(), returns.flatten()
        n = obs.shape[0]
        for _ in range(config.update_epochs):
            order = torch.randperm(n, generator=minibatches, device=env.device)
            for lo in range(0, n, config.batch_size):
                idx = order[lo:lo + config.batch_size]
                dist = torch.distributions.Normal(policy.raw(obs[idx]), log_std.exp(),
                                                  validate_args=False)  # NaNs: checked below
                loss = ppo_loss(dist.log_prob(raw[idx]).sum(-1), old_logp[idx], adv[idx],
                                value(obs[idx]), ret[idx], dist.entropy().sum(-1), config)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                norm = nn.utils.clip_grad_norm_(params, config.max_grad_norm)
                finite.logical_and_(torch.isfinite(loss.detach()) & torch.isfinite(norm))
                optimizer.step()
        return cost / steps  # the rollout's cost per period

    with torch_threads(choose_threads(config.num_envs) if threads is None else threads):
        result = run_loop(
            label=label, total=config.iterations, iterate=iteration, validate=run.validate,
            eval_every=config.eval_every, patience=config.patience,
            checkpoint_every=config.checkpoint_every, time_budget=config.time_budget,
            policy=policy, stateful={"policy": policy, "extra": extra, "optimizer": optimizer,
                                     "env": env},
            generators={"noise": noise, "minibatches": minibatches}, identity={"algo": "ppo", "instance": instance.to_dict(),
                                     "config": dataclasses.asdict(config),
                                     "policy_config": dataclasses.asdict(policy.config)},
            out_dir=out_dir, resume=resume, progress=progress, callbacks=callbacks, unit="update",
            healthy=lambda: bool(finite))
    return policy, result

