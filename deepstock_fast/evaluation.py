"""Evaluate any policy (a trained :class:`~deepstock_fast.policies.Policy` or a function of the
state) on an instance: business metrics per SKU and over all SKUs, on seeded episodes."""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from torch import Tensor

from . import seeding
from .envs import InstanceConfig, InventoryEnv, SimState
from .metrics import Metrics, aggregate, business_metrics


class Evaluation(NamedTuple):
    per_sku: Metrics         # each field [num_skus]
    aggregate: Metrics       # each field a 0-d tensor
    average_cost: float      # cost per SKU and day after warm-up
    average_cost_se: float   # its standard error over the SKUs (independent draws)


def held_out_env(instance: InstanceConfig | str | dict, seed: int,
                 device="cpu") -> InventoryEnv:
    """The environment whose episodes test a policy of ``seed``: drawn from the seed's test
    stream (:mod:`deepstock_fast.seeding`), which no training or validation stream equals."""
    return InventoryEnv(instance, device=device, seed=seeding.stream(seed, "test"))


def paired_gap(cost: Tensor, reference: Tensor) -> tuple[float, float]:
    """The gap in percent between two policies' per-SKU costs [S] on the same demand, 100 *
    (mean cost - mean reference) / mean reference, and its standard error from the per-SKU
    differences (common demand removes most of the noise that two separate SEs would add)."""
    d = (cost - reference).double()
    base = float(reference.double().mean())
    se = float(d.std() / d.numel() ** 0.5) if d.numel() > 1 else float("nan")
    return 100 * float(d.mean()) / base, 100 * se / base


@torch.no_grad()
def evaluate(policy: Callable[[SimState], Tensor], instance: InstanceConfig | str | dict, *,
             seed: int = 0, device: str | torch.device = "cpu", episodes: int = 1) -> Evaluation:
    """Runs ``policy`` on ``episodes`` episodes of all the instance's SKUs (drawn from ``seed``'s
    test stream, see :func:`held_out_env`) and returns the metrics of the days after warm-up, with
    the standard error of the average cost over the SKUs."""
    env = held_out_env(instance, seed, device)
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
    per_sku = business_metrics(cost, stats, demanded, days)
    n = per_sku.average_cost.numel()
    se = float(per_sku.average_cost.double().std() / n ** 0.5) if n > 1 else float("nan")
    return Evaluation(per_sku, total, float(total.average_cost), se)
