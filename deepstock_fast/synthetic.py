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

import os
import pathlib

import numpy as np


#: SKUs generated at once: the [SKU, day] arrays of a chunk stay a few hundred MB.
CHUNK = 20_000


def synthetic_sales(num_skus: int = 1000, days: int = 365, *, start: str = "2024-01-01",
                    categories: int = 8, seed: int = 0) -> tuple[dict, dict]:
    """(sales columns, attribute columns) as NumPy arrays: the sales rows (sku, date,
    quantity, price, promotion, category) of the days with sales, and one attribute row per
    SKU (sku, lead_time, holding_cost, penalty_cost, category)."""
    attributes, chunks = _generate(num_skus, days, start, categories, seed)
    parts = list(chunks)
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}, attributes


def _generate(num_skus: int, days: int, start: str, categories: int, seed: int,
              workers: int = 1):
    """(attribute columns, an iterator of sales-row chunks of CHUNK SKUs each, in order; each
    chunk from its own random stream, so ``workers`` processes give the same rows)."""
    if not (isinstance(num_skus, int) and num_skus >= 1 and isinstance(days, int) and days >= 1):
        raise ValueError(f"num_skus and days must be ints >= 1, got {num_skus!r}, {days!r}")
    rng = np.random.default_rng(seed)
    K = num_skus
    category = rng.integers(0, categories, K)
    cat_level = rng.normal(0.0, 0.7, categories)
    per_sku = {
        "rate": np.exp(np.log(2.0) + cat_level[category] + rng.normal(0.0, 1.1, K)).clip(0.05,
                                                                                         100),
        "weekly_amp": rng.uniform(0, 0.4, K), "weekly_phase": rng.integers(0, 7, K),
        "yearly_amp": rng.uniform(0, 0.5, K), "yearly_phase": rng.integers(0, 365, K),
        "base_price": np.exp(rng.normal(np.log(10.0), 0.8, K)).round(2),
        "elasticity": rng.uniform(1.0, 2.5, K), "lift": rng.uniform(0.5, 2.0, K),
        "occurrence": np.where(rng.random(K) < 1 / 3, rng.uniform(0.15, 0.6, K), 1.0)}
    sku = np.char.add("SKU", np.char.zfill(np.arange(K).astype(str), len(str(K - 1))))
    names = np.char.add("cat", np.arange(categories).astype(str))
    lead_base = rng.integers(1, 8, categories)
    holding = rng.uniform(0.5, 1.5, K).round(3)
    attributes = {"sku": sku,
                  "lead_time": (lead_base[category] + rng.integers(0, 4, K)).clip(1, 10),
                  "holding_cost": holding,
                  "penalty_cost": (holding * rng.choice([4.0, 9.0, 19.0], K)).round(3),
                  "category": names[category]}
    jobs = [dict({k: v[lo:lo + CHUNK] for k, v in per_sku.items()}, seed=seed, lo=lo,
                 days=days, start=start, sku=sku[lo:lo + CHUNK],
                 category=names[category[lo:lo + CHUNK]]) for lo in range(0, K, CHUNK)]
    if workers <= 1 or len(jobs) == 1:
        return attributes, map(_chunk, jobs)
    import concurrent.futures
    pool = concurrent.futures.ProcessPoolExecutor(min(workers, len(jobs)))

    def ordered():
        try:
            yield from pool.map(_chunk, jobs)
        finally:
            pool.shutdown(cancel_futures=True)
    return attributes, ordered()


def _chunk(job: dict) -> dict:
    """The sales rows of one chunk of SKUs (``job``: their parameters, the seed, where the
    chunk starts, the days)."""
    g = np.random.default_rng([job["seed"], job["lo"]])  # each chunk its own stream
    n, D = len(job["sku"]), job["days"]
    t = np.arange(D)
    col = lambda name: job[name][:, None]  # noqa: E731
    weekly = 1 + col("weekly_amp") * np.sin(2 * np.pi * (t + col("weekly_phase")) / 7)
    yearly = 1 + col("yearly_amp") * np.sin(2 * np.pi * (t + col("yearly_phase")) / 365)
    # a regular price with step changes on about 1 day in 90
    steps = np.where(g.random((n, D)) < 1 / 90, g.uniform(0.85, 1.15, (n, D)), 1.0)
    regular = col("base_price") * np.cumprod(steps, 1)
    # promotions: a start on about 1 day in 30, lasting 3..10 days, 20% off
    ends = np.where(g.random((n, D)) < 1 / 30, t + g.integers(3, 11, (n, D)), -1)
    promotion = (np.maximum.accumulate(ends, 1) > t).astype(np.int8)
    price = (regular * np.where(promotion == 1, 0.8, 1.0)).round(2)
    mean = col("rate") * weekly * yearly * (regular / col("base_price")) ** -col("elasticity") \
        * (1 + col("lift") * promotion)
    happens = g.random((n, D)) < col("occurrence")
    quantity = np.where(happens, g.poisson(mean / col("occurrence")), 0)
    k, d = np.nonzero(quantity)
    return {"sku": job["sku"][k], "date": np.datetime64(job["start"]) + d,
            "quantity": quantity[k, d].astype(np.int64), "price": price[k, d],
            "promotion": promotion[k, d].astype(np.int64), "category": job["category"][k]}


def write_synthetic(path: str | os.PathLike, num_skus: int = 1000, days: int = 365, *,
                    attributes: str | os.PathLike | None = None, start: str = "2024-01-01",
                    categories: int = 8, seed: int = 0, workers: int = 1
                    ) -> tuple[pathlib.Path, pathlib.Path]:
    """Writes :func:`synthetic_sales` to ``path`` (``.csv``, ``.csv.gz`` or ``.parquet``) and
    its attribute table to ``attributes`` (default: ``<path stem>.attributes.<suffix>``);
    returns both paths. Written CHUNK SKUs at a time (a million SKUs fit in memory), generated
    by ``workers`` processes (the same file for any number)."""
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
    attrs, chunks = _generate(num_skus, days, start, categories, seed, workers)

    def table(columns: dict):
        return pa.table({k: pa.array(v.astype("datetime64[D]") if v.dtype.kind == "M" else v)
                         for k, v in columns.items()})

    for target, parts in ((path, chunks), (attributes, iter([attrs]))):
        sink = pa.CompressedOutputStream(str(target), "gzip") if suffix == ".csv.gz" else \
            pa.OSFile(str(target), "wb")
        out = None
        try:
            for part in parts:
                t = table(part)
                if out is None:
                    out = (pq.ParquetWriter(sink, t.schema) if suffix == ".parquet" else
                           pcsv.CSVWriter(sink, t.schema))
                out.write_table(t)
        finally:
            if out is not None:
                out.close()
            sink.close()
    return path, attributes
