"""Fuzzing InstanceConfig and replay files: every input is either refused with a ValueError that
names the field (or the file, row and column), or accepted and then builds an environment whose
episode has finite costs. Replay files written in any accepted layout read back exactly."""

from __future__ import annotations

import dataclasses
import gzip
import itertools
import math
import pathlib
import re
import tempfile

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

import deepstock_fast as ds
from deepstock_fast import demand as demand_lib, synthetic
from deepstock_fast.envs import InstanceConfig, InventoryEnv
from deepstock_fast.demand import DEMAND_KINDS
from deepstock_fast.envs.config import COEFF_FEATURES, EXTRA_OBSERVATIONS, INITIAL_STATES

from helpers import fuzz_settings

SKUS = 4
BASE = dict(num_skus=SKUS, lead_time=[0, 1, 2, 1], review_period=2, horizon=12, warmup=4,
            holding_cost=1.0, penalty_cost=[4.0, 9.0, 4.0, 9.0], order_cost=0.5, max_order=30.0,
            observed_demand_days=2)

# Anything at all: values of the wrong type, NaN/inf, huge, negative, nested.
junk = st.one_of(
    st.none(), st.booleans(), st.text(max_size=4), st.sampled_from(["abc", "no", "", "history"]),
    st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**30, 10**30),
    st.sampled_from([math.nan, math.inf, -math.inf, -1, 0, 10**12, 1e300, -0.5]),
    st.lists(st.one_of(st.integers(-3, 5), st.floats(-1, 10), st.text(max_size=2), st.none(),
                       st.booleans()), max_size=5),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


def per_sku(values):
    return values | st.lists(values, min_size=SKUS, max_size=SKUS)


# field -> values that are valid on their own (relations to other fields may still fail)
FIELD_VALUES = {
    "num_skus": st.integers(1, 6),
    "lead_time": per_sku(st.integers(0, 4)),
    "review_period": st.integers(1, 4),
    "horizon": st.integers(1, 24),
    "warmup": st.integers(0, 12),
    "holding_cost": per_sku(st.floats(0, 1e9)),
    "penalty_cost": per_sku(st.floats(0, 1e9)),
    "order_cost": per_sku(st.floats(0, 1e9)),
    "lost_sales": st.booleans(),
    "finite_horizon": st.booleans(),
    "max_order": st.none() | st.floats(1e-6, 1e9),
    "max_lead_time": st.none() | st.integers(0, 6),
    "initial_state": st.sampled_from(INITIAL_STATES),
    "demand": st.deferred(lambda: demand_specs()),
    "features": st.lists(st.sampled_from(COEFF_FEATURES), unique=True).map(tuple),
    "observe_features": st.booleans(),
    "extra_observations": st.lists(st.sampled_from(EXTRA_OBSERVATIONS), unique=True),
    "observed_demand_days": st.integers(0, 30),
    "history_days": st.integers(0, 40),
    "forecast_noise_std": st.floats(0, 100),
    "obs_scale": st.just("history") | st.floats(1e-6, 1e9),
    "dtype": st.sampled_from(["float32", "float64"]),
}

# a small long-format sales file (and its attribute table) for the "sales" kind
_SALES_DIR = pathlib.Path(tempfile.mkdtemp(prefix="deepstock-fuzz-sales-"))
SALES_FILE, ATTRIBUTES_FILE = (str(p) for p in synthetic.write_synthetic(
    _SALES_DIR / "sales.csv", SKUS + 2, 90, seed=3))

DEMAND_PARAMS = {
    "poisson": {"rate": per_sku(st.floats(0, 50))},
    "normal": {"mean": per_sku(st.floats(-10, 50)), "std": per_sku(st.floats(0, 20)),
               "round": st.booleans()},
    "uniform_int": {"low": per_sku(st.integers(0, 10)), "high": per_sku(st.integers(1, 20))},
    "geometric": {"mean": per_sku(st.floats(0, 50, exclude_min=True))},
    "ar1": {"phi": per_sku(st.floats(-0.99, 0.99)), "base": per_sku(st.floats(0, 20)),
            "sigma": per_sku(st.floats(0, 10))},
    "paper_independent": {"instance_seed": st.integers(0, 2**63 - 1)},
    "paper_ar1": {"instance_seed": st.integers(0, 2**63 - 1)},
    "paper_iid_normal": {"instance_seed": st.integers(0, 2**63 - 1)},
    "replay": {"history": st.integers(1, 80).flatmap(lambda days: st.lists(
        st.lists(st.floats(0, 1e3), min_size=days, max_size=days), min_size=SKUS,
        max_size=SKUS))},
    "sales": {"path": st.just(SALES_FILE), "sku_column": st.just("sku"),
              "date_column": st.just("date"), "quantity_column": st.just("quantity"),
              "warehouse_column": st.none(), "features": st.none() | st.just(["price"]),
              "attributes": st.none() | st.just(ATTRIBUTES_FILE),
              "missing": st.just("zero"), "duplicates": st.sampled_from(["sum", "error"]),
              "valid_start": st.sampled_from([0.5, 0.6, "2024-02-10"]),
              "test_start": st.sampled_from([0.8, "2024-03-20"]),
              "test_end": st.sampled_from([0.9, "2024-03-31"]),
              "period": st.sampled_from(["train", "validation", "test"]),
              "known_ahead": st.just([]) | st.just(["price"])},
}


def test_every_demand_kind_is_fuzzed():
    # a demand kind registered in deepstock_fast.demand needs its strategies here
    assert {k: set(c.params) | set(c.optional_params) for k, c in DEMAND_KINDS.items()} == {
        k: set(v) | ({"path", "header", "id_column"} if k == "replay" else set())
        for k, v in DEMAND_PARAMS.items()}


@st.composite
def demand_specs(draw):
    """Demand dicts: a known kind with each parameter valid, junk or left out, sometimes an
    unknown parameter or kind."""
    kind = draw(st.sampled_from(sorted(DEMAND_PARAMS)) | junk)
    spec = {"kind": kind}
    for key, valid in (DEMAND_PARAMS.get(kind, {}) if isinstance(kind, str) else {}).items():
        choice = draw(st.sampled_from(["valid", "valid", "valid", "junk", "absent"]))
        if choice != "absent":
            spec[key] = draw(valid if choice == "valid" else junk)
    if draw(st.integers(0, 9)) == 0:
        spec[draw(st.sampled_from(["colour", "rate", "path"]))] = draw(junk)
    return spec


def test_every_field_has_a_fuzz_strategy():
    assert set(FIELD_VALUES) == {f.name for f in dataclasses.fields(InstanceConfig)}


def run_episode(config: InstanceConfig) -> None:
    """Builds the env and runs one episode of base-stock orders: every cost finite."""
    env = InventoryEnv(config, seed=0)
    obs, _ = env.reset()
    assert torch.isfinite(obs).all()
    for _ in range(env.num_epochs):
        s = env.state()
        order = ds.base_stock_order(torch.full_like(s.on_hand, 10.0), s.inventory_position)
        obs, reward, _, _, info = env.step(order)
        assert torch.isfinite(info["cost"]).all() and torch.isfinite(reward).all()
        assert torch.isfinite(obs).all()


def small_enough(config: InstanceConfig) -> bool:
    """Accepted configs this big (up to 2^26 SKUs, 10^5 days) are valid but too slow here."""
    return (config.num_skus * (config.days_per_episode + config.max_lead) <= 2 * 10**5
            and config.horizon // config.review_period <= 100)


def build(route: str, changes: dict) -> InstanceConfig:
    if route == "init":
        return InstanceConfig(**{**BASE, **changes})
    if route == "from_dict":
        return InstanceConfig.from_dict({**BASE, **changes})
    if route == "replace":
        return InstanceConfig(**BASE).replace(**changes)
    text = ",".join(f"{k}={'none' if v is None else v}" for k, v in changes.items())
    return InstanceConfig.from_name(f"zipkin:L=2,p=9,num_skus={SKUS},{text}")


def scalar_text(value) -> bool:
    """Values that a from_name string can carry as themselves."""
    return (value is None or isinstance(value, (bool, int, float))
            or isinstance(value, str) and re.fullmatch(r"[\w.+-]+", value) is not None)


@fuzz_settings(ci_examples=300)
@given(data=st.data())
def test_fuzz_config_fields(data):
    names = data.draw(st.lists(st.sampled_from(sorted(FIELD_VALUES)), min_size=1, max_size=3,
                               unique=True))
    changes = {n: data.draw(FIELD_VALUES[n] | junk if data.draw(st.booleans()) else junk,
                            label=n) for n in names}
    routes = ["init", "from_dict", "replace"]
    if all(scalar_text(v) for v in changes.values()) and "num_skus" not in changes:
        routes.append("from_name")
    route = data.draw(st.sampled_from(routes))
    try:
        config = build(route, changes)
    except ValueError as e:
        assert any(n in str(e) for n in changes), (changes, str(e))
        return
    if small_enough(config):
        run_episode(config)


@pytest.mark.parametrize("changes,message", [
    (dict(max_order="abc"), "max_order must be None or a finite number in (0, 1e+09], got 'abc'"),
    (dict(num_skus=True), "num_skus must be an int in 1..67108864, got True"),
    (dict(obs_scale=math.inf), "obs_scale must be 'history' or a finite number"),
    (dict(demand={"kind": "poisson", "rate": None}), "demand.rate must be a finite number"),
    (dict(demand={"kind": "normal", "mean": 5.0, "std": 1.0, "round": "no"}),
     "demand.round must be true or false, got 'no'"),
    (dict(demand={"kind": "poisson", "rate": [1.0, 2.0]}),
     "demand.rate needs one value or num_skus = 4 values, got 2"),
    (dict(lead_time=[0, 1, "2", 1]), "lead_time[2] must be an int in 0..100000, got '2'"),
    (dict(holding_cost=1e300), "holding_cost must be a finite number in [0, 1e+09], got 1e+300"),
    (dict(features="trailing_7"), "features must be a list of distinct names"),
    (dict(demand={"kind": "replay", "history": [[1.0, True]] * 4}),
     "demand.history[0][1] must be a finite number, got True"),
    (dict(extra_observations=["std"]), "extra observation 'std' needs a demand process"),
])
def test_issue_examples_name_the_field(changes, message):
    for route in ("init", "from_dict", "replace"):
        with pytest.raises(ValueError, match=re.escape(message)):
            build(route, changes)


def test_from_name_refuses_bools_and_infinities():
    with pytest.raises(ValueError, match=re.escape("num_skus must be an int in 1..67108864, got True")):
        InstanceConfig.from_name("zipkin:L=2,p=9,num_skus=true")
    with pytest.raises(ValueError, match="obs_scale must be 'history' or a finite number"):
        InstanceConfig.from_name("zipkin:L=2,p=9,obs_scale=inf")


# ---- replay files ------------------------------------------------------------------------------
_counter = itertools.count()


def fresh(tmp_path_factory, suffix: str):
    """A new file name per example (the reader caches by path, size and modification time)."""
    return tmp_path_factory.getbasetemp() / f"fuzz{next(_counter)}{suffix}"


matrices = st.tuples(st.integers(1, 5), st.integers(1, 7)).flatmap(lambda shape: st.lists(
    st.lists(st.integers(0, 10**6).map(float) | st.floats(0, 1e9), min_size=shape[1],
             max_size=shape[1]), min_size=shape[0], max_size=shape[0])).map(
    lambda rows: np.array(rows, dtype=np.float64))


@st.composite
def csv_layouts(draw, matrix):
    """The text of ``matrix`` in an accepted CSV layout, and the from_file arguments it needs."""
    sku, days = matrix.shape
    header = draw(st.sampled_from(["none", "names", "declared_numbers"]))
    ids = draw(st.sampled_from(["none", "named", "pandas", "declared"]))
    kwargs = {}
    if ids == "declared" or (ids != "none" and header == "none"):
        kwargs["id_column"] = True
        id_name = "store"
    else:
        id_name = {"named": draw(st.sampled_from(["sku", "SKU_ID", "item", " id "])),
                   "pandas": ""}.get(ids)
    rows = [[repr(float(v)) if draw(st.booleans()) else f"{v:.17g}" for v in r] for r in matrix]
    if id_name is not None:
        labels = draw(st.sampled_from(["numbers", "names"]))
        rows = [[str(i + 1) if labels == "numbers" else f"A{i}"] + r for i, r in enumerate(rows)]
    if header == "names":
        top = [f"d{j}" for j in range(days)]
    elif header == "declared_numbers":
        top = [str(j + 1) for j in range(days)]
        kwargs["header"] = True
    if header != "none":
        rows.insert(0, ([id_name] if id_name is not None else []) + top)
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    end = draw(st.sampled_from(["", newline, newline * 2, newline + "  " + newline]))
    bom = draw(st.sampled_from(["", "\ufeff"]))
    return bom + newline.join(",".join(r) for r in rows) + end, kwargs


@fuzz_settings(ci_examples=150)
@given(data=st.data(), matrix=matrices)
def test_replay_files_round_trip(tmp_path_factory, data, matrix):
    form = data.draw(st.sampled_from(["csv", "csv.gz", "parquet"]))
    if form == "parquet":
        pa = pytest.importorskip("pyarrow")
        import pyarrow.parquet as pq

        columns = {f"d{j}": matrix[:, j] for j in range(matrix.shape[1])}
        kwargs = {}
        if data.draw(st.booleans()):
            ids = data.draw(st.sampled_from(["sku", "__index_level_0__", "declared"]))
            if ids == "declared":
                kwargs["id_column"] = True
            columns = {("store" if ids == "declared" else ids): [f"A{i}" for i in
                                                                 range(len(matrix))], **columns}
        if data.draw(st.booleans()):  # integer day columns
            columns = {k: (v.astype(np.int64) if isinstance(v, np.ndarray)
                           and (v == v.round()).all() else v) for k, v in columns.items()}
        path = fresh(tmp_path_factory, ".parquet")
        pq.write_table(pa.table(columns), path, row_group_size=data.draw(st.sampled_from([2, 64])))
    else:
        text, kwargs = data.draw(csv_layouts(matrix))
        path = fresh(tmp_path_factory, "." + form)
        raw = text.encode()
        path.write_bytes(gzip.compress(raw) if form == "csv.gz" else raw)
    history = demand_lib.Replay.from_file(path, **kwargs).history
    assert history.dtype == torch.float64 and np.array_equal(history.numpy(), matrix)


def cell_text(matrix):
    return [[f"{v:.17g}" for v in r] for r in matrix]


@fuzz_settings(ci_examples=150)
@given(data=st.data(), matrix=matrices)
def test_replay_corruptions_name_file_row_and_column(tmp_path_factory, data, matrix):
    """A bad cell, a ragged row, a negative or non-finite value, a truncated row or compressed
    stream, non-UTF-8 bytes: a ValueError naming the file and where (row 1 is the header)."""
    sku, days = matrix.shape
    rows = [[f"d{j}" for j in range(days)]] + cell_text(matrix)
    r = data.draw(st.integers(1, sku))  # a data row (0-based in rows: 1..sku)
    c = data.draw(st.integers(0, days - 1))
    kind = data.draw(st.sampled_from(["cell", "ragged", "truncated", "latin1", "utf16", "gzip",
                                      "gzip_named_csv"]))
    suffix, where = ".csv", f"row {r + 1}, column {c + 1}"
    if kind == "cell":
        rows[r][c] = data.draw(st.sampled_from(["abc", "", " ", "-3", "-1e-9", "inf", "-inf",
                                                "nan", "1e999", "2e9", "1_0", "0x10", "5 5"]))
        if days == 1 and not rows[r][c].strip():  # a blank line: an empty row, or trailing
            rows[r][c] = "x" if r == sku else ""  # ones are not rows (so not this corruption)
            where = f"row {r + 1}" if r < sku else where
    elif kind == "ragged":
        rows[r] = rows[r][:-1] if days > 1 and data.draw(st.booleans()) else rows[r] + ["1"]
        where = f"row {r + 1} has"
    elif kind == "truncated":  # the file ends inside row r, after a separator
        rows = rows[:r + 1]
        rows[r] = rows[r][:data.draw(st.integers(1, days - 1))] if days > 1 else rows[r] + ["1"]
        where = f"row {r + 1} has"
    elif kind == "latin1":
        rows[r][c] = "é"
    text = "\n".join(",".join(x) for x in rows) + "\n"
    if kind == "latin1":
        raw = text.encode("latin-1")
    elif kind == "utf16":
        raw, where = text.encode("utf-16"), "UTF-16"
    else:
        raw = text.encode()
    if kind == "gzip":
        suffix = ".csv.gz"
        packed = gzip.compress(raw)
        raw = packed[:data.draw(st.integers(0, len(packed) - 1))]
        where = "gzip"
    elif kind == "gzip_named_csv":
        raw, where = gzip.compress(raw), "gzip-compressed; name it .csv.gz"
    path = fresh(tmp_path_factory, suffix)
    path.write_bytes(raw)
    if kind == "gzip" and len(raw) == 0:
        where = "is empty"
    with pytest.raises(ValueError, match=re.escape(str(path))) as e:
        demand_lib.Replay.from_file(path)
    assert where in str(e.value), str(e.value)


@fuzz_settings(ci_examples=60)
@given(data=st.data(), matrix=matrices)
def test_parquet_corruptions_name_file_row_and_column(tmp_path_factory, data, matrix):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    sku, days = matrix.shape
    columns = {f"d{j}": pa.array(matrix[:, j]) for j in range(days)}
    c = data.draw(st.integers(0, days - 1))
    r = data.draw(st.integers(0, sku - 1))
    kind = data.draw(st.sampled_from(["bool", "string", "null", "negative", "nan", "truncated"]))
    name = f"d{c}"
    where = f"column {c + 1} ('{name}')"
    if kind == "bool":
        columns[name] = pa.array(matrix[:, c] > 0)
    elif kind == "string":
        columns[name] = pa.array([str(v) for v in matrix[:, c]])
    else:
        values = matrix[:, c].tolist()
        values[r] = {"null": None, "negative": -1.0, "nan": math.nan}.get(kind, values[r])
        columns[name] = pa.array(values, type=pa.float64(), from_pandas=False)
        where = f"row {r + 1}, column {c + 1} ('{name}')"
    path = fresh(tmp_path_factory, ".parquet")
    pq.write_table(pa.table(columns), path)
    if kind == "truncated":
        raw = path.read_bytes()
        path.write_bytes(raw[:data.draw(st.integers(0, len(raw) - 1))])
        where = "not a readable Parquet file"
    with pytest.raises(ValueError, match=re.escape(str(path))) as e:
        demand_lib.Replay.from_file(path)
    assert where in str(e.value), str(e.value)
