"""Every op of :mod:`deepstock_fast.ops` in plain eager PyTorch.

The oracle of the tests and the baseline of the benchmarks: the same math, written the way a user
would write it with tensor operations, with the same subgradients at the kinks (``torch.where``
picks the right derivative explicitly). No input validation.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .ops import POLICIES, EnvStepResult, RolloutResult, StepResult, initial_state


def _per_env(value, like: Tensor) -> Tensor:
    if not isinstance(value, Tensor):
        value = torch.tensor(float(value), dtype=like.dtype, device=like.device)
    return value.reshape(-1).expand(like.shape[0])


def _settle_day(x, demand, lost_sales):
    """One day after arrivals: returns (end-of-day on-hand, sold, short, stockout, holding)."""
    e = x - demand
    stocked = e >= 0
    zero = torch.zeros_like(e)
    holding = torch.where(stocked, e, zero)
    short = torch.where(stocked, zero, -e)
    sold = torch.minimum(x.clamp(min=0), demand)
    end = torch.where(stocked, e, zero) if lost_sales else e
    return end, sold, short, (~stocked).to(x.dtype), holding


def inventory_step(on_hand, pipeline, lead_time, order, demand, holding_cost, penalty_cost,
                   order_cost=0.0, lost_sales=True) -> StepResult:
    """Reference of :func:`deepstock_fast.ops.inventory_step` (same arguments and results)."""
    batch, max_lead = pipeline.shape
    days = demand.shape[1]
    h = _per_env(holding_cost, on_hand)
    p = _per_env(penalty_cost, on_hand)
    c = _per_env(order_cost, on_hand)
    lead = lead_time.long()
    x = on_hand
    totals = [torch.zeros_like(on_hand) for _ in range(4)]  # sold, short, stockouts, holding
    for d in range(days):
        arriving = torch.where(lead == d, order, torch.zeros_like(order))
        if d < max_lead:
            arriving = arriving + pipeline[:, d]
        x, *day = _settle_day(x + arriving, demand[:, d], lost_sales)
        totals = [t + v for t, v in zip(totals, day)]
    sold, short, stockouts, holding = totals
    shifted = torch.cat(
        [pipeline[:, days:], pipeline.new_zeros(batch, min(days, max_lead))], dim=1)
    slot = torch.arange(max_lead, device=pipeline.device)
    lands = slot.unsqueeze(0) == (lead - days).unsqueeze(1)
    next_pipeline = shifted + torch.where(lands, order.unsqueeze(1), torch.zeros_like(shifted))
    cost = torch.stack([h * holding, p * short, c * order], dim=1)
    stats = torch.stack([sold, short, stockouts, holding], dim=1).detach()
    return StepResult(x, next_pipeline, cost, stats)


def clamp_order(u: Tensor, max_order) -> Tensor:
    """clamp(u, 0, max_order) with the right derivative at both kinks."""
    cap = _per_env(max_order, u)
    return torch.where(u < 0, torch.zeros_like(u), torch.where(u >= cap, cap, u))


def base_stock_order(target, inventory_position, max_order=math.inf) -> Tensor:
    return clamp_order(target - inventory_position, max_order)


def coeff_order(coeff, features, max_order=math.inf) -> Tensor:
    return clamp_order((coeff * features).sum(dim=1), max_order)


def coeff_base_stock_order(coeff, features, inventory_position, max_order=math.inf) -> Tensor:
    return clamp_order((coeff * features).sum(dim=1) - inventory_position, max_order)


#: policy of :data:`deepstock_fast.ops.POLICIES` -> order(ip [B], first param [B], params [B or 1, n])
_CLASSICAL = {
    "base_stock": lambda ip, a, params: clamp_order(a - ip, math.inf),
    "capped_base_stock": lambda ip, a, params: clamp_order(a - ip, params[:, 1].expand_as(ip)),
    "constant": lambda ip, a, params: a.clone(),
    "s_S": lambda ip, a, params: torch.where(ip <= a, params[:, 1].expand_as(ip) - ip,
                                             torch.zeros_like(ip)),
}
if list(_CLASSICAL) != list(POLICIES):  # every policy of the native op has its reference
    raise ImportError(f"reference policies {list(_CLASSICAL)} differ from ops.POLICIES "
                      f"{list(POLICIES)}")


def classical_order(policy: str, ip: Tensor, params: Tensor) -> Tensor:
    """Order of a classical policy at inventory position ip [B]; params [B, n] or [1, n]."""
    if policy not in _CLASSICAL:
        raise ValueError(f"policy must be one of {list(POLICIES)}, got {policy!r}")
    return _CLASSICAL[policy](ip, params[:, 0].expand_as(ip), params)


def observation(on_hand, pipeline, exogenous, scale) -> Tensor:
    inv = 1.0 / scale
    return torch.cat([(on_hand * inv).unsqueeze(1), pipeline * inv.unsqueeze(1), exogenous], 1)


def env_step(on_hand, pipeline, lead_time, order, demand, holding_cost, penalty_cost,
             order_cost, lost_sales, exogenous, scale, cost_total, stats_total,
             accumulate=True) -> EnvStepResult:
    """Reference of :func:`deepstock_fast.ops.env_step`: the step, the observation, the sums."""
    step = inventory_step(on_hand, pipeline, lead_time, order, demand, holding_cost,
                          penalty_cost, order_cost, lost_sales)
    obs = observation(step.next_on_hand, step.next_pipeline, exogenous, scale)
    reward = -(step.cost[:, 0] + step.cost[:, 1] + step.cost[:, 2])
    cost_total = cost_total + step.cost if accumulate else cost_total.clone()
    stats_total = stats_total + step.stats if accumulate else stats_total.clone()
    return EnvStepResult(*step, reward, obs, cost_total, stats_total)


def rollout(demand, policy, params, lead_time, *, on_hand=None, pipeline=None, review_period=1,
            warmup=0, holding_cost=1.0, penalty_cost=9.0, order_cost=0.0,
            lost_sales=True) -> RolloutResult:
    """Reference of :func:`deepstock_fast.ops.rollout`: a loop over days of the step math."""
    batch, horizon = demand.shape
    lead_time, x, pipeline = initial_state(demand, lead_time, on_hand, pipeline)
    no_order = demand.new_zeros(batch)
    cost = demand.new_zeros(batch, 3)
    stats = demand.new_zeros(batch, 4)
    for t in range(horizon):
        if t % review_period == 0:
            order = classical_order(policy, x + pipeline.sum(dim=1), params)
        else:
            order = no_order
        x, pipeline, day_cost, day_stats = inventory_step(
            x, pipeline, lead_time, order, demand[:, t:t + 1], holding_cost, penalty_cost,
            order_cost, lost_sales)
        if t >= warmup:
            cost = cost + day_cost
            stats = stats + day_stats
    return RolloutResult(cost.sum(dim=1) / (horizon - warmup), cost, stats)


def lost_sales_dp(demand_pmf, lead_time, holding_cost, penalty_cost, order_cost, max_position,
                  tolerance, max_iterations, initial_value=None, review_period=1):
    """Reference of ``torch.ops.deepstock.lost_sales_dp`` in plain Python loops over the same
    states, orders, days and demands in the same order (so in the same float64 sums): for tiny
    instances only. Returns (bounds [2] per day, policy [M + 1] * L, relative_value, iterations).
    """
    pmf = demand_pmf.tolist()
    side, lead, period = max_position + 1, lead_time, review_period
    shape = [side] * lead
    value = (initial_value.to(torch.float64).reshape(-1).tolist() if initial_value is not None
             else [0.0] * side ** lead)
    cost_of_stock = [sum(p * (holding_cost * (y - d) if d < y else penalty_cost * (d - y))
                         for d, p in enumerate(pmf)) for y in range(side)]

    def decode(index):
        parts = [0] * lead
        for i in range(lead - 1, -1, -1):
            parts[i], index = index % side, index // side
        return parts

    def arriving(parts, k, q):
        return parts[k] if k < lead else (q if k == lead else 0)

    def expected_epoch(parts, q, v):
        tail, scale = 0, 1
        for i in range(lead - 1, 0, -1):
            tail += arriving(parts, period + i, q) * scale
            scale *= side
        cost, total = order_cost * q, 0.0
        dist = {parts[0]: 1.0}
        for k in range(period):
            a = arriving(parts, k + 1, q)
            last = k + 1 == period
            nxt = {}
            for x in sorted(dist):
                px = dist[x]
                if px == 0.0:
                    continue
                cost += px * cost_of_stock[x]
                below = 0.0
                for d in range(min(x, len(pmf))):
                    below += pmf[d]
                    if last:
                        total += px * pmf[d] * v[(x - d + a) * scale + tail]
                    else:
                        nxt[x - d + a] = nxt.get(x - d + a, 0.0) + px * pmf[d]
                if last:
                    total += px * (1.0 - below) * v[a * scale + tail]
                else:
                    nxt[a] = nxt.get(a, 0.0) + px * (1.0 - below)
            dist = nxt
        return cost + total

    states = [s for s in range(side ** lead) if sum(decode(s)) <= max_position]
    policy = [-1] * side ** lead
    lower, upper, iteration = -math.inf, math.inf, 0
    while iteration < max_iterations and not (math.isfinite(lower) and math.isfinite(upper)
                                              and upper - lower <= tolerance * period):
        iteration += 1
        nxt = list(value)
        diffs = []
        for s in states:
            parts = decode(s)
            best, arg = expected_epoch(parts, 0, value), 0
            for q in range(1, max_position - sum(parts) + 1):
                v = expected_epoch(parts, q, value)
                if v < best:
                    best, arg = v, q
            nxt[s], policy[s] = best, arg
            diffs.append(best - value[s])
        lower, upper = min(diffs), max(diffs)
        for s in states:
            value[s] = nxt[s] - nxt[0]
    bounds = torch.tensor([lower / period, upper / period], dtype=torch.float64)
    return (bounds, torch.tensor(policy).reshape(shape),
            torch.tensor(value, dtype=torch.float64).reshape(shape), torch.tensor(iteration))
