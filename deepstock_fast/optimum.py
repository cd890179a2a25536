"""Exact optima: the lost-sales dynamic program (Zipkin 2008) on the native ``lost_sales_dp`` op.

The state before ordering is (y, o_1 .. o_{L-1}): on-hand after today's arrival and the orders
arriving in 1 .. L-1 periods; an order arrives L periods after it is placed; costs follow the
package's timing convention (h per unit left at the end of a period, p per unit of lost demand, c
per unit ordered). Relative value iteration stops when the span bounds on the optimal average
cost are within ``tolerance``; the work runs in chunks, so it shows progress, can be stopped, and
resumes from a returned solution.
"""

from __future__ import annotations

import csv
import math
import pathlib
import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from .envs import SimState, simulate
from .ops import check_count

ZIPKIN_CSV = pathlib.Path(__file__).resolve().parent / "data" / "zipkin2008_lost_sales_optimal.csv"


def zipkin_published() -> dict[tuple[int, int], float]:
    """Zipkin (2008) optimal average costs, Poisson(5) demand, h = 1: {(lead_time, penalty): cost}."""
    with ZIPKIN_CSV.open() as f:
        rows = csv.DictReader(line for line in f if not line.startswith("#"))
        return {(int(r["lead_time"]), int(r["penalty"])): float(r["optimal_cost"]) for r in rows}


def poisson_pmf(mean: float, tail: float = 1e-12) -> Tensor:
    """P(D = d) for d = 0 .. n-1, float64, with the mass beyond n-1 (< tail) put on n-1."""
    if not mean > 0 or not math.isfinite(mean):
        raise ValueError(f"mean must be positive and finite, got {mean}")
    probs, total, d = [], 0.0, 0
    term = math.exp(-mean)
    while True:
        probs.append(term)
        total += term
        d += 1
        if 1.0 - total < tail and d > mean:
            break
        term *= mean / d
    probs[-1] += 1.0 - total
    return torch.tensor(probs, dtype=torch.float64)


def _convolve(a: Tensor, b: Tensor) -> Tensor:
    """The distribution of the sum of two independent variables with pmfs a and b."""
    return torch.nn.functional.conv1d(a.view(1, 1, -1), b.flip(0).view(1, 1, -1),
                                      padding=b.numel() - 1).view(-1)


def default_max_position(demand_pmf: Tensor, lead_time: int, tail: float = 1e-6,
                         review_period: int = 1) -> int:
    """A bound on the inventory position: the (1 - tail) quantile of demand over L + P periods."""
    pmf = demand_pmf.to(torch.float64)
    total = pmf
    for _ in range(lead_time + review_period - 1):
        total = _convolve(total, pmf)
    cdf = total.cumsum(0)
    return int(torch.searchsorted(cdf, torch.tensor(1.0 - tail, dtype=torch.float64))) + 1


@dataclass
class LostSalesOptimum:
    """Result of :func:`solve_lost_sales`. ``policy`` and ``relative_value`` are indexed by the
    state (y, o_1, ..., o_{L-1}), shape [M + 1] * L; ``policy`` is -1 where y + sum(o) > M."""

    average_cost: float          # midpoint of the bounds
    bounds: tuple[float, float]  # lower and upper bound on the optimal average cost
    policy: Tensor               # int64 optimal order per state
    relative_value: Tensor       # float64 relative values (0 at the empty state)
    iterations: int
    max_position: int
    lead_time: int
    converged: bool
    review_period: int = 1

    def order(self, on_hand_after_arrival: Tensor, outstanding: Tensor) -> Tensor:
        """Optimal orders for states [B] and [B, L-1] (integer-valued), by table lookup."""
        index = torch.cat([on_hand_after_arrival.unsqueeze(1), outstanding], 1).long()
        if index.sum(1).max() > self.max_position:
            raise ValueError("a state's inventory position exceeds max_position "
                             f"{self.max_position}: solve with a larger max_position")
        flat = torch.zeros(index.shape[0], dtype=torch.long, device=index.device)
        for i in range(self.lead_time):
            flat = flat * (self.max_position + 1) + index[:, i]
        return self.policy.reshape(-1).to(index.device)[flat]


def _converged(bounds: tuple[float, float], tolerance: float) -> bool:
    """Odoni's bounds within the tolerance; never for non-finite or crossed bounds."""
    lower, upper = bounds
    return math.isfinite(lower) and math.isfinite(upper) and upper - lower <= tolerance


def solve_lost_sales(
    demand_pmf: Tensor,
    lead_time: int,
    holding_cost: float,
    penalty_cost: float,
    order_cost: float = 0.0,
    *,
    review_period: int = 1,
    max_position: int | None = None,
    tolerance: float = 1e-7,
    max_iterations: int = 100_000,
    chunk: int = 20,
    resume: LostSalesOptimum | None = None,
    progress: bool | Callable[[int, float, float], None] = False,
) -> LostSalesOptimum:
    """Optimal long-run average cost and policy of the lost-sales system with lead time >= 1.

    Args:
        demand_pmf: [n] float64, P(D = d) for d = 0 .. n-1 (e.g. :func:`poisson_pmf`).
        lead_time: L >= 1 periods between ordering and arrival.
        holding_cost, penalty_cost, order_cost: h, p, c >= 0.
        review_period: an order every P days (the state is taken on review days); costs are
            still reported per day.
        max_position: bound M on the inventory position after ordering (default: the 1 - 1e-6
            quantile of demand over L + P periods); the state space has (M + 1)^L entries.
        tolerance: stop when upper - lower bound on the average cost per day <= tolerance.
        chunk: iterations per native call; between calls progress is reported and Ctrl-C stops
            cleanly, returning the solution so far (``converged`` False), which ``resume`` accepts.
        progress: True prints to stderr; a callable gets (iterations, lower, upper).
    """
    lead_time = check_count(lead_time, "lead_time", 1)
    review_period = check_count(review_period, "review_period")
    if resume is not None and not bool(torch.isfinite(resume.relative_value).all()):
        raise ValueError("resume.relative_value must be finite (a solve that diverged or a "
                         "corrupted checkpoint)")
    if max_position is None:
        max_position = default_max_position(demand_pmf, lead_time, review_period=review_period)
    value = resume.relative_value if resume is not None else None
    done = resume.iterations if resume is not None else 0
    if resume is not None and (resume.max_position != max_position or resume.lead_time != lead_time):
        raise ValueError("resume must come from the same lead_time and max_position")
    report = progress if callable(progress) else None
    start = time.perf_counter()
    bounds = (-math.inf, math.inf)
    policy = None
    try:
        while done < max_iterations:
            b, policy, value, its = torch.ops.deepstock.lost_sales_dp(
                demand_pmf, lead_time, float(holding_cost), float(penalty_cost),
                float(order_cost), max_position, tolerance, min(chunk, max_iterations - done),
                value, review_period)
            done += int(its)
            bounds = (float(b[0]), float(b[1]))
            if report:
                report(done, *bounds)
            elif progress:
                print(f"\r  lost-sales DP L={lead_time} p={penalty_cost}: iteration {done}, "
                      f"cost in [{bounds[0]:.6f}, {bounds[1]:.6f}] "
                      f"({time.perf_counter() - start:.1f}s)", end="", file=sys.stderr)
            if _converged(bounds, tolerance):
                break
    except KeyboardInterrupt:
        if policy is None:
            raise
    finally:
        if progress is True:
            print(file=sys.stderr)
    return LostSalesOptimum(
        average_cost=0.5 * (bounds[0] + bounds[1]), bounds=bounds, policy=policy,
        relative_value=value, iterations=done, max_position=max_position, lead_time=lead_time,
        converged=_converged(bounds, tolerance), review_period=review_period)


def simulate_policy(optimum: LostSalesOptimum, demand: Tensor, holding_cost: float,
                    penalty_cost: float, order_cost: float = 0.0, warmup: int = 100) -> Tensor:
    """Average cost per day after warm-up of the DP's policy, simulated from the empty system.

    demand: [B, T] integer-valued demand paths; T and warmup multiples of the review period.
    Returns [B].
    """
    def lookup(state: SimState) -> Tensor:
        y = state.on_hand + state.pipeline[:, 0]  # on-hand after today's arrival
        return optimum.order(y, state.pipeline[:, 1:]).to(demand.dtype)

    return simulate(lookup, demand, optimum.lead_time, review_period=optimum.review_period,
                    warmup=warmup, holding_cost=holding_cost, penalty_cost=penalty_cost,
                    order_cost=order_cost).average_cost


@dataclass
class BacklogBaseStock:
    """Optimal base-stock level of the backlog system and its average cost per period."""

    level: float
    average_cost: float


def backlog_base_stock(lead_time: int, holding_cost: float, penalty_cost: float, *,
                       review_period: int = 1, demand_pmf: Tensor | None = None,
                       mean: float | None = None, std: float | None = None) -> BacklogBaseStock:
    """Closed form for backlog with lead time L, an order up to S every P periods, linear h, p.

    The order placed at t covers periods t + L .. t + L + P - 1, whose end-of-period net
    inventories are S - D_{L+1} .. S - D_{L+P}, D_k the demand over k periods. The average cost
    per period is (1/P) sum_j E[h (S - D_{L+j})^+ + p (D_{L+j} - S)^+], minimised where the
    average of the P distribution functions reaches the critical fractile p / (p + h); for P = 1
    that is the newsvendor fractile of D_{L+1} (the paper's mean + z_0.9 sigma benchmark).
    Give either ``demand_pmf`` (discrete demand per period; integer S) or ``mean`` and ``std``
    (Normal demand per period; real S). Ordering costs are not included.
    """
    if lead_time < 0 or holding_cost < 0 or penalty_cost < 0 or holding_cost + penalty_cost == 0:
        raise ValueError("need lead_time >= 0, holding_cost >= 0, penalty_cost >= 0, h + p > 0")
    if review_period < 1:
        raise ValueError(f"review_period must be >= 1, got {review_period}")
    fractile = penalty_cost / (penalty_cost + holding_cost)
    horizons = range(lead_time + 1, lead_time + review_period + 1)
    if demand_pmf is not None:
        pmf = demand_pmf.to(torch.float64)
        over = pmf
        for _ in range(lead_time):
            over = _convolve(over, pmf)
        dists = []  # demand over L + j periods, j = 1 .. P, padded to a common support
        for _ in horizons:
            dists.append(over)
            over = _convolve(over, pmf)
        size = dists[-1].numel()
        mix = torch.stack([torch.nn.functional.pad(q, (0, size - q.numel())) for q in dists]).mean(0)
        d = torch.arange(size, dtype=torch.float64)
        level = int(torch.searchsorted(mix.cumsum(0), torch.tensor(fractile, dtype=torch.float64)))
        cost = (mix * (holding_cost * (level - d).clamp(min=0)
                       + penalty_cost * (d - level).clamp(min=0))).sum()
        return BacklogBaseStock(float(level), float(cost))
    if mean is None or std is None or std <= 0:
        raise ValueError("give demand_pmf, or mean and a positive std (Normal demand)")
    loc = torch.tensor([k * mean for k in horizons], dtype=torch.float64)
    scale = torch.tensor([math.sqrt(k) * std for k in horizons], dtype=torch.float64)
    unit = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64),
                                      torch.tensor(1.0, dtype=torch.float64))
    lo, hi = float(loc[0] - 10 * scale[-1]), float(loc[-1] + 10 * scale[-1])
    for _ in range(200):  # bisection on the mean distribution function
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if unit.cdf((mid - loc) / scale).mean() < fractile else (lo, mid)
    level = torch.tensor(0.5 * (lo + hi), dtype=torch.float64)
    z = (level - loc) / scale
    shortfall = scale * (torch.exp(unit.log_prob(z)) - z * (1 - unit.cdf(z)))  # E(D - S)^+
    cost = (holding_cost * (level - loc + shortfall) + penalty_cost * shortfall).mean()
    return BacklogBaseStock(float(level), float(cost))


def lookahead_policy(demand_pmf: Tensor, lead_time: int, holding_cost: float,
                     penalty_cost: float, order_cost: float = 0.0, *, periods: int = 1,
                     max_position: int | None = None) -> LostSalesOptimum:
    """Myopic lost-sales policies as lookup tables: the order minimising the expected cost of the
    ``periods`` periods from the one the order arrives in (t + L .. t + L + periods - 1), with any
    later order inside that window chosen optimally and nothing after it counted.

    ``periods=1`` is the classical myopic policy (the cost of period t + L only). ``periods=2``
    looks one period further. Computed exactly as the first decision of the (L + periods)-period
    finite-horizon problem: that many Bellman backups from a zero value function. The returned
    ``average_cost`` is not the policy's cost; simulate it (:func:`simulate_policy`).
    """
    lead_time = check_count(lead_time, "lead_time", 1)
    periods = check_count(periods, "periods", 1)
    if max_position is None:
        max_position = default_max_position(demand_pmf, lead_time)
    _, policy, value, its = torch.ops.deepstock.lost_sales_dp(
        demand_pmf, lead_time, float(holding_cost), float(penalty_cost), float(order_cost),
        max_position, 1e-300, lead_time + periods, None)
    return LostSalesOptimum(average_cost=math.nan, bounds=(math.nan, math.nan), policy=policy,
                            relative_value=value, iterations=int(its), max_position=max_position,
                            lead_time=lead_time, converged=False)
