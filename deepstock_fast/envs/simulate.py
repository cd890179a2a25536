"""A functional, differentiable unroll of B environments over T days (pathwise / DS training).

``simulate`` calls the policy once per review epoch and ``inventory_step`` for the epoch's days;
autograd flows through both, so ``result.average_cost.mean().backward()`` gives the pathwise
gradient of the policy's parameters (HDPO-style). No Python loop over environments.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

from torch import Tensor

from ..ops import initial_state, inventory_step


class SimState(NamedTuple):
    """What a policy sees at the start of a review epoch."""

    on_hand: Tensor             # [B]
    pipeline: Tensor            # [B, max_lead]: pipeline[:, k] arrives in k days
    inventory_position: Tensor  # [B]
    lead_time: Tensor           # [B]
    day: int                    # index of the review day in the horizon
    past_demand: Tensor         # [B, day]: the demand seen so far (a view)
    obs: Tensor | None = None       # [B, n] normalised observation (from InventoryEnv)
    features: Tensor | None = None  # [B, m] Coeff features in demand units (from InventoryEnv)
    scale: Tensor | None = None     # [B] the observation's demand scale (from InventoryEnv)


class SimulationResult(NamedTuple):
    average_cost: Tensor  # [B] cost per day after warm-up (differentiable)
    cost: Tensor          # [B, 3] holding, shortage penalty, ordering, summed after warm-up
    stats: Tensor         # [B, 4] sold, short, stockout days, end-inventory sum after warm-up
    on_hand: Tensor       # [B] final state
    pipeline: Tensor      # [B, max_lead] final state


def simulate(policy: Callable[[SimState], Tensor], demand: Tensor, lead_time: Tensor | int, *,
             on_hand: Tensor | None = None, pipeline: Tensor | None = None,
             review_period: int = 1, warmup: int = 0, holding_cost=1.0, penalty_cost=9.0,
             order_cost=0.0, lost_sales: bool = True, max_order: float = math.inf,
             step: Callable = inventory_step,
             observe: Callable[[Tensor, Tensor, int], SimState] | None = None
             ) -> SimulationResult:
    """Unrolls ``policy`` over the T days of ``demand`` [B, T].

    Args:
        policy: maps a :class:`SimState` to orders [B] (>= 0; clipped to ``max_order``), e.g. a
            network followed by one of the projection ops.
        demand: [B, T]; T must be a multiple of ``review_period``.
        lead_time, on_hand, pipeline, holding_cost, penalty_cost, order_cost, lost_sales: as in
            ``deepstock_fast.rollout`` (defaults: empty system, max_lead = max lead time).
        warmup: days excluded from costs and stats; a multiple of ``review_period``, < T.
        step: the epoch transition; ``deepstock_fast.reference.inventory_step`` gives the same
            unroll in eager PyTorch (for checking or comparing).
        observe: maps (on_hand, pipeline, epoch) to the policy's :class:`SimState` (how
            ``InventoryEnv.simulate`` adds observations and features); default: the state alone.
    """
    batch, horizon = demand.shape
    if review_period < 1 or horizon % review_period:
        raise ValueError(f"demand's T = {horizon} days must be a multiple of review_period "
                         f"= {review_period} >= 1")
    if warmup < 0 or warmup % review_period or warmup >= horizon:
        raise ValueError(f"warmup = {warmup} must be a multiple of review_period in 0..T-1")
    lead_time, x, pipeline = initial_state(demand, lead_time, on_hand, pipeline)
    cost = demand.new_zeros(batch, 3)
    stats = demand.new_zeros(batch, 4)
    for day in range(0, horizon, review_period):
        state = (observe(x, pipeline, day // review_period) if observe else
                 SimState(x, pipeline, x + pipeline.sum(1), lead_time, day, demand[:, :day]))
        order = policy(state).clamp(max=max_order)
        x, pipeline, epoch_cost, epoch_stats = step(
            x, pipeline, lead_time, order, demand[:, day:day + review_period], holding_cost,
            penalty_cost, order_cost, lost_sales)
        if day >= warmup:
            cost = cost + epoch_cost
            stats = stats + epoch_stats
    return SimulationResult(cost.sum(1) / (horizon - warmup), cost, stats, x, pipeline)
