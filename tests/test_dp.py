"""The lost-sales dynamic program against the published Zipkin (2008) optima and simulation."""

from __future__ import annotations

import math

import pytest
import torch

from deepstock_fast import optimum

PUBLISHED = optimum.zipkin_published()
PMF = optimum.poisson_pmf(5.0)


def test_published_table_is_complete():
    assert sorted(PUBLISHED) == [(L, p) for L in (1, 2, 3, 4) for p in (4, 9, 19, 39)]


# L <= 3 solve in about a second each here; bench/zipkin.py solves all 16 (L = 4 included).
@pytest.mark.parametrize("lead_time,penalty", [k for k in PUBLISHED if k[0] <= 3])
def test_reproduces_zipkin(lead_time, penalty):
    sol = optimum.solve_lost_sales(PMF, lead_time, 1.0, penalty)
    assert sol.converged and sol.bounds[0] <= sol.bounds[1] <= sol.bounds[0] + 1e-7
    # Published to two decimals.
    assert abs(sol.average_cost - PUBLISHED[lead_time, penalty]) <= 0.005 + 1e-9
    # The bound on the inventory position does not bind: no order reaches it.
    position = sum(torch.meshgrid(*[torch.arange(sol.max_position + 1)] * lead_time,
                                  indexing="ij"))
    ordering = sol.policy > 0
    assert (position[ordering] + sol.policy[ordering]).max() < sol.max_position


def test_larger_max_position_changes_nothing():
    a = optimum.solve_lost_sales(PMF, 2, 1.0, 19.0)
    b = optimum.solve_lost_sales(PMF, 2, 1.0, 19.0, max_position=a.max_position + 10)
    assert abs(a.average_cost - b.average_cost) < 1e-6


def test_policy_simulated_with_inventory_step_matches_dp_cost():
    sol = optimum.solve_lost_sales(PMF, 2, 1.0, 9.0)
    g = torch.Generator().manual_seed(0)
    demand = torch.poisson(torch.full((2000, 600), 5.0, dtype=torch.float64), generator=g)
    per_path = optimum.simulate_policy(sol, demand, 1.0, 9.0, warmup=100)
    stderr = per_path.std() / per_path.numel() ** 0.5
    assert abs(per_path.mean() - sol.average_cost) < 4 * stderr


def test_zero_lead_time_like_closed_form_newsvendor_with_order_cost():
    # With h = p = 0 and a unit order cost, never ordering is optimal and costs nothing.
    sol = optimum.solve_lost_sales(PMF, 1, 0.0, 0.0, order_cost=1.0)
    assert sol.average_cost == pytest.approx(0.0, abs=1e-9)
    assert int(sol.policy[sol.policy >= 0].max()) == 0


def test_interrupt_and_resume_give_the_same_answer():
    whole = optimum.solve_lost_sales(PMF, 2, 1.0, 39.0)
    calls = []

    def stop_early(iterations, lower, upper):
        calls.append(iterations)
        if len(calls) == 1:
            raise KeyboardInterrupt

    partial = optimum.solve_lost_sales(PMF, 2, 1.0, 39.0, chunk=5, progress=stop_early)
    assert not partial.converged and partial.iterations == 5
    resumed = optimum.solve_lost_sales(PMF, 2, 1.0, 39.0, resume=partial)
    assert resumed.converged
    assert abs(resumed.average_cost - whole.average_cost) < 1e-6


def test_opcheck():
    torch.library.opcheck(torch.ops.deepstock.lost_sales_dp.default,
                          (PMF, 1, 1.0, 4.0, 0.0, 20, 1e-6, 50, None))


BAD = {
    "pmf does not sum to 1": (dict(demand_pmf=torch.tensor([0.5, 0.4], dtype=torch.float64)), "must sum to 1"),
    "negative pmf": (dict(demand_pmf=torch.tensor([1.5, -0.5], dtype=torch.float64)), "non-negative"),
    "float32 pmf": (dict(demand_pmf=PMF.float()), "float64"),
    "2-D pmf": (dict(demand_pmf=PMF.view(1, -1)), "1-D"),
    "lead time 0": (dict(lead_time=0), "lead_time must lie in 1..16"),
    "negative cost": (dict(penalty_cost=-1.0), "penalty_cost must be non-negative"),
    "unbounded state": (dict(lead_time=8, max_position=200), "states exceed the limit"),
    "zero tolerance": (dict(tolerance=0.0), "tolerance must be > 0"),
    # NaN stopped after one iteration with bounds [inf, -inf]; 1e308 "converged" to -1e308.
    "NaN initial value": (dict(initial_value=torch.full((21,), math.nan, dtype=torch.float64)),
                          "initial_value must be finite"),
    "huge initial value": (dict(initial_value=torch.full((21,), 1e308, dtype=torch.float64)),
                           "initial_value must be finite with magnitude"),
    "int initial value": (dict(initial_value=torch.zeros(21, dtype=torch.int64)),
                          "initial_value must be float32 or float64"),
    "meta initial value": (dict(initial_value=torch.zeros(21, dtype=torch.float64, device="meta")),
                           "initial_value is on meta but demand_pmf is on cpu"),
    "overflowing costs": (dict(holding_cost=1e308), "overflowed.*holding_cost"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_inputs(case):
    change, message = BAD[case]
    args = dict(demand_pmf=PMF, lead_time=1, holding_cost=1.0, penalty_cost=4.0, order_cost=0.0,
                max_position=20, tolerance=1e-6, max_iterations=10, initial_value=None)
    args.update(change)
    with pytest.raises(RuntimeError, match=message):
        torch.ops.deepstock.lost_sales_dp(*args.values())


def test_resume_from_a_corrupted_solution_is_refused():
    partial = optimum.solve_lost_sales(PMF, 1, 1.0, 4.0, max_iterations=3)
    partial.relative_value = torch.full_like(partial.relative_value, math.nan)
    with pytest.raises(ValueError, match="resume.relative_value must be finite"):
        optimum.solve_lost_sales(PMF, 1, 1.0, 4.0, resume=partial)


def test_non_finite_bounds_never_count_as_converged():
    assert not optimum._converged((math.inf, -math.inf), 1e-7)
    assert not optimum._converged((math.nan, math.nan), 1e-7)
    assert optimum._converged((1.0, 1.0 + 1e-9), 1e-7)


@pytest.mark.parametrize("lead,error", [(2.7, ValueError), (None, TypeError), (0, ValueError)])
def test_solve_refuses_non_integral_lead_time(lead, error):
    with pytest.raises(error, match="lead_time must be"):
        optimum.solve_lost_sales(PMF, lead, 1.0, 4.0)


def test_poisson_pmf_rejects_bad_mean():
    with pytest.raises(ValueError, match="mean must be positive"):
        optimum.poisson_pmf(-1.0)


def test_myopic_policy_matches_brute_force_for_lead_time_one():
    # L = 1: the order q arriving tomorrow minimises E[h (z - D')^+ + p (D' - z)^+] with
    # z = (y - D)^+ + q, D and D' independent demands.
    h, p = 1.0, 9.0
    pol = optimum.lookahead_policy(PMF, 1, h, p, periods=1)
    d = torch.arange(PMF.numel(), dtype=torch.float64)
    for y in range(0, 15):
        best_q, best = None, float("inf")
        for q in range(0, pol.max_position - y + 1):
            z = (y - d).clamp(min=0) + q  # [D]
            period = (PMF.unsqueeze(0) * (h * (z.unsqueeze(1) - d).clamp(min=0)
                                         + p * (d - z.unsqueeze(1)).clamp(min=0))).sum(1)
            value = float((PMF * period).sum())
            if value < best - 1e-12:
                best_q, best = q, value
        assert int(pol.policy[y]) == best_q


def test_two_period_lookahead_improves_on_myopic_and_not_on_the_optimum():
    g = torch.Generator().manual_seed(3)
    demand = torch.poisson(torch.full((256, 1500), 5.0, dtype=torch.float64), generator=g)
    optimal = optimum.solve_lost_sales(PMF, 3, 1.0, 4.0).average_cost
    costs = [optimum.simulate_policy(optimum.lookahead_policy(PMF, 3, 1.0, 4.0, periods=k),
                                     demand, 1.0, 4.0, warmup=200).mean() for k in (1, 2)]
    assert costs[1] < costs[0]
    assert costs[1] > optimal - 0.03


@pytest.mark.parametrize("lead_time,review_period", [(1, 2), (2, 3)])
def test_review_period_policy_simulates_to_its_cost_and_beats_base_stock(lead_time, review_period):
    from deepstock_fast import baselines

    sol = optimum.solve_lost_sales(PMF, lead_time, 1.0, 9.0, review_period=review_period)
    assert sol.converged
    g = torch.Generator().manual_seed(lead_time)
    days = 120 * review_period * 10
    demand = torch.poisson(torch.full((1024, days), 5.0, dtype=torch.float64), generator=g)
    per_path = optimum.simulate_policy(sol, demand, 1.0, 9.0, warmup=120 * review_period)
    stderr = per_path.std() / per_path.numel() ** 0.5
    assert abs(per_path.mean() - sol.average_cost) < 4 * stderr
    kw = dict(holding_cost=1.0, penalty_cost=9.0, review_period=review_period,
              warmup=120 * review_period)
    policy, _ = baselines.fit("base_stock", demand[:256].unsqueeze(0), lead_time, **kw)
    base_stock = baselines.evaluate(policy, demand.unsqueeze(0), lead_time, **kw).average_cost
    assert sol.average_cost < float(base_stock)
