"""Classical baselines: the grid search finds known optima; evaluate reports consistent metrics."""

from __future__ import annotations

import pytest
import torch

from deepstock_fast import baselines, optimum


def poisson_paths(means, paths, days, seed=0):
    g = torch.Generator().manual_seed(seed)
    rates = torch.tensor(means, dtype=torch.float64).view(-1, 1, 1).expand(-1, paths, days)
    return torch.poisson(rates.contiguous(), generator=g)


def test_base_stock_search_finds_closed_form_level_per_sku():
    means = [2.0, 5.0, 9.0]
    demand = poisson_paths(means, 64, 600)
    policy, costs = baselines.fit("base_stock", demand, 1, holding_cost=1.0, penalty_cost=9.0,
                                  lost_sales=False, warmup=50)
    want = [optimum.backlog_base_stock(1, 1.0, 9.0, demand_pmf=optimum.poisson_pmf(m)).level
            for m in means]
    assert policy.params[:, 0].tolist() == want
    assert costs.shape[0] == 3


def test_evaluate_matches_search_and_metrics_are_consistent():
    demand = poisson_paths([5.0], 32, 500)
    policy, costs = baselines.fit("capped_base_stock", demand, 2, holding_cost=1.0,
                                  penalty_cost=9.0, warmup=50)
    m = baselines.evaluate(policy, demand, 2, holding_cost=1.0, penalty_cost=9.0, warmup=50)
    torch.testing.assert_close(m.average_cost, costs.min(1).values)
    assert 0 < m.fill_rate.item() <= 1 and 0 <= m.stockout_rate.item() <= 1
    assert m.turnover_days.item() > 0


def test_capped_base_stock_beats_base_stock_on_lost_sales_with_long_lead_time():
    demand = poisson_paths([5.0], 64, 800, seed=1)
    kw = dict(holding_cost=1.0, penalty_cost=4.0, warmup=100)
    _, base = baselines.fit("base_stock", demand, 4, **kw)
    grid = torch.tensor([[s, cap] for s in range(15, 40) for cap in range(4, 12)], dtype=torch.float64)
    _, capped = baselines.fit("capped_base_stock", demand, 4, grid=grid, **kw)
    dp = optimum.solve_lost_sales(optimum.poisson_pmf(5.0), 4, 1.0, 4.0).average_cost
    assert capped.min() < base.min()
    assert capped.min() > dp - 0.05  # nothing beats the optimum (up to sampling noise)


def test_every_kind_runs_with_its_default_grid():
    demand = poisson_paths([3.0, 6.0], 4, 200)
    for kind in ("base_stock", "capped_base_stock", "constant", "s_S"):
        policy, costs = baselines.fit(kind, demand, torch.tensor([0, 2]), holding_cost=1.0,
                                      penalty_cost=9.0, review_period=2)
        assert policy.params.shape[0] == 2 and torch.isfinite(costs).all()


def test_default_capped_grid_holds_every_coarse_base_stock_policy():
    # pooled paths of two demand levels: the best capped policy may be one whose cap never
    # binds, and its search must never lose to base-stock on the same levels
    demand = torch.cat([poisson_paths([2.0], 20, 60), poisson_paths([12.0], 20, 60)], 1)
    kw = dict(holding_cost=0.1, penalty_cost=0.9, lost_sales=False, review_period=2)
    grid = baselines.default_grid("capped_base_stock", demand, 1, review_period=2)
    loose = grid[0, :, 1] >= 100 * grid[0, :, 0].max() - 1e-9
    levels = grid[0, loose, 0]
    assert levels.numel() > 1 and torch.equal(levels, grid[0, :, 0].unique())
    _, capped = baselines.fit("capped_base_stock", demand, 1, **kw)
    _, base = baselines.fit("base_stock", demand, 1, grid=levels.view(-1, 1), **kw)
    assert float(capped.min()) <= float(base.min()) + 1e-12


@pytest.mark.parametrize("call,message", [
    (lambda d: baselines.fit("newsboy", d, 1, holding_cost=1.0, penalty_cost=9.0), "kind must be one of"),
    (lambda d: baselines.fit("base_stock", d, 1, holding_cost=1.0, penalty_cost=9.0,
                             grid=torch.ones(4, 2)), "grid for base_stock must have shape"),
    (lambda d: baselines.fit("base_stock", d[0, 0], 1, holding_cost=1.0, penalty_cost=9.0), "demand must have shape"),
    (lambda d: baselines.fit("base_stock", d, 1, holding_cost=torch.ones(3), penalty_cost=9.0), "per-SKU parameters"),
])
def test_bad_inputs(call, message):
    with pytest.raises(ValueError, match=message):
        call(poisson_paths([5.0, 6.0], 2, 50))


def test_reference_rows_fit_each_test_sku_when_test_skus_differ_from_training():
    # The paper's settings draw SKU parameters per instance size: a 12-SKU test instance holds
    # other SKUs than the 3-SKU training one, so the baselines must be searched on the test SKUs.
    from deepstock_fast import compare
    from deepstock_fast.envs import InstanceConfig
    instance = InstanceConfig.from_name("paper:setting=4").replace(num_skus=3)
    test = instance.replace(num_skus=12, horizon=200)
    rows = {r["policy"]: r["cost"] for r in compare.reference_rows(instance, test, seed=5,
                                                                    train_paths=32)}
    demand = compare.held_out_demand(test, 5).to(torch.float64).unsqueeze(1)
    _, in_sample = baselines.fit("base_stock", demand, test.lead_time, warmup=test.warmup,
                                 holding_cost=test.holding_cost, penalty_cost=test.penalty_cost,
                                 lost_sales=test.lost_sales, review_period=test.review_period)
    best_on_test = float(in_sample.min(1).values.mean())  # a lower bound: fitted on the test days
    assert best_on_test <= rows["best base-stock"] < 1.05 * best_on_test
