"""Backlog base-stock closed form (critical fractile over L + 1 periods) against simulation."""

from __future__ import annotations

import pytest
import torch

import deepstock_fast as ds
from deepstock_fast import optimum


def simulated_cost(demand, level, lead_time, review_period=1):
    # 48 warm-up days leave 352 counted days: whole review cycles for P = 1, 2 and 4.
    r = ds.rollout(demand, "base_stock", torch.tensor([[level]], dtype=torch.float64), lead_time,
                   review_period=review_period, warmup=48, lost_sales=False, holding_cost=1.0,
                   penalty_cost=9.0)
    return r.average_cost.mean(), r.average_cost.std() / r.average_cost.numel() ** 0.5


@pytest.mark.parametrize("lead_time", [0, 1, 3])
def test_poisson_closed_form_matches_simulation_and_is_best(lead_time):
    best = optimum.backlog_base_stock(lead_time, 1.0, 9.0, demand_pmf=optimum.poisson_pmf(5.0))
    g = torch.Generator().manual_seed(lead_time)
    demand = torch.poisson(torch.full((8000, 400), 5.0, dtype=torch.float64), generator=g)
    mean, stderr = simulated_cost(demand, best.level, lead_time)
    assert abs(mean - best.average_cost) < 4 * stderr
    for neighbour in (best.level - 2, best.level + 2):  # common random numbers
        assert simulated_cost(demand, neighbour, lead_time)[0] > mean


def test_normal_closed_form_matches_simulation():
    best = optimum.backlog_base_stock(1, 1.0, 9.0, mean=100.0, std=10.0)
    # The 0.9 critical fractile over two periods: 200 + 1.2816 * 10 * sqrt(2).
    assert best.level == pytest.approx(200 + 1.2815516 * 10 * 2 ** 0.5, abs=1e-3)
    g = torch.Generator().manual_seed(9)
    demand = (100 + 10 * torch.randn(8000, 400, dtype=torch.float64, generator=g)).clamp(min=0)
    mean, stderr = simulated_cost(demand, best.level, 1)
    assert abs(mean - best.average_cost) < 4 * stderr


@pytest.mark.parametrize("review_period,lead_time", [(2, 1), (4, 2)])
def test_periodic_review_closed_form_matches_simulation(review_period, lead_time):
    best = optimum.backlog_base_stock(lead_time, 1.0, 9.0, review_period=review_period,
                                      demand_pmf=optimum.poisson_pmf(5.0))
    g = torch.Generator().manual_seed(review_period)
    demand = torch.poisson(torch.full((8000, 400), 5.0, dtype=torch.float64), generator=g)
    mean, stderr = simulated_cost(demand, best.level, lead_time, review_period)
    assert abs(mean - best.average_cost) < 4 * stderr
    for neighbour in (best.level - 2, best.level + 2):
        assert simulated_cost(demand, neighbour, lead_time, review_period)[0] > mean
    normal = optimum.backlog_base_stock(lead_time, 1.0, 9.0, review_period=review_period,
                                        mean=100.0, std=10.0)
    demand = (100 + 10 * torch.randn(8000, 400, dtype=torch.float64, generator=g)).clamp(min=0)
    mean, stderr = simulated_cost(demand, normal.level, lead_time, review_period)
    assert abs(mean - normal.average_cost) < 4 * stderr


@pytest.mark.parametrize("kwargs,message", [
    (dict(lead_time=1, holding_cost=1.0, penalty_cost=9.0, review_period=0, mean=5.0, std=1.0),
     "review_period must be >= 1"),
    (dict(lead_time=-1, holding_cost=1.0, penalty_cost=9.0, mean=5.0, std=1.0), "lead_time >= 0"),
    (dict(lead_time=1, holding_cost=-1.0, penalty_cost=9.0, mean=5.0, std=1.0), "holding_cost >= 0"),
    (dict(lead_time=1, holding_cost=1.0, penalty_cost=9.0), "give demand_pmf"),
    (dict(lead_time=1, holding_cost=1.0, penalty_cost=9.0, mean=5.0, std=0.0), "positive std"),
])
def test_bad_inputs(kwargs, message):
    with pytest.raises(ValueError, match=message):
        optimum.backlog_base_stock(**kwargs)
