"""Long-format sales files: the [series, day] matrices they hold, their options and errors, the
binary cache next to the source, and the synthetic generator."""

from __future__ import annotations

import datetime
import os

import numpy as np
import pytest
import torch

from deepstock_fast import sales, synthetic

SMALL = """sku,date,quantity,price,promotion,category,lead_time
a,2024-01-01,3,2.0,0,food,2
a,2024-01-03,1,2.5,1,food,2
b,2024-01-02,4,,0,toys,5
b,2024-01-02,2,1.0,0,toys,5
a,2024-01-04,0,2.5,0,food,2
"""


def write(tmp_path, text, name="sales.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_long_rows_become_a_series_by_day_matrix(tmp_path):
    data = sales.read_sales(write(tmp_path, SMALL), cache=False)
    assert list(data.series) == ["a", "b"]
    assert data.start == datetime.date(2024, 1, 1) and data.days == 4
    # a's missing 2024-01-02 is zero; b's two rows of 2024-01-02 are summed
    assert data.demand.tolist() == [[3, 0, 1, 0], [0, 6, 0, 0]]
    assert data.demand.dtype == torch.float32  # whole units: exact in float32
    assert list(data.features) == ["price", "promotion"]
    # price: the mean of a day's known values, carried forward, the first one backward
    assert data.features["price"].tolist() == [[2.0, 2.0, 2.5, 2.5], [1.0, 1.0, 1.0, 1.0]]
    assert data.features["promotion"].tolist() == [[0, 0, 1, 0], [0, 0, 0, 0]]
    assert list(data.attributes["category"]) == ["food", "toys"]
    assert data.attributes["lead_time"].tolist() == [2, 5]
    assert data.day_index("2024-01-03") == 2 and data.day_index(0.5) == 2


def test_options_refuse_missing_days_and_duplicates(tmp_path):
    path = write(tmp_path, SMALL)
    with pytest.raises(ValueError, match=r"rows 4 and 5: both hold series 'b' on 2024-01-02"):
        sales.read_sales(path, duplicates="error", cache=False)
    with pytest.raises(ValueError, match=r"no row for series 'a' on 2024-01-02"):
        sales.read_sales(path, missing="error", cache=False)
    with pytest.raises(ValueError, match="missing must be one of"):
        sales.read_sales(path, missing="ffill")


def test_column_names_are_options(tmp_path):
    text = SMALL.replace("sku,date,quantity", "item,day,units")
    data = sales.read_sales(write(tmp_path, text), sku_column="item", date_column="day",
                            quantity_column="units", features=["price"], cache=False)
    assert data.demand.tolist() == [[3, 0, 1, 0], [0, 6, 0, 0]]
    assert list(data.features) == ["price"]


@pytest.mark.parametrize("text, message", [
    (SMALL.replace("a,2024-01-03,1", "a,2024-01-03,-1"),
     "row 3, column 'quantity': -1.0: a quantity must be finite, >= 0"),
    (SMALL.replace("a,2024-01-03,1", "a,2024-01-03,x1"), "row 3, column 'quantity': 'x1' is not a number"),
    (SMALL.replace("a,2024-01-03,1", "a,2024-01-03,"), "row 3, column 'quantity': a missing value"),
    (SMALL.replace("2024-01-03", "2024-13-03"), "row 3, column 'date': '2024-13-03' is not a date"),
    (SMALL.replace("a,2024-01-03,1,2.5,1,food,2", "a,2024-01-03,1,2.5,1,food,3"),
     "row 3, column 'lead_time': 3.0 differs from 2.0 in row 2 of series 'a'"),
    (SMALL.replace("quantity", "qty"), "no column 'quantity' (--quantity-column)"),
    ("sku,date,quantity\n", "has no rows"),
])
def test_bad_files_name_row_and_column(tmp_path, text, message):
    with pytest.raises(ValueError) as e:
        sales.read_sales(write(tmp_path, text), cache=False)
    assert message in str(e.value) and "sales.csv" in str(e.value)


def test_attribute_table_and_warehouses(tmp_path):
    text = ("sku,warehouse,date,quantity\n" "a,w1,2024-01-01,1\n" "a,w2,2024-01-01,2\n"
            "b,w1,2024-01-02,3\n")
    attrs = write(tmp_path, "sku,lead_time,holding_cost,category\nb,4,0.5,x\na,2,1.5,y\n",
                  "attributes.csv")
    data = sales.read_sales(write(tmp_path, text), attributes=attrs, cache=False)
    assert list(data.series) == ["a@w1", "a@w2", "b@w1"]
    assert data.demand.tolist() == [[1, 0], [2, 0], [0, 3]]
    assert data.attributes["lead_time"].tolist() == [2, 2, 4]
    assert data.attributes["holding_cost"].tolist() == [1.5, 1.5, 0.5]
    assert list(data.attributes["category"]) == ["y", "y", "x"]
    write(tmp_path, "sku,lead_time\na,2\n", "attributes.csv")
    with pytest.raises(ValueError, match=r"attributes file .*: no row for SKU 'b'"):
        sales.read_sales(tmp_path / "sales.csv", attributes=attrs, cache=False)


def test_parquet_and_csv_gz_read_the_same(tmp_path):
    csv, attrs = synthetic.write_synthetic(tmp_path / "s.csv", 12, 40, seed=1)
    pq, _ = synthetic.write_synthetic(tmp_path / "s.parquet", 12, 40, seed=1)
    gz, _ = synthetic.write_synthetic(tmp_path / "s.csv.gz", 12, 40, seed=1)
    a, b, c = (sales.read_sales(p, attributes=attrs, cache=False) for p in (csv, pq, gz))
    for other in (b, c):
        assert torch.equal(a.demand, other.demand)
        assert all(torch.equal(a.features[k], other.features[k]) for k in a.features)
        assert list(a.series) == list(other.series)


def test_the_cache_is_reused_and_refreshed_when_the_source_changes(tmp_path, monkeypatch):
    path = write(tmp_path, SMALL)
    first = sales.read_sales(path)
    cache = tmp_path / ("sales.csv" + sales.CACHE_SUFFIX)
    assert cache.exists()
    sales._MEMO.clear()
    monkeypatch.setattr(sales, "_parse", lambda *a, **k: pytest.fail("parsed again"))
    again = sales.read_sales(path)
    assert torch.equal(again.demand, first.demand)
    assert list(again.attributes["category"]) == ["food", "toys"]
    monkeypatch.undo()
    # a changed source (size and modification time) is parsed again
    path.write_text(SMALL.replace("a,2024-01-01,3", "a,2024-01-01,30"))
    os.utime(path, ns=(0, 10**18))
    sales._MEMO.clear()
    assert sales.read_sales(path).demand[0, 0] == 30
    # other options are another cache entry, not a stale one
    assert sales.read_sales(path, features=["price"]).features.keys() == {"price"}


def test_synthetic_sales_have_the_promised_shape():
    rows, attrs = synthetic.synthetic_sales(300, 365, seed=0)
    K, D = 300, 365
    dense = np.zeros((K, D))
    k = np.searchsorted(attrs["sku"], rows["sku"])
    d = (rows["date"] - np.datetime64("2024-01-01")).astype(int)
    dense[k, d] = rows["quantity"]
    promo = np.zeros((K, D))
    promo[k, d] = rows["promotion"]
    mean = dense.mean(1)
    assert mean.max() / max(mean.min(), 1e-3) > 100          # scales differ by orders of magnitude
    assert ((dense == 0).mean(1) > 0.5).mean() > 0.2         # many intermittent SKUs
    assert dense[promo == 1].mean() > 1.3 * dense[(promo == 0) & (dense > 0)].mean() * \
        (dense[promo == 0] > 0).mean()                       # promotions lift demand
    assert len(set(attrs["lead_time"].tolist())) > 3         # lead times differ
    assert (rows["quantity"] > 0).all()                      # only days with sales are rows


# ---- fuzzing: any rows are read exactly as an independent dict-based reading, or refused with
# an error naming the file ---------------------------------------------------------------------
from hypothesis import given, strategies as st  # noqa: E402

from helpers import fuzz_settings  # noqa: E402

_cells = {
    "sku": st.sampled_from(["a", "b", "7", "c d", ""]),
    "date": st.sampled_from(["2024-01-01", "2024-01-02", "2024-01-04", "2024-02-30", "x",
                             ""]),
    "quantity": st.one_of(st.integers(0, 50).map(str), st.sampled_from(
        ["-1", "1.5", "nan", "inf", "", "2e3", "x", "1_0"])),
}


@fuzz_settings(60)
@given(rows=st.lists(st.fixed_dictionaries(_cells), min_size=0, max_size=8),
       duplicates=st.sampled_from(sales.DUPLICATES))
def test_fuzzed_sales_rows_read_exactly_or_are_refused(tmp_path_factory, rows, duplicates):
    path = tmp_path_factory.mktemp("fuzz") / "fuzz.csv"
    path.write_text("sku,date,quantity\n" + "".join(
        f"{r['sku']},{r['date']},{r['quantity']}\n" for r in rows))
    try:
        data = sales.read_sales(path, duplicates=duplicates, cache=False)
    except ValueError as e:
        assert "fuzz.csv" in str(e)
        return
    expected: dict = {}
    counts: dict = {}
    for r in rows:
        day = datetime.date.fromisoformat(r["date"])
        key = (r["sku"], day)
        expected[key] = expected.get(key, 0.0) + float(r["quantity"])
        counts[key] = counts.get(key, 0) + 1
    assert duplicates == "sum" or max(counts.values()) == 1
    first = min(d for _, d in expected)
    assert data.start == first
    for (sku, day), q in expected.items():
        assert data.demand[list(data.series).index(sku), (day - first).days] == q
    assert float(data.demand.sum()) == pytest.approx(sum(expected.values()))


def test_a_wide_replay_matrix_is_cached_next_to_it_too(tmp_path, monkeypatch):
    from deepstock_fast import demand
    path = tmp_path / "wide.csv"
    path.write_text("sku,d0,d1,d2\na,1,2,3\nb,4,5,6\n")
    first = demand.read_history(path)
    assert (tmp_path / ("wide.csv" + sales.CACHE_SUFFIX)).exists()
    demand._CACHE.clear()  # as a new process
    monkeypatch.setattr(demand, "_read_csv", lambda *a: pytest.fail("parsed again"))
    assert torch.equal(demand.read_history(path), first)
    demand._CACHE.clear()  # other reading options: another key, parsed again
    with pytest.raises(BaseException, match="parsed again"):
        demand.read_history(path, id_column=True)


def test_a_directory_that_cannot_hold_the_cache_costs_only_a_parse(tmp_path, monkeypatch,
                                                                    capsys):
    path = write(tmp_path, SMALL)
    monkeypatch.setattr(sales.tempfile, "mkstemp", lambda **k: (_ for _ in ()).throw(
        PermissionError(13, "Permission denied")))
    data = sales.read_sales(path)
    assert data.demand.tolist() == [[3, 0, 1, 0], [0, 6, 0, 0]]
    assert "cannot cache" in capsys.readouterr().err
    assert not (tmp_path / ("sales.csv" + sales.CACHE_SUFFIX)).exists()


def test_synthetic_files_are_the_same_for_any_number_of_workers(tmp_path, monkeypatch):
    monkeypatch.setattr(synthetic, "CHUNK", 7)  # several chunks of 20 SKUs
    one, _ = synthetic.write_synthetic(tmp_path / "one.csv", 20, 30, seed=2)
    two, _ = synthetic.write_synthetic(tmp_path / "two.csv", 20, 30, seed=2, workers=2)
    assert one.read_text() == two.read_text() and len(one.read_text().splitlines()) > 100
