"""rollout: against the reference (a loop of reference steps), closed forms, opcheck."""

from __future__ import annotations

import re

import pytest
import torch

import deepstock_fast as ds
from deepstock_fast import reference

PARAMS = {
    "base_stock": lambda g, b: 5 + 25 * torch.rand(b, 1, generator=g, dtype=torch.float64),
    "capped_base_stock": lambda g, b: torch.cat(
        [5 + 25 * torch.rand(b, 1, generator=g, dtype=torch.float64),
         2 + 8 * torch.rand(b, 1, generator=g, dtype=torch.float64)], 1),
    "constant": lambda g, b: 8 * torch.rand(b, 1, generator=g, dtype=torch.float64),
    "s_S": lambda g, b: torch.cat(
        [torch.full((b, 1), 6.0, dtype=torch.float64),
         6 + 20 * torch.rand(b, 1, generator=g, dtype=torch.float64)], 1),
}


def make_rollout(policy, batch=37, horizon=40, max_lead=4, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    demand = torch.poisson(torch.full((batch, horizon), 5.0, dtype=torch.float64), generator=g)
    lead = (torch.arange(batch) % (max_lead + 1))[torch.randperm(batch, generator=g)]
    # Integer stock, pipeline and policy parameters keep the arithmetic exact, so days that end
    # at exactly zero stock (the kink) are ties in both implementations alike.
    kw = dict(
        on_hand=(torch.rand(batch, generator=g, dtype=torch.float64) * 10).round().to(dtype),
        pipeline=(torch.rand(batch, max_lead, generator=g, dtype=torch.float64) * 4).round().to(dtype),
        holding_cost=(torch.rand(batch, generator=g, dtype=torch.float64) + 0.5).to(dtype),
        penalty_cost=9.0,
        order_cost=0.25,
    )
    return demand.to(dtype), PARAMS[policy](g, batch).round().to(dtype), lead, kw


def assert_rollout_close(got, want, **tol):
    for name, g, w in zip(got._fields, got, want):
        torch.testing.assert_close(g, w, msg=lambda m: f"{name}: {m}", **tol)


@pytest.mark.parametrize("lost_sales", [True, False])
@pytest.mark.parametrize("review_period", [1, 2, 3])
@pytest.mark.parametrize("policy", list(ds.POLICIES))
def test_matches_reference(policy, review_period, lost_sales):
    demand, params, lead, kw = make_rollout(policy, seed=review_period)
    args = dict(kw, review_period=review_period, warmup=5, lost_sales=lost_sales)
    assert_rollout_close(ds.rollout(demand, policy, params, lead, **args),
                         reference.rollout(demand, policy, params, lead, **args))


@pytest.mark.parametrize("max_lead", [0, 1, 2, 3, 5, 8, 9, 17, 33, 64])
def test_every_pipeline_capacity(max_lead):
    demand, params, lead, kw = make_rollout("base_stock", batch=20, horizon=90, max_lead=max_lead)
    args = dict(kw, warmup=3)
    assert_rollout_close(ds.rollout(demand, "base_stock", params, lead, **args),
                         reference.rollout(demand, "base_stock", params, lead, **args))


def test_float32_matches_float64():
    demand, params, lead, kw = make_rollout("capped_base_stock", batch=200, horizon=60)
    want = ds.rollout(demand, "capped_base_stock", params, lead, **kw)
    kw32 = {k: v.float() if isinstance(v, torch.Tensor) else v for k, v in kw.items()}
    got = ds.rollout(demand.float(), "capped_base_stock", params.float(), lead, **kw32)
    # Rounding may tip a day that ends at exactly zero stock; averages agree closely.
    torch.testing.assert_close(got.average_cost.double(), want.average_cost, rtol=2e-3, atol=0)


def test_broadcast_params_time_major_demand_and_int32_lead():
    demand, _, lead, kw = make_rollout("capped_base_stock")
    params = torch.tensor([[20.0, 6.0]], dtype=torch.float64)
    time_major = demand.T.contiguous()
    got = ds.rollout(time_major.T, "capped_base_stock", params, lead.int(), **kw)
    want = reference.rollout(demand, "capped_base_stock", params, lead, **kw)
    assert_rollout_close(got, want)


def test_closed_form_backlog_constant_demand():
    # Backlog, lead 2, demand 5 every day, base stock S = 20 from an empty start: from day 2 on the
    # stock after arrivals is S - 2 * 5 = 10 and ends at 5: holding 5 per day, no shortage.
    demand = torch.full((3, 30), 5.0)
    r = ds.rollout(demand, "base_stock", torch.tensor([[20.0]]), 2, warmup=10, lost_sales=False,
                   holding_cost=1.0, penalty_cost=9.0)
    torch.testing.assert_close(r.average_cost, torch.full((3,), 5.0))
    torch.testing.assert_close(r.stats[0], torch.tensor([100.0, 0.0, 0.0, 100.0]))


def test_constant_order_lost_sales_closed_form():
    # Constant order 3 with lead 0 against demand 5: sells 3, loses 2 every day.
    r = ds.rollout(torch.full((2, 10), 5.0), "constant", torch.tensor([[3.0]]), 0,
                   penalty_cost=4.0, order_cost=1.0)
    torch.testing.assert_close(r.cost[0], torch.tensor([0.0, 80.0, 30.0]))
    torch.testing.assert_close(r.average_cost, torch.full((2,), 11.0))
    torch.testing.assert_close(r.stats[0], torch.tensor([30.0, 20.0, 10.0, 0.0]))


def test_opcheck():
    demand, params, lead, kw = make_rollout("s_S", batch=8, horizon=12, max_lead=2)
    h = kw["holding_cost"]
    p = torch.tensor([9.0], dtype=torch.float64)
    c = torch.tensor([0.5], dtype=torch.float64)
    torch.library.opcheck(torch.ops.deepstock.rollout.default,
                          (kw["on_hand"], kw["pipeline"], lead, demand, "s_S", params, 2, 3, h, p,
                           c, True))


def test_policy_names_agree_with_the_native_op():
    # ops.POLICIES is the list: the native op takes each with its columns, refuses others by the
    # same names, and the reference has each.
    demand = torch.full((2, 6), 3.0, dtype=torch.float64)
    for policy, columns in ds.POLICIES.items():
        params = torch.tensor([[1.0, 2.0][:len(columns)]], dtype=torch.float64)
        assert_rollout_close(ds.rollout(demand, policy, params, 1),
                             reference.rollout(demand, policy, params, 1))
    params = torch.tensor([[1.0]], dtype=torch.float64)
    with pytest.raises(RuntimeError, match=re.escape(f"policy must be one of "
                                                     f"{', '.join(ds.POLICIES)}; got 'nope'")):
        ds.rollout(demand, "nope", params, 1)
    with pytest.raises(ValueError, match=re.escape(f"policy must be one of "
                                                   f"{list(ds.POLICIES)}, got 'nope'")):
        reference.classical_order("nope", torch.zeros(2, dtype=torch.float64), params)
