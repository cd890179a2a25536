"""Evaluate any policy (a trained :class:`~deepstock_fast.policies.Policy` or a function of the
state) on an instance: business metrics per SKU and over all SKUs, on seeded episodes."""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from torch import Tensor

from .envs import InstanceConfig, InventoryEnv, SimState
from .metrics import Metrics, aggregate, business_metrics


class Evaluation(NamedTuple):
    per_sku: Metrics      # each field [num_skus]
    aggregate: Metrics    # each field a 0-d tensor
    average_cost: float   # cost per SKU and day after warm-up


@torch.no_grad()
def evaluate(policy: Callable[[SimState], Tensor], instance: InstanceConfig | str | dict, *,
             seed: int = 0, device: str | torch.device = "cpu", episodes: int = 1) -> Evaluation:
    """Runs ``policy`` on ``episodes`` episodes of all the instance's SKUs (drawn from ``seed``)
    and returns the metrics of the days after warm-up."""
    env = InventoryEnv(instance, device=device, seed=seed)
    if hasattr(policy, "check_instance"):
        policy.check_instance(env.obs_names)
    c = env.config
    cost = stats = demanded = 0
    for _ in range(episodes):
        episode = env.sample_episode()
        result = env.simulate(policy, episode)
        cost = cost + result.cost
        stats = stats + result.stats
        demanded = demanded + episode.demand[:, c.warmup:].sum(1)
    days = episodes * (c.horizon - c.warmup)
    total = aggregate(cost, stats, demanded, days)
    return Evaluation(business_metrics(cost, stats, demanded, days), total,
                      float(total.average_cost))
