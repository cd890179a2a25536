"""env_step (InventoryEnv's fused step): equals the reference and the ops it fuses, opcheck,
not differentiable, bad input."""

from __future__ import annotations

import pytest
import torch

import deepstock_fast as ds
from deepstock_fast import reference

from helpers import env_step_args, step_inputs



@pytest.mark.parametrize("accumulate", [True, False])
@pytest.mark.parametrize("lost_sales", [True, False])
@pytest.mark.parametrize("max_lead,days", [(0, 1), (1, 1), (2, 1), (4, 1), (6, 1), (3, 2)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch,per_env_costs", [(129, True), (1000, False)],
                         ids=["per-SKU-costs", "shared-costs-blocks"])
def test_matches_reference_and_the_ops_it_fuses(max_lead, days, lost_sales, accumulate, dtype,
                                                batch, per_env_costs):
    # shared costs over 1000 SKUs: the CPU launcher's SIMD blocks with constant strides
    args = env_step_args(batch=batch, max_lead=max_lead, days=days, dtype=dtype,
                         lost_sales=lost_sales, accumulate=accumulate,
                         per_env_costs=per_env_costs)
    got = ds.env_step(*args)
    want = reference.env_step(*args)
    for name, g, w in zip(got._fields, got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=0, msg=lambda m: f"{name}: {m}")
    step = ds.inventory_step(*args[:9])
    for name in step._fields:  # the same kernels: bit for bit
        assert torch.equal(getattr(got, name), getattr(step, name)), name
    assert torch.equal(got.obs, ds.observation(step.next_on_hand, step.next_pipeline,
                                               *args[9:11]))
    cost_total, stats_total = args[11:13]
    assert torch.equal(got.cost_total, cost_total + step.cost if accumulate else cost_total)
    assert torch.equal(got.stats_total, stats_total + step.stats if accumulate else stats_total)
    assert got.cost_total.data_ptr() != cost_total.data_ptr()  # a new tensor, never the input


def test_opcheck():
    for dtype in (torch.float32, torch.float64):
        torch.library.opcheck(torch.ops.deepstock.env_step.default,
                              env_step_args(batch=16, dtype=dtype))


def test_not_differentiable():
    args = list(env_step_args(batch=8))
    args[3] = args[3].clone().requires_grad_()  # order
    out = ds.env_step(*args)
    with pytest.raises(RuntimeError, match="env_step is not differentiable"):
        out.reward.sum().backward()


@pytest.mark.parametrize("i,bad,message", [
    (3, -torch.ones(129, dtype=torch.float64), "order must be non-negative and finite"),
    (9, torch.zeros(128, 5, dtype=torch.float64), "env_step: exogenous must have shape"),
    (10, torch.ones(129, dtype=torch.float32), "env_step: scale has dtype Float"),
    (11, torch.zeros(129, 4, dtype=torch.float64), r"cost_total must have shape \[B, 3\]"),
    (12, torch.zeros(129, 3, dtype=torch.float64), r"stats_total must have shape \[B, 4\]"),
])
def test_bad_inputs_name_the_argument(i, bad, message):
    args = list(env_step_args())
    args[i] = bad
    with pytest.raises(RuntimeError, match=message):
        ds.env_step(*args)
