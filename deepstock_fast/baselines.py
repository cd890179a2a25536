"""Classical baselines: fit by vectorised search on the fused ``rollout`` op, evaluate with metrics.

Every candidate of every SKU is simulated on the same demand paths (common random numbers), in
batched ``rollout`` calls, on the device the demand lives on. Shapes: S SKUs, N demand paths per
SKU, T days, K candidates, n parameters of the policy (see ``deepstock_fast.POLICIES``).

    policy, costs = fit("base_stock", demand, lead_time=2, holding_cost=1.0, penalty_cost=9.0)
    metrics = evaluate(policy, test_demand, lead_time=2, holding_cost=1.0, penalty_cost=9.0)
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import Tensor

from .metrics import Metrics, business_metrics
from .ops import POLICIES, check_count, check_flag, rollout


@dataclass
class ClassicalPolicy:
    kind: str       # one of POLICIES
    params: Tensor  # [S, n]


def _paths(demand: Tensor) -> Tensor:
    """[S, T] or [S, N, T] -> [S, N, T]."""
    if demand.dim() == 2:
        return demand.unsqueeze(1)
    if demand.dim() != 3:
        raise ValueError(f"demand must have shape [S, T] or [S, N, T], got {tuple(demand.shape)}")
    return demand


def _per_sku(value, skus: int, like: Tensor) -> Tensor:
    t = torch.as_tensor(value, dtype=like.dtype, device=like.device).reshape(-1)
    if t.numel() not in (1, skus):
        raise ValueError(f"per-SKU parameters need 1 or S = {skus} values, got {t.numel()}")
    return t.expand(skus)


def _under_cap(kind: str, params: Tensor, max_order: float | None) -> tuple[str, Tensor]:
    """The same policy with every order also capped at ``max_order`` (an instance's cap), as
    one of the rollout's policies: base-stock becomes capped base-stock with cap max_order."""
    if max_order is None or max_order == float("inf"):
        return kind, params
    cap = torch.full_like(params[..., :1], float(max_order))
    if kind == "base_stock":
        return "capped_base_stock", torch.cat([params, cap], -1)
    if kind in ("capped_base_stock", "constant"):
        return kind, torch.cat([params[..., :-1], torch.minimum(params[..., -1:], cap)], -1)
    raise ValueError(f"max_order: a cap on the orders of {kind!r} cannot be simulated; use "
                     "base_stock, capped_base_stock or constant")


def _initial_state(on_hand, pipeline, skus: int, paths: int, max_lead: int, like: Tensor):
    """Initial on-hand [S, N] and pipeline [S, N, max_lead] (zero where not given; given ones may
    be [S] / [S, max_lead], one per SKU, or [S, N] / [S, N, max_lead], one per path)."""
    if on_hand is None:
        on_hand = like.new_zeros(skus, paths)
    if pipeline is None:
        pipeline = like.new_zeros(skus, paths, max_lead)
    on_hand = torch.as_tensor(on_hand, dtype=like.dtype, device=like.device)
    pipeline = torch.as_tensor(pipeline, dtype=like.dtype, device=like.device)
    if on_hand.dim() == 1:
        on_hand = on_hand.unsqueeze(1)
    if pipeline.dim() == 2:
        pipeline = pipeline.unsqueeze(1)
    if on_hand.shape[0] != skus or on_hand.shape[1] not in (1, paths):
        raise ValueError(f"on_hand must have shape [S] or [S, N] = [{skus}, {paths}], got "
                         f"{tuple(on_hand.shape)}")
    if pipeline.dim() != 3 or pipeline.shape[0] != skus or pipeline.shape[1] not in (1, paths):
        raise ValueError(f"pipeline must have shape [S, max_lead] or [S, N, max_lead] with "
                         f"S = {skus}, N = {paths}, got {tuple(pipeline.shape)}")
    return on_hand.expand(skus, paths), pipeline.expand(skus, paths, pipeline.shape[2])


def _lead_times(value, skus: int, like: Tensor) -> Tensor:
    """Lead times [S] int64 from one int or S of them; non-integral values raise (2.7 is not 2)."""
    if not isinstance(value, (Tensor, list, tuple)):
        value = check_count(value, "lead_time")
    t = torch.as_tensor(value, device=like.device)
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"lead_time must hold integers, got dtype {t.dtype}")
    if t.is_floating_point() and not bool((t == t.round()).all()):
        raise ValueError("lead_time must hold integers (got non-integral or non-finite values)")
    if t.numel() and bool((t < 0).any()):
        raise ValueError("lead_time must be >= 0")
    return _per_sku(t, skus, like).long()


def _simulate(kind, params, demand, lead_time, *, review_period, warmup, holding_cost,
              penalty_cost, order_cost, lost_sales, max_order=None, on_hand=None,
              pipeline=None, max_elements=1 << 25):
    """Rollout of params [S, K, n] on demand [S, N, T] -> average cost [S, K] (mean over the
    paths), cost totals [S, K, 3] and stats totals [S, K, 4] (summed over the paths)."""
    kind, params = _under_cap(kind, params, max_order)
    skus, paths, days = demand.shape
    k, n = params.shape[1:]
    lead = _lead_times(lead_time, skus, demand)
    h, p, c = (_per_sku(v, skus, demand) for v in (holding_cost, penalty_cost, order_cost))
    max_lead = int(lead.max()) if skus else 0
    if pipeline is not None:
        max_lead = max(max_lead, torch.as_tensor(pipeline).shape[-1])
    x0, pipe0 = _initial_state(on_hand, pipeline, skus, paths, max_lead, demand)
    rows_per_sku = k * paths
    chunk = max(1, max_elements // max(1, rows_per_sku * days))
    averages, costs, stats = [], [], []
    for lo in range(0, skus, chunk):
        hi = min(skus, lo + chunk)
        s = hi - lo
        # Row (sku, candidate, path): every candidate of a SKU sees the same paths.
        d = demand[lo:hi].unsqueeze(1).expand(s, k, paths, days).reshape(-1, days)
        rep = lambda x: x[lo:hi].reshape(s, 1, 1).expand(s, k, paths).reshape(-1)  # noqa: E731
        pr = params[lo:hi].unsqueeze(2).expand(s, k, paths, n).reshape(-1, n)
        x = x0[lo:hi].unsqueeze(1).expand(s, k, paths).reshape(-1)
        pipe = pipe0[lo:hi].unsqueeze(1).expand(s, k, paths, max_lead).reshape(len(x), max_lead)
        r = rollout(d, kind, pr, rep(lead), on_hand=x, pipeline=pipe,
                    review_period=review_period, warmup=warmup, holding_cost=rep(h),
                    penalty_cost=rep(p), order_cost=rep(c), lost_sales=lost_sales)
        averages.append(r.average_cost.view(s, k, paths).mean(2))
        costs.append(r.cost.view(s, k, paths, 3).sum(2))
        stats.append(r.stats.view(s, k, paths, 4).sum(2))
    return torch.cat(averages), torch.cat(costs), torch.cat(stats)


def default_grid(kind: str, demand: Tensor, lead_time, review_period: int = 1,
                 size: int = 64) -> Tensor:
    """Candidate parameters [S, K, n] per SKU, from its demand over lead time + review period.

    Levels run from 0 to the largest (L + P)-day demand seen, plus a margin; integer steps when
    demand is integer-valued and the range allows. Constant orders and caps run from 0 to 1.5 and
    2 times the mean demand per review period. Two-parameter policies use size/2 values of each
    parameter; the caps also include one that never binds.
    """
    demand = _paths(demand)
    skus = demand.shape[0]
    window = (_lead_times(lead_time, skus, demand).max().item() + review_period)
    sums = demand.unfold(2, min(window, demand.shape[2]), 1).sum(-1)  # [S, N, windows]
    top = sums.flatten(1).max(1).values * 1.25 + 1  # [S]
    integer = bool((demand == demand.round()).all())
    steps = torch.linspace(0, 1, size, dtype=demand.dtype, device=demand.device)
    levels = top.unsqueeze(1) * steps  # [S, size]
    if integer:
        levels = levels.round()
    per_review = demand.mean((1, 2)).unsqueeze(1) * review_period  # [S, 1]
    if kind == "base_stock":
        return levels.unsqueeze(2)
    if kind == "constant":
        return (1.5 * per_review * steps).unsqueeze(2)
    side = max(2, size // 2)
    coarse = levels[:, :: max(1, size // side)]
    if kind == "capped_base_stock":
        caps = 2 * per_review * torch.linspace(0, 1, side - 1, dtype=demand.dtype,
                                               device=demand.device)
        if integer:
            caps = caps.round()
        # and in effect none (100 x the largest level; the op takes finite caps only), so
        # that the search holds every coarse base-stock policy: pooled trajectories of
        # different demand levels may want none
        caps = torch.cat([caps.expand(skus, -1), 100 * top.unsqueeze(1)], 1)
        grid = torch.stack(torch.broadcast_tensors(coarse.unsqueeze(2), caps.unsqueeze(1)), -1)
        return grid.flatten(1, 2)
    if kind == "s_S":
        pairs = [(i, j) for i, j in itertools.product(range(coarse.shape[1]), repeat=2) if i <= j]
        i, j = (torch.tensor(v, device=demand.device) for v in zip(*pairs))
        return torch.stack([coarse[:, i], coarse[:, j]], -1)
    raise ValueError(f"kind must be one of {list(POLICIES)}, got {kind!r}")


def fit(kind: str, demand: Tensor, lead_time, *, holding_cost, penalty_cost, order_cost=0.0,
        lost_sales: bool = True, review_period: int = 1, warmup: int = 0,
        grid: Tensor | None = None, max_order: float | None = None, on_hand=None,
        pipeline=None) -> tuple[ClassicalPolicy, Tensor]:
    """Best parameters of a classical policy for each SKU by exhaustive search on a grid.

    Args:
        kind: one of ``deepstock_fast.POLICIES``.
        demand: [S, T] or [S, N, T] training demand paths (float; the device sets where it runs).
        lead_time, holding_cost, penalty_cost, order_cost: one value or [S] per SKU.
        grid: candidates [S, K, n] or [K, n] (default :func:`default_grid`).
        max_order: an instance's order cap, applied on top of the policy (None: no cap).
        on_hand, pipeline: the initial state, [S] / [S, max_lead] or per path [S, N] /
            [S, N, max_lead] (default: the empty system).

    Returns:
        the policy with params [S, n], and the search's average costs [S, K].
    """
    if kind not in POLICIES:
        raise ValueError(f"kind must be one of {list(POLICIES)}, got {kind!r}")
    check_flag(lost_sales, "lost_sales")
    demand = _paths(demand)
    if grid is None:
        grid = default_grid(kind, demand, lead_time, review_period)
    grid = grid.to(demand.dtype).to(demand.device)
    if grid.dim() == 2:
        grid = grid.unsqueeze(0).expand(demand.shape[0], *grid.shape)
    if grid.dim() != 3 or grid.shape[2] != len(POLICIES[kind]):
        raise ValueError(f"grid for {kind} must have shape [S, K, {len(POLICIES[kind])}] or "
                         f"[K, {len(POLICIES[kind])}], got {tuple(grid.shape)}")
    costs, _, _ = _simulate(kind, grid, demand, lead_time, review_period=review_period,
                            warmup=warmup, holding_cost=holding_cost,
                            penalty_cost=penalty_cost, order_cost=order_cost,
                            lost_sales=lost_sales, max_order=max_order, on_hand=on_hand,
                            pipeline=pipeline)
    best = costs.argmin(1)
    params = grid[torch.arange(grid.shape[0], device=grid.device), best]
    return ClassicalPolicy(kind, params), costs


def evaluate(policy: ClassicalPolicy, demand: Tensor, lead_time, *, holding_cost, penalty_cost,
             order_cost=0.0, lost_sales: bool = True, review_period: int = 1,
             warmup: int = 0, max_order: float | None = None, on_hand=None,
             pipeline=None) -> Metrics:
    """Cost and business metrics of a policy on demand paths [S, T] or [S, N, T], under the
    order cap ``max_order`` and from the initial state (``on_hand``, ``pipeline``) as in
    :func:`fit`."""
    demand = _paths(demand)
    cost, stats = totals(policy, demand, lead_time, holding_cost=holding_cost,
                         penalty_cost=penalty_cost, order_cost=order_cost,
                         lost_sales=lost_sales, review_period=review_period, warmup=warmup,
                         max_order=max_order, on_hand=on_hand, pipeline=pipeline)
    counted = demand[:, :, warmup:]
    return business_metrics(cost, stats, counted.sum((1, 2)),
                            counted.shape[1] * counted.shape[2])


def totals(policy: ClassicalPolicy, demand: Tensor, lead_time, *, holding_cost, penalty_cost,
           order_cost=0.0, lost_sales: bool = True, review_period: int = 1, warmup: int = 0,
           max_order: float | None = None, on_hand=None, pipeline=None
           ) -> tuple[Tensor, Tensor]:
    """The cost [S, 3] and stats [S, 4] totals of a policy after warm-up (summed over the
    paths), arguments as in :func:`evaluate`: what metrics of groups of SKUs are made of
    (:func:`deepstock_fast.metrics.aggregate`)."""
    check_flag(lost_sales, "lost_sales")
    _, cost, stats = _simulate(policy.kind, policy.params.unsqueeze(1), _paths(demand),
                               lead_time, review_period=review_period, warmup=warmup,
                               holding_cost=holding_cost, penalty_cost=penalty_cost,
                               order_cost=order_cost, lost_sales=lost_sales,
                               max_order=max_order, on_hand=on_hand, pipeline=pipeline)
    return cost[:, 0], stats[:, 0]
