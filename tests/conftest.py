"""Shared helpers: random inputs for the ops, the devices to test on."""

from __future__ import annotations

import pytest
import torch

import deepstock_fast  # noqa: F401  (registers torch.ops.deepstock)

_built_with_cuda = deepstock_fast.build_info()["cuda_kernels"]
CUDA = torch.cuda.is_available() and _built_with_cuda
requires_cuda = pytest.mark.skipif(
    not CUDA,
    reason="no CUDA GPU on this machine" if _built_with_cuda
    else "the extension was built without CUDA kernels (CPU build of torch)")


def step_inputs(batch=64, max_lead=4, days=2, *, dtype=torch.float64, device="cpu", seed=0,
                lost_sales=True, integer_demand=True, per_env_costs=True, index_dtype=torch.int64):
    """Random arguments of inventory_step as a dict, with every lead time 0..max_lead present.

    Orders range from 0 to far above demand; a quarter of the demand rows are all zero.
    """
    g = torch.Generator().manual_seed(seed)
    kw = dict(dtype=dtype)
    lead = torch.arange(batch) % (max_lead + 1)
    lead = lead[torch.randperm(batch, generator=g)].to(index_dtype)
    on_hand = torch.rand(batch, generator=g, **kw) * 15
    if not lost_sales:
        on_hand = on_hand - 5  # some environments start with backorders
    pipeline = torch.rand(batch, max_lead, generator=g, **kw) * 8
    pipeline = pipeline * (torch.rand(batch, max_lead, generator=g) < 0.7)
    order = torch.rand(batch, generator=g, **kw) * 12
    order = torch.where(torch.rand(batch, generator=g) < 0.15, torch.zeros_like(order), order)
    order = torch.where(torch.rand(batch, generator=g) < 0.1, order * 20, order)
    if integer_demand:
        demand = torch.poisson(torch.full((batch, days), 5.0, **kw), generator=g)
    else:
        demand = torch.rand(batch, days, generator=g, **kw) * 10
    demand = demand * (torch.rand(batch, 1, generator=g) > 0.25)
    n = batch if per_env_costs else 1
    args = dict(
        on_hand=on_hand,
        pipeline=pipeline,
        lead_time=lead,
        order=order,
        demand=demand,
        holding_cost=torch.rand(n, generator=g, **kw) + 0.5,
        penalty_cost=torch.rand(n, generator=g, **kw) * 10 + 1,
        order_cost=torch.rand(n, generator=g, **kw),
        lost_sales=lost_sales,
    )
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in args.items()}


def step_args(kw):
    """The positional argument tuple of torch.ops.deepstock.inventory_step."""
    names = ("on_hand", "pipeline", "lead_time", "order", "demand", "holding_cost",
             "penalty_cost", "order_cost", "lost_sales")
    return tuple(kw[n] for n in names)


def best_constant_order_cost(test, seed: int, *, lead_time: int, penalty_cost: float,
                             warmup: int, train_days: int = 200) -> float:
    """Cost on the test episode of ``evaluation.evaluate(..., seed=seed)`` of the best
    constant-order policy, searched on 64 independent Poisson(5) paths."""
    from deepstock_fast import baselines, compare

    demand = compare.held_out_demand(test, seed).to(torch.float64)
    paths = torch.poisson(torch.full((1, 64, train_days), 5.0, dtype=torch.float64),
                          generator=torch.Generator().manual_seed(1))
    costs = dict(holding_cost=1.0, penalty_cost=penalty_cost, warmup=warmup)
    policy, _ = baselines.fit("constant", paths, lead_time, **costs)
    policy = baselines.ClassicalPolicy("constant", policy.params.expand(test.num_skus, -1))
    return float(baselines.evaluate(policy, demand, lead_time, **costs).average_cost.mean())
