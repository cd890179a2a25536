"""Business metrics from the ops' cost and stats totals, on hand-worked cases."""

from __future__ import annotations

import torch

import deepstock_fast as ds
from deepstock_fast.metrics import business_metrics


def test_constant_order_short_of_demand():
    # Lead 0, order 3 a day against demand 5: sells 3, loses 2, ends every day empty.
    demand = torch.full((2, 10), 5.0)
    r = ds.rollout(demand, "constant", torch.tensor([[3.0]]), 0, penalty_cost=4.0)
    m = business_metrics(r.cost, r.stats, demand.sum(1), 10)
    torch.testing.assert_close(m.average_cost, torch.full((2,), 8.0))
    torch.testing.assert_close(m.fill_rate, torch.full((2,), 0.6))
    torch.testing.assert_close(m.stockout_rate, torch.ones(2))
    torch.testing.assert_close(m.turnover_days, torch.zeros(2))


def test_base_stock_with_spare_stock():
    # Backlog, lead 0, order up to 8 against demand 5: ends every day with 3, never short.
    demand = torch.full((1, 20), 5.0)
    r = ds.rollout(demand, "base_stock", torch.tensor([[8.0]]), 0, lost_sales=False,
                   holding_cost=1.0)
    m = business_metrics(r.cost, r.stats, demand.sum(1), 20)
    torch.testing.assert_close(m.fill_rate, torch.ones(1))
    torch.testing.assert_close(m.stockout_rate, torch.zeros(1))
    torch.testing.assert_close(m.turnover_days, torch.full((1,), 3.0 / 5.0))
    torch.testing.assert_close(m.average_cost, torch.full((1,), 3.0))
