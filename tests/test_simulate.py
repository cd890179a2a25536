"""The functional unroll: equals the fused rollout for classical policies, gradients match the
reference's autograd, bad arguments are rejected."""

from __future__ import annotations

import pytest
import torch

import deepstock_fast as ds
from deepstock_fast import reference
from deepstock_fast.envs import simulate


def paths(batch=64, days=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.poisson(torch.full((batch, days), 5.0, dtype=torch.float64), generator=g)


@pytest.mark.parametrize("review_period", [1, 2, 3])
@pytest.mark.parametrize("lost_sales", [True, False])
def test_base_stock_policy_equals_fused_rollout(review_period, lost_sales):
    demand = paths()
    lead = torch.arange(64) % 4
    level = torch.full((64,), 22.0, dtype=torch.float64)
    kw = dict(review_period=review_period, warmup=6, holding_cost=1.0, penalty_cost=9.0,
              order_cost=0.5, lost_sales=lost_sales)
    got = simulate(lambda s: ds.base_stock_order(level, s.inventory_position), demand, lead, **kw)
    want = ds.rollout(demand, "base_stock", level.unsqueeze(1), lead, **kw)
    torch.testing.assert_close(got.average_cost, want.average_cost)
    torch.testing.assert_close(got.cost, want.cost)
    torch.testing.assert_close(got.stats, want.stats)


def test_pathwise_gradient_matches_reference_autograd():
    demand = paths(days=40)
    lead = torch.arange(64) % 3
    grads = []
    for step, project in ((ds.inventory_step, ds.base_stock_order),
                          (reference.inventory_step, reference.base_stock_order)):
        level = (12 + torch.linspace(0, 8, 64, dtype=torch.float64)).requires_grad_()
        r = simulate(lambda s: project(level, s.inventory_position, 40.0), demand, lead,
                     warmup=4, step=step)
        grads.append(torch.autograd.grad(r.average_cost.sum(), level)[0])
    torch.testing.assert_close(grads[0], grads[1])
    assert grads[0].abs().sum() > 0


def test_policy_sees_the_past_demand_only():
    demand = paths(batch=4, days=12)
    seen = []
    simulate(lambda s: seen.append(s.past_demand.shape[1]) or torch.zeros(4, dtype=torch.float64),
             demand, 1, review_period=3)
    assert seen == [0, 3, 6, 9]


@pytest.mark.parametrize("kw,message", [
    (dict(review_period=7), "multiple of review_period"),
    (dict(review_period=0), "multiple of review_period"),
    (dict(warmup=60), "warmup = 60"),
    (dict(review_period=2, warmup=3), "warmup = 3"),
])
def test_bad_arguments(kw, message):
    with pytest.raises(ValueError, match=message):
        simulate(lambda s: s.on_hand * 0, paths(days=60), 1, **kw)
