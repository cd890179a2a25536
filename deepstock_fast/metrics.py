"""Business metrics from the cost and stats totals that inventory_step and rollout return."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor


class Metrics(NamedTuple):
    """Per-SKU (or per-environment) metrics over the counted days; each has the batch shape."""

    average_cost: Tensor    # total cost per day
    fill_rate: Tensor       # units sold from stock / units demanded
    stockout_rate: Tensor   # share of days ending with unmet demand
    turnover_days: Tensor   # average end-of-day inventory / average daily sales


def business_metrics(cost: Tensor, stats: Tensor, demanded: Tensor, days: int) -> Metrics:
    """cost [..., 3] and stats [..., 4] summed over ``days`` days in which ``demanded`` [...]
    units were asked for (the column order of inventory_step's outputs)."""
    sold, _, stockout_days, inventory = stats.unbind(-1)
    return Metrics(average_cost=cost.sum(-1) / days,
                   fill_rate=sold / demanded,
                   stockout_rate=stockout_days / days,
                   turnover_days=inventory / sold)


def aggregate(cost: Tensor, stats: Tensor, demanded: Tensor, days: int) -> Metrics:
    """Metrics over all SKUs at once from per-SKU totals cost [B, 3], stats [B, 4], demanded [B]:
    the mean cost per SKU and day, and the ratios of the summed quantities (total sold / total
    demanded, stockout days / SKU-days, total inventory / total sales)."""
    return business_metrics(cost.mean(0), stats.mean(0), demanded.mean(0), days)
