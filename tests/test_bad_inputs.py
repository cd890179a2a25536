"""Bad input gives an error that names the argument, never a crash, hang or wrong number."""

from __future__ import annotations

import math

import pytest
import torch

import deepstock_fast as ds

from helpers import step_inputs


def good():
    return step_inputs(batch=6, max_lead=3, days=2)


STEP_CASES = {
    "on_hand 2-D": (dict(on_hand=torch.zeros(6, 1, dtype=torch.float64)), "on_hand must have shape"),
    "pipeline rows": (dict(pipeline=torch.zeros(5, 3, dtype=torch.float64)), "pipeline must have shape"),
    "pipeline 1-D": (dict(pipeline=torch.zeros(6, dtype=torch.float64)), "pipeline must have shape"),
    "order shape": (dict(order=torch.zeros(7, dtype=torch.float64)), "order must have shape"),
    "demand shape": (dict(demand=torch.zeros(6, dtype=torch.float64)), "demand must have shape"),
    "P = 0": (dict(demand=torch.zeros(6, 0, dtype=torch.float64)), "at least one day"),
    "lead_time float": (dict(lead_time=torch.zeros(6, dtype=torch.float64)), "lead_time must be int32 or int64"),
    "lead_time shape": (dict(lead_time=torch.zeros(3, dtype=torch.int64)), "lead_time must have shape"),
    "order dtype": (dict(order=torch.zeros(6, dtype=torch.float32)), "order has dtype"),
    "int dtype": (dict(on_hand=torch.zeros(6, dtype=torch.int64)), "on_hand must be float32 or float64"),
    "half dtype": (dict(demand=torch.zeros(6, 2, dtype=torch.float16)), "demand must be float32 or float64"),
    "cost shape": (dict(holding_cost=torch.ones(4, dtype=torch.float64)), "holding_cost must have shape"),
    "cost 2-D": (dict(penalty_cost=torch.ones(6, 1, dtype=torch.float64)), "penalty_cost must have shape"),
    "negative order": (dict(order=-torch.ones(6, dtype=torch.float64)), "order must be non-negative"),
    "NaN order": (dict(order=torch.full((6,), math.nan, dtype=torch.float64)), "order must be non-negative"),
    "inf order": (dict(order=torch.full((6,), math.inf, dtype=torch.float64)), "order must be non-negative"),
    "negative demand": (dict(demand=-torch.ones(6, 2, dtype=torch.float64)), "demand must be non-negative"),
    "NaN demand": (dict(demand=torch.full((6, 2), math.nan, dtype=torch.float64)), "demand must be non-negative"),
    "lead > max": (dict(lead_time=torch.full((6,), 4)), "lead_time must lie in 0..max_lead"),
    "lead < 0": (dict(lead_time=torch.full((6,), -1)), "lead_time must lie in 0..max_lead"),
    "negative cost": (dict(penalty_cost=torch.tensor([-1.0], dtype=torch.float64)), "penalty_cost must be non-negative"),
    "NaN on_hand": (dict(on_hand=torch.full((6,), math.nan, dtype=torch.float64)), "on_hand must be finite"),
    "negative on_hand, lost sales": (dict(on_hand=-torch.ones(6, dtype=torch.float64)), "non-negative under lost sales"),
    "negative pipeline": (dict(pipeline=-torch.ones(6, 3, dtype=torch.float64)), "pipeline must be non-negative"),
    # One argument unlike the others is the one named, whichever is read first.
    "on_hand float32": (dict(on_hand=torch.zeros(6)), "on_hand has dtype Float but pipeline has Double"),
    "on_hand rows": (dict(on_hand=torch.zeros(5, dtype=torch.float64)), r"on_hand must have shape \[B\] = \[6\]"),
    "order_cost NaN": (dict(order_cost=torch.tensor([math.nan], dtype=torch.float64)), "invalid input values: order_cost must be"),
}


@pytest.mark.parametrize("case", STEP_CASES)
def test_inventory_step_rejects(case):
    change, message = STEP_CASES[case]
    kw = dict(good(), **change)
    with pytest.raises(RuntimeError, match=message):
        ds.inventory_step(**kw)


def test_backlog_accepts_negative_on_hand():
    kw = dict(good(), on_hand=-torch.ones(6, dtype=torch.float64), lost_sales=False)
    assert torch.isfinite(ds.inventory_step(**kw).cost).all()


def test_one_bad_environment_names_every_problem():
    kw = good()
    kw["order"][2] = -1.0
    kw["demand"][4, 1] = math.nan
    with pytest.raises(RuntimeError, match="order must be.*demand must be"):
        ds.inventory_step(**kw)


def test_mixed_devices():
    # Meta stands in for a second device here; CUDA/CPU mixing is tested in test_cuda.py.
    kw = dict(good(), order=torch.zeros(6, dtype=torch.float64, device="meta"))
    with pytest.raises(RuntimeError, match="order is on meta but on_hand is on cpu"):
        ds.inventory_step(**kw)


def test_backward_rejects_wrong_grad_shape():
    kw = good()
    with pytest.raises(RuntimeError, match="grad_cost must have shape"):
        torch.ops.deepstock.inventory_step_backward(
            torch.zeros(6, dtype=torch.float64), torch.zeros(6, 3, dtype=torch.float64),
            torch.zeros(6, 2, dtype=torch.float64), kw["on_hand"], kw["pipeline"],
            kw["lead_time"], kw["order"], kw["demand"], kw["holding_cost"], kw["penalty_cost"],
            kw["order_cost"], True)


PROJECTION_CASES = {
    "target 2-D": (lambda: ds.base_stock_order(torch.zeros(3, 1), torch.zeros(3)), "target must have shape"),
    "ip shape": (lambda: ds.base_stock_order(torch.zeros(3), torch.zeros(4)), "inventory_position must have shape"),
    "ip dtype": (lambda: ds.base_stock_order(torch.zeros(3), torch.zeros(3, dtype=torch.float64)), "inventory_position has dtype"),
    "negative cap": (lambda: ds.base_stock_order(torch.zeros(3), torch.zeros(3), -1.0), "max_order must be non-negative"),
    "NaN cap": (lambda: ds.coeff_order(torch.zeros(3, 2), torch.zeros(3, 2), math.nan), "max_order must be non-negative"),
    "cap shape": (lambda: ds.coeff_order(torch.zeros(3, 2), torch.zeros(3, 2), torch.ones(2)), "max_order must have shape"),
    "features shape": (lambda: ds.coeff_order(torch.zeros(3, 2), torch.zeros(3, 3)), r"features must have shape \[B, m\] with B = 3 \(of coeff\) and m = 2 \(coeff.size\(1\)\)"),
    "target rows": (lambda: ds.base_stock_order(torch.zeros(4), torch.zeros(3), torch.ones(3)), r"target must have shape \[B\] = \[3\]"),
    "target float64": (lambda: ds.base_stock_order(torch.zeros(3, dtype=torch.float64), torch.zeros(3)), "inventory_position has dtype Float but target has Double"),
    "target missing": (lambda: torch.ops.deepstock.base_stock_order(None, torch.zeros(3), torch.ones(1)), "base_stock_order: target is required"),
    "coeff 1-D": (lambda: ds.coeff_order(torch.zeros(3), torch.zeros(3)), "coeff must have shape"),
    "no features": (lambda: ds.coeff_base_stock_order(torch.zeros(3, 0), torch.zeros(3, 0), torch.zeros(3)), "m >= 1"),
}


@pytest.mark.parametrize("case", PROJECTION_CASES)
def test_projections_reject(case):
    call, message = PROJECTION_CASES[case]
    with pytest.raises(RuntimeError, match=message):
        call()


def rollout_call(**change):
    kw = dict(demand=torch.full((4, 10), 5.0), policy="base_stock", params=torch.tensor([[10.0]]),
              lead_time=torch.tensor([0, 1, 2, 1]))
    kw.update(change)
    return lambda: ds.rollout(kw.pop("demand"), kw.pop("policy"), kw.pop("params"),
                              kw.pop("lead_time"), **kw)


ROLLOUT_CASES = {
    "unknown policy": (rollout_call(policy="newsvendor"), "policy must be one of"),
    "params columns": (rollout_call(params=torch.tensor([[10.0, 2.0]])), r"params for policy base_stock must have shape \[B, 1\]"),
    "params rows": (rollout_call(params=torch.ones(3, 1)), r"params must have shape \[B or 1, n\] with B = 4"),
    "T < warmup": (rollout_call(warmup=12), "need T > warmup"),
    "T = warmup": (rollout_call(warmup=10), "need T > warmup"),
    "negative warmup": (rollout_call(warmup=-1), "warmup must be >= 0"),
    "P = 0": (rollout_call(review_period=0), "review_period must be >= 1"),
    "negative demand": (rollout_call(demand=torch.full((4, 10), -1.0)), "demand must be non-negative"),
    "NaN demand": (rollout_call(demand=torch.full((4, 10), math.nan)), "demand must be non-negative"),
    "lead > max": (rollout_call(pipeline=torch.zeros(4, 1)), "lead_time must lie in 0..max_lead"),
    "max lead > 64": (rollout_call(pipeline=torch.zeros(4, 65)), "rollout supports up to 64"),
    "bad (s, S)": (rollout_call(policy="s_S", params=torch.tensor([[10.0, 5.0]])), "s <= S"),
    "negative constant": (rollout_call(policy="constant", params=torch.tensor([[-1.0]])), "params must be finite"),
    "NaN base stock": (rollout_call(params=torch.tensor([[math.nan]])), "params must be finite"),
    "negative cost": (rollout_call(holding_cost=-1.0), "must be non-negative and finite"),
    "demand 1-D": (rollout_call(demand=torch.ones(4)), "demand must have shape"),
}


@pytest.mark.parametrize("case", ROLLOUT_CASES)
def test_rollout_rejects(case):
    call, message = ROLLOUT_CASES[case]
    with pytest.raises(RuntimeError, match=message):
        call()


def backward_args(lead_time=None, **change):
    kw = dict(good(), **change)
    if lead_time is not None:
        kw["lead_time"] = torch.full((6,), lead_time, dtype=torch.int64)
    f64 = dict(dtype=torch.float64)
    return (torch.zeros(6, **f64), torch.zeros(6, 3, **f64), torch.zeros(6, 3, **f64),
            kw["on_hand"], kw["pipeline"], kw["lead_time"], kw["order"], kw["demand"],
            kw["holding_cost"], kw["penalty_cost"], kw["order_cost"], kw["lost_sales"])


@pytest.mark.parametrize("lead", [4, 10**6, 10**12, -1])
def test_backward_checks_lead_time(lead):
    # Out of 0..max_lead the backward read out of bounds (a crash at 1e6, garbage at max_lead + 1).
    with pytest.raises(RuntimeError, match="inventory_step_backward: invalid input values: "
                                           "lead_time must lie in 0..max_lead"):
        torch.ops.deepstock.inventory_step_backward(*backward_args(lead))


def test_backward_checks_values_like_the_forward():
    with pytest.raises(RuntimeError, match="inventory_step_backward: invalid input values: "
                                           "order must be non-negative.*demand must be"):
        torch.ops.deepstock.inventory_step_backward(*backward_args(
            order=-torch.ones(6, dtype=torch.float64),
            demand=torch.full((6, 2), math.nan, dtype=torch.float64)))


def test_lead_time_changed_after_the_forward():
    # A lead_time sharing memory with a NumPy array changed between forward and backward.
    kw = good()
    kw["order"].requires_grad_()
    lead = kw["lead_time"].numpy()
    cost = ds.inventory_step(**kw).cost
    lead[0] = 10**12
    with pytest.raises(RuntimeError, match="inventory_step_backward: .*lead_time must lie"):
        cost.sum().backward()


PROJECTION_BACKWARD_CASES = {
    "base_stock_order_backward": lambda g, x, cap: (g, x, x, cap),
    "coeff_order_backward": lambda g, x, cap: (g, x.unsqueeze(1), x.unsqueeze(1), cap),
    "coeff_base_stock_order_backward": lambda g, x, cap: (g, x.unsqueeze(1), x.unsqueeze(1), x, cap),
}


@pytest.mark.parametrize("op", PROJECTION_BACKWARD_CASES)
def test_projection_backward_checks(op):
    args = PROJECTION_BACKWARD_CASES[op]
    fn = getattr(torch.ops.deepstock, op)
    x = torch.ones(3)
    with pytest.raises(RuntimeError, match=f"deepstock.{op}: invalid input values: max_order"):
        fn(*args(x, x, torch.tensor([-1.0])))
    with pytest.raises(RuntimeError, match=rf"deepstock.{op}: grad_order must have shape \[B\] = \[3\]"):
        fn(*args(torch.ones(4), x, torch.ones(1)))
    # One meta tensor among CPU ones reaches the fake kernel, which returned uninitialised memory.
    with pytest.raises(RuntimeError, match=f"deepstock.{op}: grad_order is on meta but"):
        fn(*args(x.to("meta"), x, torch.ones(1)))


@pytest.mark.parametrize("op", ["observation", "env_step"])
@pytest.mark.parametrize("scale", [math.inf, 0.0, -1.0, math.nan])
def test_scale_must_be_positive_and_finite(op, scale):
    kw = good()
    extra = dict(exogenous=torch.zeros(6, 2, dtype=torch.float64),
                 scale=torch.full((6,), scale, dtype=torch.float64))
    if op == "observation":
        call = lambda: ds.observation(kw["on_hand"], kw["pipeline"], **extra)  # noqa: E731
    else:
        call = lambda: ds.env_step(**kw, **extra, cost_total=torch.zeros(6, 3, dtype=torch.float64),  # noqa: E731
                                   stats_total=torch.zeros(6, 4, dtype=torch.float64))
    with pytest.raises(RuntimeError, match=f"deepstock.{op}: invalid input values: scale must be"):
        call()


@pytest.mark.parametrize("value", [None, 0, 1, "yes"])
def test_lost_sales_must_be_bool(value):
    with pytest.raises(TypeError, match="lost_sales must be a bool"):
        ds.inventory_step(**dict(good(), lost_sales=value))
    with pytest.raises(TypeError, match="lost_sales must be a bool"):
        rollout_call(lost_sales=value)()


@pytest.mark.parametrize("lead,error", [(2.7, ValueError), (math.nan, ValueError),
                                        (True, TypeError), ("2", TypeError)])
def test_lead_time_number_must_be_an_integer(lead, error):
    # 2.7 ran as lead time 2.
    with pytest.raises(error, match="lead_time must be"):
        rollout_call(lead_time=lead)()
