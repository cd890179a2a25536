"""inventory_step: against the reference, against hand-worked cases, gradients, opcheck, compile."""

from __future__ import annotations

import math
import os
import pathlib
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import deepstock_fast as ds
from deepstock_fast import reference

from helpers import step_args, step_inputs

DIFFERENTIABLE = ("on_hand", "pipeline", "order", "holding_cost", "penalty_cost", "order_cost")


def assert_step_close(got, want, **tol):
    for name, g, w in zip(got._fields, got, want):
        torch.testing.assert_close(g, w, msg=lambda m: f"{name}: {m}", **tol)


@pytest.mark.parametrize("lost_sales", [True, False])
@pytest.mark.parametrize("days", [1, 2, 3])
@pytest.mark.parametrize("max_lead", [0, 1, 2, 3, 4, 5, 7])  # 0..4: sizes compiled in
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_reference(lost_sales, days, max_lead, dtype):
    for seed in range(3):
        kw = step_inputs(batch=257, max_lead=max_lead, days=days, dtype=dtype, seed=seed,
                         lost_sales=lost_sales, integer_demand=seed != 2)
        assert_step_close(ds.inventory_step(**kw), reference.inventory_step(**kw))


def test_hand_worked_lost_sales():
    # on-hand 5, pipeline [1, 2], lead 1, order 3, demand [6, 1], h=1, p=9, c=0.5.
    # Day 0: 1 arrives (6), demand 6 -> 0 left. Day 1: 2 + the order arrive (5), demand 1 -> 4.
    r = ds.inventory_step(torch.tensor([5.0]), torch.tensor([[1.0, 2.0]]), torch.tensor([1]),
                          torch.tensor([3.0]), torch.tensor([[6.0, 1.0]]), 1.0, 9.0, 0.5)
    assert r.next_on_hand.tolist() == [4.0]
    assert r.next_pipeline.tolist() == [[0.0, 0.0]]
    assert r.cost.tolist() == [[4.0, 0.0, 1.5]]
    assert r.stats.tolist() == [[7.0, 0.0, 0.0, 4.0]]


def test_hand_worked_backlog_and_late_order():
    # Backlog, on-hand -2 (2 backordered), lead 3 > P = 2: the order stays in the pipeline.
    # Day 0: 4 arrive (2), demand 3 -> -1 (1 backordered). Day 1: nothing, demand 1 -> -2.
    r = ds.inventory_step(torch.tensor([-2.0]), torch.tensor([[4.0, 0.0, 5.0]]),
                          torch.tensor([3]), torch.tensor([7.0]), torch.tensor([[3.0, 1.0]]),
                          1.0, 4.0, 0.0, lost_sales=False)
    assert r.next_on_hand.tolist() == [-2.0]
    assert r.next_pipeline.tolist() == [[5.0, 7.0, 0.0]]
    assert r.cost.tolist() == [[0.0, 12.0, 0.0]]  # 1 + 2 units backordered at the two day-ends
    assert r.stats.tolist() == [[2.0, 3.0, 2.0, 0.0]]


def test_zero_lead_time_order_serves_today():
    r = ds.inventory_step(torch.zeros(1), torch.zeros(1, 0), torch.tensor([0]), torch.tensor([5.0]),
                          torch.tensor([[5.0]]), 1.0, 9.0)
    assert r.cost.tolist() == [[0.0, 0.0, 0.0]] and r.stats.tolist() == [[5.0, 0.0, 0.0, 0.0]]


def test_closed_form_backlog_base_stock():
    # Backlog, lead 0, constant demand d, order up to S every day: end inventory S - d each day.
    S, d, h = 12.0, 5.0, 2.0
    r = ds.inventory_step(torch.tensor([3.0]), torch.zeros(1, 0), torch.tensor([0]),
                          torch.tensor([S - 3.0]), torch.tensor([[d]]), h, 9.0, lost_sales=False)
    assert r.cost[0, 0].item() == h * (S - d)


@pytest.mark.parametrize("lost_sales", [True, False])
@pytest.mark.parametrize("max_lead", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("dtype,index_dtype", [(torch.float32, torch.int64),
                                               (torch.float64, torch.int32)])
def test_vectorized_layout_matches_reference(lost_sales, max_lead, dtype, index_dtype):
    # One day per epoch, shared costs, contiguous demand: the CPU launcher's SIMD loops with
    # constant strides, over several blocks of 256 environments and a partial one.
    for seed in range(2):
        kw = step_inputs(batch=1000, max_lead=max_lead, days=1, dtype=dtype, seed=seed,
                         lost_sales=lost_sales, per_env_costs=False, index_dtype=index_dtype,
                         integer_demand=seed == 0)
        assert_step_close(ds.inventory_step(**kw), reference.inventory_step(**kw))


def test_baseline_loops_give_the_same_bits(tmp_path):
    # The SIMD loops are compiled for AVX2 + FMA and for the baseline ISA (no FMA contraction in
    # either): both must give the same outputs. The baseline runs in a subprocess.
    script = """
import os, sys, torch
import deepstock_fast as ds
sys.path.insert(0, os.environ["TESTS_DIR"])
from helpers import step_inputs
out = []
for max_lead in (1, 3, 4):
    kw = step_inputs(batch=1000, max_lead=max_lead, days=1, dtype=torch.float32,
                     per_env_costs=False)
    out.append(tuple(ds.inventory_step(**kw)))
torch.save({"simd": ds.build_info()["cpu_simd"], "out": out}, sys.argv[1])
"""
    runs = {}
    for name, extra in [("default", {}), ("baseline", {"DEEPSTOCK_NO_AVX2": "1"})]:
        path = tmp_path / f"{name}.pt"
        env = {**os.environ, "TESTS_DIR": str(pathlib.Path(__file__).parent), **extra}
        subprocess.run([sys.executable, "-c", script, str(path)], env=env, check=True)
        runs[name] = torch.load(path)
    assert runs["baseline"]["simd"] == "baseline"
    for got, want in zip(runs["baseline"]["out"], runs["default"]["out"]):
        for g, w in zip(got, want):
            assert torch.equal(g, w)


@pytest.mark.parametrize("field,value,message", [
    ("demand", -1.0, "demand must be non-negative"),
    ("order", math.nan, "order must be non-negative"),
    ("lead_time", 5, "lead_time must lie in 0..max_lead"),
    ("on_hand", -2.0, "non-negative under lost sales"),
])
def test_one_bad_environment_in_a_vectorized_block(field, value, message):
    # Environment 700 fails the SIMD screen of its block, which then takes the checked path.
    kw = step_inputs(batch=1000, max_lead=3, days=1, dtype=torch.float32, per_env_costs=False)
    kw[field] = kw[field].clone()
    kw[field][700] = value
    with pytest.raises(RuntimeError, match=message):
        ds.inventory_step(**kw)


def test_noncontiguous_inputs_and_broadcast_costs():
    kw = step_inputs(batch=50, max_lead=3, days=3, per_env_costs=False)
    want = reference.inventory_step(**kw)
    nc = dict(kw)
    nc["pipeline"] = kw["pipeline"].T.contiguous().T          # column-major
    nc["demand"] = kw["demand"].T.contiguous().T              # strided demand read in place
    nc["order"] = torch.stack([kw["order"], kw["order"]], 1)[:, 0]
    assert not nc["pipeline"].is_contiguous() and not nc["order"].is_contiguous()
    assert_step_close(ds.inventory_step(**nc), want)
    expanded = dict(kw, demand=torch.full((50, 1), 4.0, dtype=torch.float64).expand(50, 3))
    assert_step_close(ds.inventory_step(**expanded), reference.inventory_step(**expanded))


def test_empty_batch_and_int32_lead_time():
    kw = step_inputs(batch=0, max_lead=2)
    assert ds.inventory_step(**kw).cost.shape == (0, 3)
    kw = step_inputs(batch=33, max_lead=5, index_dtype=torch.int32)
    assert_step_close(ds.inventory_step(**kw), reference.inventory_step(**kw))


@settings(max_examples=150, deadline=None)
@given(
    batch=st.integers(1, 9),
    max_lead=st.integers(0, 6),
    days=st.integers(1, 5),
    lost_sales=st.booleans(),
    integer_demand=st.booleans(),
    per_env_costs=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_fuzz_against_reference(batch, max_lead, days, lost_sales, integer_demand, per_env_costs,
                                seed):
    kw = step_inputs(batch, max_lead, days, seed=seed, lost_sales=lost_sales,
                     integer_demand=integer_demand, per_env_costs=per_env_costs)
    assert_step_close(ds.inventory_step(**kw), reference.inventory_step(**kw))


def _differentiable_fn(kw, op):
    def fn(*tensors):
        args = dict(kw, **dict(zip(DIFFERENTIABLE, tensors)))
        out = op(**args)
        return out.next_on_hand, out.next_pipeline, out.cost
    return fn


@pytest.mark.parametrize("lost_sales", [True, False])
@pytest.mark.parametrize("per_env_costs", [True, False])
@pytest.mark.parametrize("max_lead,days", [(0, 1), (1, 1), (3, 2), (2, 3)])
def test_gradcheck(lost_sales, per_env_costs, max_lead, days):
    kw = step_inputs(batch=12, max_lead=max_lead, days=days, lost_sales=lost_sales,
                     integer_demand=False, per_env_costs=per_env_costs, seed=7)
    # Finite differences step both ways: keep orders, stock and pipeline away from 0.
    for n in ("order", "on_hand", "pipeline"):
        kw[n] = kw[n].abs() + 0.5
    inputs = [kw[n].clone().requires_grad_() for n in DIFFERENTIABLE]
    assert torch.autograd.gradcheck(_differentiable_fn(kw, ds.inventory_step), inputs)


@pytest.mark.parametrize("lost_sales", [True, False])
@pytest.mark.parametrize("days", [2, 70])  # 70 > 64: the backward replays the days in chunks
def test_backward_matches_reference_autograd(lost_sales, days):
    kw = step_inputs(batch=40, max_lead=5, days=days, lost_sales=lost_sales, seed=3)
    grads = []
    for op in (ds.inventory_step, reference.inventory_step):
        inputs = [kw[n].clone().requires_grad_() for n in DIFFERENTIABLE]
        outs = _differentiable_fn(kw, op)(*inputs)
        weights = [torch.randn(o.shape, generator=torch.Generator().manual_seed(i),
                               dtype=o.dtype) for i, o in enumerate(outs)]
        loss = sum((w * o).sum() for w, o in zip(weights, outs))
        grads.append(torch.autograd.grad(loss, inputs))
    for name, g, w in zip(DIFFERENTIABLE, *grads):
        torch.testing.assert_close(g, w, msg=lambda m: f"grad {name}: {m}")


@pytest.mark.parametrize("lost_sales", [True, False])
@pytest.mark.parametrize("per_env_costs", [True, False])
def test_opcheck(lost_sales, per_env_costs):
    kw = step_inputs(batch=16, max_lead=3, days=2, lost_sales=lost_sales,
                     per_env_costs=per_env_costs)
    for n in DIFFERENTIABLE:
        kw[n] = kw[n].requires_grad_()
    torch.library.opcheck(torch.ops.deepstock.inventory_step.default, step_args(kw))
    kw32 = step_inputs(batch=16, max_lead=3, days=2, dtype=torch.float32, lost_sales=lost_sales)
    torch.library.opcheck(torch.ops.deepstock.inventory_step.default, step_args(kw32))


def _pathwise_cost(step, project, base_stock, demand, lead_time, max_lead, lost_sales):
    """Average cost of a base-stock policy over T = demand.shape[1] epochs, differentiable."""
    batch = demand.shape[0]
    on_hand = torch.full((batch,), 5.0, dtype=demand.dtype)
    pipeline = demand.new_zeros(batch, max_lead)
    total = demand.new_zeros(())
    for t in range(demand.shape[1]):
        order = project(base_stock, on_hand + pipeline.sum(1), torch.tensor([30.0], dtype=demand.dtype))
        on_hand, pipeline, cost, _ = step(on_hand, pipeline, lead_time, order, demand[:, t:t + 1],
                                          1.0, 9.0, 0.1, lost_sales)
        total = total + cost.sum()
    return total / demand.numel()


@pytest.mark.parametrize("lost_sales", [True, False])
def test_long_unrolled_pathwise_gradient(lost_sales):
    g = torch.Generator().manual_seed(11)
    batch, horizon, max_lead = 64, 100, 3
    demand = torch.poisson(torch.full((batch, horizon), 5.0, dtype=torch.float64), generator=g)
    lead = torch.arange(batch) % (max_lead + 1)
    base = 8 + 10 * torch.rand(batch, dtype=torch.float64, generator=g)
    results = []
    for step, project in ((ds.inventory_step, ds.base_stock_order),
                          (reference.inventory_step, reference.base_stock_order)):
        s = base.clone().requires_grad_()
        loss = _pathwise_cost(step, project, s, demand, lead, max_lead, lost_sales)
        results.append((loss.detach(), torch.autograd.grad(loss, s)[0]))
    (loss, grad), (ref_loss, ref_grad) = results
    torch.testing.assert_close(loss, ref_loss)
    torch.testing.assert_close(grad, ref_grad)
    assert grad.abs().sum() > 0


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compile_fullgraph_loop(backend):
    torch._dynamo.reset()
    kw = step_inputs(batch=32, max_lead=2, days=1, dtype=torch.float32)
    demand = torch.poisson(torch.full((32, 6), 5.0))

    def run(on_hand, pipeline, target):
        total = on_hand.new_zeros(())
        for t in range(6):
            ip = on_hand + pipeline.sum(1)
            order = torch.ops.deepstock.base_stock_order(target, ip, torch.tensor([50.0]))
            on_hand, pipeline, cost, _ = torch.ops.deepstock.inventory_step(
                on_hand, pipeline, kw["lead_time"], order, demand[:, t:t + 1],
                kw["holding_cost"], kw["penalty_cost"], kw["order_cost"], True)
            total = total + cost.sum()
        return total

    compiled = torch.compile(run, fullgraph=True, backend=backend)
    target = torch.full((32,), 12.0, requires_grad=True)
    want = run(kw["on_hand"], kw["pipeline"], target)
    got = compiled(kw["on_hand"], kw["pipeline"], target)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(torch.autograd.grad(got, target)[0],
                               torch.autograd.grad(want, target)[0])


@pytest.mark.parametrize("lost_sales", [True, False])
def test_opcheck_backward_op(lost_sales):
    kw = step_inputs(batch=16, max_lead=3, days=2, lost_sales=lost_sales, per_env_costs=False)
    g = torch.Generator().manual_seed(5)
    grads = (torch.randn(16, generator=g, dtype=torch.float64),
             torch.randn(16, 3, generator=g, dtype=torch.float64),
             torch.randn(16, 3, generator=g, dtype=torch.float64))
    torch.library.opcheck(torch.ops.deepstock.inventory_step_backward.default,
                          grads + step_args(kw))
