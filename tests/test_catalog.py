"""A catalog's sales history as an instance: SKUs and windows drawn per episode, time periods,
exogenous features that read no later day than they may, and no leak of the test period into
anything before testing."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pytest
import torch

from deepstock_fast import baselines, compare, synthetic
from deepstock_fast.envs import InstanceConfig, InventoryEnv
from deepstock_fast.envs.features import exogenous_features
from deepstock_fast.policies import PolicyConfig
from deepstock_fast.trainers import DSConfig, train_ds
from deepstock_fast.trainers.common import reference_observations, reward_scale

SKUS, DAYS = 40, 200
TEST_START = "2024-06-09"   # day 160


def write_rows(path, rows):
    table = pa.table({k: pa.array(v.astype("datetime64[D]") if v.dtype.kind == "M" else v)
                      for k, v in rows.items()})
    pcsv.write_csv(table, str(path))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The sales file, its attribute table, and a second sales file whose test period holds
    other demand and prices (everything before it the same)."""
    tmp = tmp_path_factory.mktemp("catalog")
    rows, attrs = synthetic.synthetic_sales(SKUS, DAYS, seed=5)
    sales = write_rows(tmp / "sales.csv", rows)
    attributes = write_rows(tmp / "attributes.csv", attrs)
    later = rows["date"] >= np.datetime64(TEST_START)
    other = dict(rows)
    other["quantity"] = np.where(later, rows["quantity"] * 3 + 1, rows["quantity"])
    other["price"] = np.where(later, rows["price"] * 2, rows["price"])
    changed = write_rows(tmp / "changed.csv", other)
    return sales, attributes, changed


def instance(sales, attributes, **fields) -> InstanceConfig:
    return InstanceConfig.from_name(f"sales:path={sales},attributes={attributes},"
                                    f"valid_start=2024-05-10,test_start={TEST_START},horizon=40")\
        .replace(**fields)


def test_training_windows_are_random_and_inside_the_training_period(files):
    c = instance(*files[:2], num_skus=16)
    process = c.demand_process("cpu")
    assert (process.valid_day, process.test_day) == (130, 160)
    env = InventoryEnv(c, seed=0)
    starts, skus = [], []
    for _ in range(5):
        e = env.sample_episode()
        assert int((e.start + c.days_per_episode).max()) <= process.valid_day
        assert len(set(e.sku.tolist())) == 16                      # a subset, no repeats
        assert torch.equal(e.lead_time, torch.as_tensor(
            process.attributes["lead_time"])[e.sku])                # each SKU's lead time
        index = e.start.view(-1, 1) + c.history_days + torch.arange(c.horizon)
        assert torch.equal(e.demand.double(), process.history[e.sku].gather(1, index).double())
        starts.append(e.start)
        skus.append(e.sku)
    assert not all(torch.equal(starts[0], s) for s in starts[1:])  # different every episode
    assert not all(torch.equal(skus[0], s) for s in skus[1:])


def test_validation_and_test_episodes_span_their_own_periods(files):
    c = instance(*files[:2])
    history = c.demand_process("cpu").history
    for period, first, end in (("validation", 130, 160), ("test", 160, DAYS)):
        p = c.for_period(period).replace(num_skus=SKUS)
        e = InventoryEnv(p, seed=1).sample_episode()
        assert torch.equal(e.sku, torch.arange(SKUS))
        assert (e.start == first - c.history_days).all()
        assert p.horizon == end - first - c.forecast_days           # the whole period
        assert torch.equal(e.demand, history[:, first:first + p.horizon].to(e.demand))
    t = compare.held_out_instance(c)
    assert t.num_skus == SKUS and t.demand["period"] == "test"


def test_exogenous_features_read_no_day_they_may_not():
    g = torch.Generator().manual_seed(0)
    B, H, T = 3, 5, 20
    columns = {"price": torch.rand(B, H + T + 7, generator=g, dtype=torch.float64)}
    names = ("price_next_7", "price_last")
    f = exogenous_features(columns, H, range(0, T + 1, 2), names, torch.float64)
    for e, t in enumerate(range(0, T + 1, 2)):
        day = H + t
        assert torch.allclose(f[e, :, 0], columns["price"][:, day:day + 7].mean(1))
        assert torch.equal(f[e, :, 1], columns["price"][:, day - 1])
        # days after what each feature may read change nothing
        later = {"price": columns["price"].clone()}
        later["price"][:, day + 7:] += 100
        assert torch.equal(exogenous_features(later, H, range(t, t + 1), names[:1],
                                              torch.float64)[0], f[e, :, :1])
        later["price"][:, day:] += 100
        assert torch.equal(exogenous_features(later, H, range(t, t + 1), names[1:],
                                              torch.float64)[0], f[e, :, 1:])


def test_future_values_need_a_column_declared_known_ahead(files):
    sales, attributes, _ = files
    c = instance(sales, attributes)
    assert "price_next_7" in c.features and "promotion_next_7" in c.features
    with pytest.raises(ValueError, match="'price' is not known ahead"):
        InstanceConfig.from_name(f"sales:path={sales},known_ahead=promotion,valid_start=0.6"
                                 ).replace(features=("constant", "price_next_7"))
    ok = InstanceConfig.from_name(f"sales:path={sales},known_ahead=promotion,valid_start=0.6")
    assert "price_last" in ok.features and "promotion_next_7" in ok.features


def test_the_test_period_changes_nothing_before_testing(files):
    """Two histories that differ only in the test period train the same policy (weights,
    validations, input normalisation, reward scale) and fit the same baselines; only the test
    costs differ."""
    sales, attributes, changed = files
    runs = []
    for path in (sales, changed):
        c = instance(path, attributes, num_skus=SKUS)
        policy, result = train_ds(c, PolicyConfig(head="base", hidden=(8,)),
                                  DSConfig(epochs=4, batch_size=8, validation_skus=8,
                                           eval_every=2), progress=False)
        t = compare.held_out_instance(c)
        fit, paths, x0, pipe0 = compare.fit_episodes(c, t, False, 128, 0, "cpu")
        fitted, _ = baselines.fit("base_stock", paths, fit.per_sku_tensor("lead_time", "cpu",
                                                                           torch.int64),
                                  on_hand=x0, pipeline=pipe0, **compare.costing(fit, "cpu"))
        runs.append(dict(state=policy.state_dict(), history=result.history,
                         obs=reference_observations(c, 0, "cpu"),
                         scale=reward_scale(c, 0, "cpu"), baseline=fitted.params,
                         test=compare.held_out_demand(t, 0)))
    a, b = runs
    assert all(torch.equal(a["state"][k], b["state"][k]) for k in a["state"])
    assert [h["validation_cost"] for h in a["history"]] == \
        [h["validation_cost"] for h in b["history"]]
    assert torch.equal(a["obs"], b["obs"]) and a["scale"] == b["scale"]
    assert torch.equal(a["baseline"], b["baseline"])
    assert not torch.equal(a["test"], b["test"])  # the test does see the other data


def test_a_catalog_trains_with_the_default_batch_and_validation_sizes(files, tmp_path):
    """No flag sizes the batch to the catalog: DS's 128 SKUs per epoch and 512 validation
    SKUs are drawn from a catalog of 40 SKUs with their own lead times and costs."""
    pytest.importorskip("matplotlib")  # the plots (.ci/setup installs it: CI runs this test)
    from deepstock_fast.cli import main
    sales, attributes, _ = files
    code = main(["train", "--sales", str(sales), "--attributes", str(attributes),
                 "--valid-start", "2024-05-10", "--test-start", TEST_START, "--epochs", "2",
                 "--eval-every", "1", "--out", str(tmp_path / "run"), "--no-progress"])
    assert code == 0 and (tmp_path / "run" / "results.json").exists()
    rows = json.loads((tmp_path / "run" / "results.json").read_text())["comparison"]
    assert rows[0]["baseline"] == "best base-stock per SKU" and rows[0]["gap_pct"] is not None
    assert main(["eval", "--policy", str(tmp_path / "run" / "base" / "policy.pt"), "--plot",
                 str(tmp_path / "plot.png"), "--json", str(tmp_path / "eval.json")]) == 0
    assert (tmp_path / "plot.png").exists()
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    assert evaluated["by_category"][-1]["category"] == "all"
    assert evaluated["cost"] == pytest.approx(evaluated["by_category"][-1]["average_cost"])
    # and a wide matrix with one lead time per row: the same
    history = torch.poisson(torch.full((6, 150), 3.0)).tolist()
    replay = InstanceConfig(num_skus=6, lead_time=[1, 2, 3, 1, 2, 3], horizon=50,
                            demand={"kind": "replay", "history": history})
    _, result = train_ds(replay, PolicyConfig(hidden=(8,)), DSConfig(epochs=2, eval_every=1),
                         progress=False)
    assert result.iterations == 2


def test_backtest_reports_per_sku_and_by_category(files, tmp_path):
    pytest.importorskip("matplotlib")  # the plot (.ci/setup installs it: CI runs this test)
    import deepstock_fast as ds
    from deepstock_fast.backtest import backtest
    from deepstock_fast.evaluation import held_out_env

    c = instance(*files[:2])

    def fixed(s):  # order up to 3 days of the trailing mean past the lead time
        return ds.base_stock_order(s.features[:, 0] * (s.lead_time + 3), s.inventory_position)

    bt = backtest({"fixed": fixed}, c, seed=3)
    assert set(bt.totals) == {"fixed", "best base-stock per SKU",
                              "best capped base-stock per SKU", "best (s, S) per SKU"}
    assert bt.baselines == tuple(k for k in bt.totals if k != "fixed")
    # the policy's totals are its run on the test episode
    t = compare.held_out_instance(c)
    env = held_out_env(t, 3, "cpu")
    result = env.simulate(fixed, env.sample_episode())
    assert torch.allclose(bt.totals["fixed"][0], result.cost.double())
    categories = np.array(bt.categories)
    rows = bt.by_category()
    assert {r["category"] for r in rows} == set(categories) | {"all"}
    for r in rows:
        members = np.flatnonzero(categories == r["category"]) if r["category"] != "all" else \
            np.arange(SKUS)
        cost, stats = (x[torch.as_tensor(members)] for x in bt.totals[r["policy"]])
        assert r["skus"] == len(members)
        assert r["average_cost"] == pytest.approx(float(cost.sum()) / len(members) / bt.days)
        assert r["fill_rate"] == pytest.approx(float(stats[:, 0].sum()
                                                     / bt.demanded[members].sum()))
        assert r["stockout_rate"] == pytest.approx(float(stats[:, 2].sum()) / len(members)
                                                   / bt.days)
    written = bt.write(tmp_path)
    lines = (tmp_path / "test_per_sku.csv").read_text().splitlines()
    assert len(lines) == 1 + SKUS * len(bt.totals) and (tmp_path / "test_by_category.png") in \
        written


def test_rolling_origin_moves_the_periods_forward(files):
    from deepstock_fast.backtest import rolling_origin
    import deepstock_fast as ds
    c = instance(*files[:2])
    folds = rolling_origin({"fixed": lambda s: ds.base_stock_order(
        s.features[:, 0] * (s.lead_time + 3), s.inventory_position)}, c, 2,
        kinds=("base_stock",))
    assert [(f["origin"], f["end"]) for f in folds] == [("2024-06-09", "2024-06-29"),
                                                      ("2024-06-29", "2024-07-19")]
    # each window is tested alone: its days, less the forecast days at its end
    assert [f["days"] for f in folds] == [20 - c.forecast_days] * 2
    assert {r["policy"] for r in folds[0]["by_category"]} == {"fixed", "best base-stock per SKU"}


@pytest.mark.parametrize("changes, message", [
    ("valid_start=2024-06-20", "need the first day < valid_start (2024-06-20) < test_start"),
    ("valid_start=2025-01-01", "valid_start 2025-01-01 is outside the data"),
    ("valid_start=junk", "valid_start must be a date YYYY-MM-DD or a fraction in (0, 1), got "
                         "'junk'"),
    ("valid_start=0.1", "an episode needs history_days + horizon + forecast days = 75 days; "
                        "the train period"),
    ("known_ahead=colour", "known_ahead names ['colour'], not exogenous columns"),
])
def test_bad_sales_instances_say_what_is_wrong(files, changes, message):
    sales, attributes, _ = files
    with pytest.raises(ValueError) as e:
        InstanceConfig.from_name(f"sales:path={sales},attributes={attributes},horizon=40,"
                                 f"test_start={TEST_START},{changes}")
    assert message in str(e.value)


def test_a_period_without_history_before_it_is_refused(files):
    sales = files[0]
    with pytest.raises(ValueError, match=r"the test period \(2024-01-21 .. 2024-07-18, 180 days\) "
                                         r"starts 20 days into the data; its episodes need "
                                         r"history_days = 28 days before it"):
        InstanceConfig(demand={"kind": "sales", "path": str(sales), "valid_start": 0.05,
                               "test_start": 0.1, "period": "test"}, horizon=10)


@pytest.fixture(scope="module")
def reviewed_files(tmp_path_factory):
    """A catalog whose even SKUs review daily and odd ones weekly."""
    tmp = tmp_path_factory.mktemp("review")
    rows, attrs = synthetic.synthetic_sales(12, 200, seed=1)
    attrs["review_period"] = np.where(np.arange(12) % 2 == 0, 1, 7)
    return write_rows(tmp / "sales.csv", rows), write_rows(tmp / "attributes.csv", attrs)


def test_skus_order_on_their_own_review_days(reviewed_files):
    import deepstock_fast as ds
    c = instance(*reviewed_files, num_skus=12, horizon=42, order_cost=1.0)
    assert c.review_period == 1 and c.sku_review_periods("cpu").tolist() == [1, 7] * 6
    env = InventoryEnv(c, seed=0)
    assert env.obs_names[-1] == "review_period"
    episode = env.sample_episode()
    weekly = episode.review_period == 7
    result = env.simulate(lambda s: torch.full_like(s.on_hand, 5.0), episode)
    # ordering cost 1 per unit: 5 units on each of 42 days, or on days 0, 7, ..., 35
    assert result.cost[:, 2].tolist() == [210.0 if r == 1 else 30.0
                                          for r in episode.review_period.tolist()]
    env.reset()
    total = sum(env.step(torch.full((12,), 5.0))[4]["cost"][:, 2] for _ in range(42))
    assert torch.equal(total, result.cost[:, 2].to(total))
    # a weekly SKU's base-stock policy costs what the rollout op gives with review period 7
    level = torch.full((12, 1), 30.0, dtype=torch.float64)
    ours = env.simulate(lambda s: ds.base_stock_order(level[:, 0].to(s.on_hand),
                                                      s.inventory_position), episode)
    op = baselines.totals(baselines.ClassicalPolicy("base_stock", level[weekly]),
                          episode.demand[weekly].double(), episode.lead_time[weekly],
                          holding_cost=episode.holding_cost[weekly].double(),
                          penalty_cost=episode.penalty_cost[weekly].double(), order_cost=1.0,
                          review_period=7, on_hand=episode.on_hand[weekly].double(),
                          pipeline=episode.pipeline[weekly].double())
    assert torch.allclose(ours.cost[weekly].double(), op[0], rtol=1e-5)
    assert torch.allclose(ours.stats[weekly].double(), op[1], rtol=1e-5)


def test_a_catalog_of_review_periods_trains_and_is_tested(reviewed_files):
    from deepstock_fast.backtest import backtest
    c = instance(*reviewed_files)
    policy, result = train_ds(c, PolicyConfig(hidden=(8,)),
                              DSConfig(epochs=2, batch_size=8, eval_every=1), progress=False)
    bt = backtest({"ds": policy}, c, kinds=("base_stock",))
    assert not bt.notes and set(bt.totals) == {"ds", "best base-stock per SKU"}
    with pytest.raises(ValueError, match="SKUs with their own review periods need "
                                         "review_period = 1"):
        c.replace(review_period=2, horizon=40)
