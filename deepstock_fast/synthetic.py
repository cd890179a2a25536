"""Synthetic sales of a realistic shape, for tests and benchmarks: long-format rows
(sku, date, quantity, price, promotion, category) and a per-SKU attribute table.

Per SKU (``num_skus`` of them, ``categories`` categories): a base rate from a log-normal
(slow movers around 0.05 a day to fast ones near 100), weekly and yearly seasonality, a regular
price with occasional step changes that demand answers with a constant elasticity, promotions
(about one a month, 3 to 10 days, 20% off) that lift demand 1.5x to 3x, and for about a third of
the SKUs intermittent demand (a sale happens on a share q of days, in lumps 1/q times larger).
Quantities are Poisson. Lead times (1 to 10 days, by category) and costs (holding in [0.5, 1.5],
penalty 4 to 19 times holding) differ per SKU. Only days with sales become rows, as sales
records are stored.
"""

from __future__ import annotations

import datetime
import os
import pathlib

import numpy as np


def synthetic_sales(num_skus: int = 1000, days: int = 365, *, start: str = "2024-01-01",
                    categories: int = 8, seed: int = 0) -> tuple[dict, dict]:
    """(sales columns, attribute columns) as NumPy arrays: the sales rows (sku, date,
    quantity, price, promotion, category) of the days with sales, and one attribute row per
    SKU (sku, lead_time, holding_cost, penalty_cost, category)."""
    if not (isinstance(num_skus, int) and num_skus >= 1 and isinstance(days, int) and days >= 1):
        raise ValueError(f"num_skus and days must be ints >= 1, got {num_skus!r}, {days!r}")
    rng = np.random.default_rng(seed)
    K, D = num_skus, days
    category = rng.integers(0, categories, K)
    cat_level = rng.normal(0.0, 0.7, categories)
    rate = np.exp(np.log(2.0) + cat_level[category] + rng.normal(0.0, 1.1, K)).clip(0.05, 100)
    t = np.arange(D)
    weekly = 1 + rng.uniform(0, 0.4, (K, 1)) * np.sin(2 * np.pi * (t + rng.integers(0, 7, (K, 1)))
                                                       / 7)
    yearly = 1 + rng.uniform(0, 0.5, (K, 1)) * np.sin(2 * np.pi * (t + rng.integers(0, 365, (K, 1)))
                                                       / 365)
    base_price = np.exp(rng.normal(np.log(10.0), 0.8, K)).round(2)
    steps = np.where(rng.random((K, D)) < 1 / 90, rng.uniform(0.85, 1.15, (K, D)), 1.0)
    regular = base_price[:, None] * np.cumprod(steps, 1)
    elasticity = rng.uniform(1.0, 2.5, (K, 1))
    # promotions: a start on about 1 day in 30, lasting 3..10 days
    begins = rng.random((K, D)) < 1 / 30
    length = rng.integers(3, 11, (K, D))
    ends = np.where(begins, t + length, -1)
    promotion = (np.maximum.accumulate(ends, 1) > t).astype(np.int8)
    lift = rng.uniform(0.5, 2.0, (K, 1))
    price = (regular * np.where(promotion == 1, 0.8, 1.0)).round(2)
    mean = rate[:, None] * weekly * yearly * (regular / base_price[:, None]) ** -elasticity \
        * (1 + lift * promotion)
    occurrence = np.where(rng.random(K) < 1 / 3, rng.uniform(0.15, 0.6, K), 1.0)[:, None]
    happens = rng.random((K, D)) < occurrence
    quantity = np.where(happens, rng.poisson(mean / occurrence), 0)
    k, d = np.nonzero(quantity)
    sku = np.char.add("SKU", np.char.zfill(np.arange(K).astype(str), len(str(K - 1))))
    dates = np.datetime64(start) + np.arange(D)
    names = np.char.add("cat", np.arange(categories).astype(str))
    sales = {"sku": sku[k], "date": dates[d], "quantity": quantity[k, d].astype(np.int64),
             "price": price[k, d], "promotion": promotion[k, d].astype(np.int64),
             "category": names[category[k]]}
    lead_base = rng.integers(1, 8, categories)
    holding = rng.uniform(0.5, 1.5, K).round(3)
    attributes = {"sku": sku,
                  "lead_time": (lead_base[category] + rng.integers(0, 4, K)).clip(1, 10),
                  "holding_cost": holding,
                  "penalty_cost": (holding * rng.choice([4.0, 9.0, 19.0], K)).round(3),
                  "category": names[category]}
    return sales, attributes


def write_synthetic(path: str | os.PathLike, num_skus: int = 1000, days: int = 365, *,
                    attributes: str | os.PathLike | None = None, start: str = "2024-01-01",
                    categories: int = 8, seed: int = 0) -> tuple[pathlib.Path, pathlib.Path]:
    """Writes :func:`synthetic_sales` to ``path`` (``.csv``, ``.csv.gz`` or ``.parquet``) and
    its attribute table to ``attributes`` (default: ``<path stem>.attributes.<suffix>``);
    returns both paths."""
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq
    path = pathlib.Path(path)
    lower = path.name.lower()
    if not lower.endswith((".csv", ".csv.gz", ".parquet")):
        raise ValueError(f"path {path}: use a .csv, .csv.gz or .parquet name")
    suffix = next(s for s in (".csv.gz", ".csv", ".parquet") if lower.endswith(s))
    attributes = pathlib.Path(attributes) if attributes is not None else path.with_name(
        path.name[:-len(suffix)] + ".attributes" + suffix)
    sales, attrs = synthetic_sales(num_skus, days, start=start, categories=categories,
                                   seed=seed)
    for target, columns in ((path, sales), (attributes, attrs)):
        table = pa.table({k: pa.array(v.astype("datetime64[D]") if v.dtype.kind == "M" else v)
                          for k, v in columns.items()})
        if suffix == ".parquet":
            pq.write_table(table, target)
        else:
            pcsv.write_csv(table, pa.CompressedOutputStream(str(target), "gzip")
                           if suffix == ".csv.gz" else str(target))
    return path, attributes


def _date(text: str) -> str:
    datetime.date.fromisoformat(text)
    return text
