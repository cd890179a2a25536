"""Helpers shared by test modules (imported as ``from helpers import ...``; test modules never
import each other)."""

from __future__ import annotations

import contextlib
import functools
import os

import pytest
import torch
from hypothesis import HealthCheck, settings

import deepstock_fast  # noqa: F401  (registers torch.ops.deepstock)

#: Examples per fuzz test: ``DEEPSTOCK_FUZZ_EXAMPLES`` when set (bench/fuzz.py's long run),
#: else the test's own CI-sized count.
_FUZZ_EXAMPLES = int(os.environ.get("DEEPSTOCK_FUZZ_EXAMPLES", "0") or 0)


def fuzz_settings(ci_examples: int) -> settings:
    """Hypothesis settings for a fuzz test: ``ci_examples`` derandomized examples in CI (the
    same cases every run, bounded time), or ``DEEPSTOCK_FUZZ_EXAMPLES`` random ones."""
    chosen = settings(max_examples=_FUZZ_EXAMPLES or ci_examples, deadline=None,
                      derandomize=not _FUZZ_EXAMPLES, database=None,
                      suppress_health_check=list(HealthCheck))
    return _counting(chosen) if _FUZZ_LOG else chosen


#: bench/fuzz.py's case count: when set, every example a fuzz test runs appends a line
#: "<pytest test id>\t<passed|failed>" to this file.
_FUZZ_LOG = os.environ.get("DEEPSTOCK_FUZZ_LOG")


def _counting(chosen: settings):
    """``chosen`` as a decorator that also logs each example to ``DEEPSTOCK_FUZZ_LOG``, above or
    below ``@given`` (Hypothesis runs ``test.hypothesis.inner_test`` once per example)."""
    def count(fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            outcome = "failed"
            try:
                result = fn(*args, **kwargs)
                outcome = "passed"
                return result
            finally:
                test = os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" (", 1)[0]
                with open(_FUZZ_LOG, "a") as log:
                    log.write(f"{test}\t{outcome}\n")
        return run

    def apply(test):
        if hasattr(test, "hypothesis"):  # already @given
            test.hypothesis.inner_test = count(test.hypothesis.inner_test)
            return chosen(test)
        return chosen(count(test))

    return apply


@contextlib.contextmanager
def restored(registry: dict):
    """A registry (a dict filled by a ``register`` decorator) that a test may add to; its
    entries as they were come back afterwards."""
    saved = dict(registry)
    try:
        yield registry
    finally:
        registry.clear()
        registry.update(saved)


# ---- the devices to test on, random inputs for the ops, reference costs ------------------
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

def env_step_args(batch=129, max_lead=3, days=1, dtype=torch.float64, lost_sales=True,
                  accumulate=True, seed=0, device="cpu", per_env_costs=True):
    """The positional argument tuple of torch.ops.deepstock.env_step."""
    kw = step_inputs(batch=batch, max_lead=max_lead, days=days, dtype=dtype, seed=seed,
                     lost_sales=lost_sales, per_env_costs=per_env_costs)
    g = torch.Generator().manual_seed(seed + 1)
    exogenous = torch.rand(batch, 5, generator=g, dtype=dtype) * 3
    scale = torch.rand(batch, generator=g, dtype=dtype) * 4 + 0.5
    cost_total = torch.rand(batch, 3, generator=g, dtype=dtype) * 50
    stats_total = torch.rand(batch, 4, generator=g, dtype=dtype) * 50
    args = (*step_args(kw), exogenous, scale, cost_total, stats_total, accumulate)
    return tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in args)
