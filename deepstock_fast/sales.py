"""Sales histories as they are stored: long-format rows (SKU, date, quantity, ...), read once and
cached next to the source in a binary form.

A long-format file (CSV, ``.csv.gz`` or Parquet) has one row per SKU and day with sales, and
optional columns:

- ``warehouse``: the series are then SKU-warehouse pairs (ids ``"<sku>@<warehouse>"``);
- numeric columns (price, promotion flag, any numeric feature): exogenous features, per series
  and day; a day without a row carries the last known value forward (the first known one
  backward before it);
- static attributes per series, constant over its rows: ``lead_time``, ``holding_cost``,
  ``penalty_cost``, ``order_cost``, ``review_period`` (numbers), ``category`` (text); in the
  same file, or in a second table keyed by the SKU column (and the warehouse column, if it has
  one).

Days between the first and the last date without a row are zero sales (``missing="zero"``) or
refused (``missing="error"``); two rows of one series and day are summed
(``duplicates="sum"``) or refused (``duplicates="error"``). Every bad value raises a
``ValueError`` naming the file, the row (as a spreadsheet counts them: the header is row 1 of a
CSV) and the column.

:func:`read_sales` returns a :class:`SalesData` ([series, day] tensors). It is cached in
``<file>.deepstock.npz`` next to the source (rebuilt when the source's size or modification
time, the attribute table's, or the reading options change) and in the process, so that a
run's many configs and environments of one file parse it once.
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import sys
import tempfile
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

#: Static per-series attributes: column name -> numeric kind ("int", "float") or "text".
ATTRIBUTES = {"lead_time": "int", "holding_cost": "float", "penalty_cost": "float",
              "order_cost": "float", "review_period": "int", "category": "text"}
MISSING = ("zero", "error")
DUPLICATES = ("sum", "error")
CACHE_SUFFIX = ".deepstock.npz"
CACHE_VERSION = 1
MAX_QUANTITY = 1e9  # as demand.MAX_QUANTITY (not imported: demand imports this module)


@dataclass
class SalesData:
    """A catalog's sales history: K series (SKUs or SKU-warehouse pairs) over D consecutive
    days from ``start``.

    demand: [K, D] units sold per day (float32 when every value is exact in float32, as whole
    units below 2^24 are; else float64); features: column -> [K, D] float32;
    attributes: column of :data:`ATTRIBUTES` -> [K] array (int64, float64 or str), only
    those the data has; series: [K] ids (str).
    """

    series: np.ndarray
    start: datetime.date
    demand: Tensor
    features: dict[str, Tensor] = field(default_factory=dict)
    attributes: dict[str, np.ndarray] = field(default_factory=dict)
    source: str = ""

    @property
    def num_series(self) -> int:
        return self.demand.shape[0]

    @property
    def days(self) -> int:
        return self.demand.shape[1]

    def date(self, day: int) -> datetime.date:
        return self.start + datetime.timedelta(days=int(day))

    def day_index(self, when, name: str = "date") -> int:
        """The day index of ``when``: a date (``"2024-03-01"``, a ``datetime.date``) or a
        fraction of the days in (0, 1) (0.8: the day 80% of the way in)."""
        if isinstance(when, float) and not isinstance(when, bool):
            if not 0 < when < 1:
                raise ValueError(f"{name} must be a date or a fraction in (0, 1), got {when}")
            return int(round(when * self.days))
        try:
            date = when if isinstance(when, datetime.date) else datetime.date.fromisoformat(
                str(when))
        except ValueError:
            raise ValueError(f"{name} must be a date YYYY-MM-DD or a fraction in (0, 1), got "
                             f"{when!r}") from None
        day = (date - self.start).days
        if not 0 <= day <= self.days:
            raise ValueError(f"{name} {date} is outside the data ({self.start} .. "
                             f"{self.date(self.days - 1)})")
        return day


def _fail(name: str, where: str, what: str):
    raise ValueError(f"sales file {name}: {where}{': ' if where else ''}{what}")


def _stat_key(path: pathlib.Path | None) -> list | None:
    if path is None:
        return None
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


_MEMO: OrderedDict = OrderedDict()
_MEMO_SIZE = 2


def read_sales(path: str | os.PathLike, *, sku_column: str = "sku", date_column: str = "date",
               quantity_column: str = "quantity", warehouse_column: str | None = None,
               features: list[str] | None = None, attributes: str | os.PathLike | None = None,
               missing: str = "zero", duplicates: str = "sum", cache: bool = True
               ) -> SalesData:
    """The :class:`SalesData` of a long-format sales file (module docstring).

    Args:
        sku_column, date_column, quantity_column: the columns' names.
        warehouse_column: the warehouse column (series are SKU-warehouse pairs); None: the
            column ``warehouse`` when the file has one.
        features: the numeric columns to keep as exogenous features; None: every numeric
            column that is not one of the above or an attribute.
        attributes: a second table of static attributes (columns of :data:`ATTRIBUTES`), one
            row per SKU (per SKU and warehouse when it has the warehouse column).
        missing: ``"zero"`` or ``"error"`` for days without a row; ``duplicates``: ``"sum"`` or
            ``"error"`` for two rows of one series and day.
        cache: read and write ``<path>.deepstock.npz`` (skipped, with a note, where the
            directory is not writable).
    """
    name = str(path)
    p = pathlib.Path(path)
    if missing not in MISSING:
        raise ValueError(f"missing must be one of {MISSING}, got {missing!r}")
    if duplicates not in DUPLICATES:
        raise ValueError(f"duplicates must be one of {DUPLICATES}, got {duplicates!r}")
    for what, file in (("sales file", p), ("attributes file", attributes)):
        if file is not None and not pathlib.Path(file).is_file():
            raise ValueError(f"{what} {file}: no such file")
    attr_path = pathlib.Path(attributes) if attributes is not None else None
    options = dict(sku_column=sku_column, date_column=date_column,
                   quantity_column=quantity_column, warehouse_column=warehouse_column,
                   features=None if features is None else list(features), missing=missing,
                   duplicates=duplicates)
    key = json.dumps({"version": CACHE_VERSION, "source": _stat_key(p),
                      "attributes": _stat_key(attr_path), "options": options})
    if key in _MEMO:
        _MEMO.move_to_end(key)
        return _MEMO[key]
    cached = cache_path(p)
    data = _load_cache(cached, key) if cache else None
    if data is None:
        data = _parse(p, name, attr_path, **options)
        if cache:
            _write_cache(cached, key, data)
    data.source = name
    _MEMO[key] = data
    while len(_MEMO) > _MEMO_SIZE:
        _MEMO.popitem(last=False)
    return data


# ---- the binary cache --------------------------------------------------------------------------
def cache_path(source: pathlib.Path) -> pathlib.Path:
    """Where the binary cache of ``source`` goes: next to it, ``<name>.deepstock.npz``."""
    return source.with_name(source.name + CACHE_SUFFIX)


def load_arrays(path: pathlib.Path, key: str) -> dict[str, np.ndarray] | None:
    """The arrays cached at ``path`` when it was written for ``key`` (else None: missing,
    stale or unreadable). No pickles."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if "key" not in z.files or str(z["key"]) != key:
                return None
            return {name: z[name] for name in z.files if name != "key"}
    except (OSError, KeyError, ValueError, EOFError):
        return None


def save_arrays(path: pathlib.Path, key: str, arrays: dict[str, np.ndarray]) -> None:
    """Writes ``arrays`` and ``key`` to ``path`` atomically (a reader never sees half a file);
    a directory that is not writable only costs the next run a parse."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    except OSError as e:
        print(f"note: cannot cache {path} ({e.strerror}); the file is parsed each run",
              file=sys.stderr)
        return
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, key=np.array(key), **arrays)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as a file the user writes (mkstemp's is 0600)
        os.replace(tmp, path)
    except OSError as e:  # a full disk: the cache is only an optimisation
        pathlib.Path(tmp).unlink(missing_ok=True)
        print(f"note: cannot cache {path} ({e.strerror or e})", file=sys.stderr)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def _load_cache(path: pathlib.Path, key: str) -> SalesData | None:
    z = load_arrays(path, key)
    if z is None:
        return None
    try:
        features = {str(n): torch.from_numpy(z[f"feature_{i}"])
                    for i, n in enumerate(z["feature_names"])}
        attrs = {str(n): z[f"attribute_{n}"] for n in z["attribute_names"]}
        return SalesData(z["series"], datetime.date.fromisoformat(str(z["start"])),
                         torch.from_numpy(z["demand"]), features, attrs)
    except (KeyError, ValueError):
        return None


def _write_cache(path: pathlib.Path, key: str, data: SalesData) -> None:
    arrays = {"series": data.series, "start": np.array(str(data.start)),
              "demand": data.demand.numpy(),
              "feature_names": np.array(list(data.features), dtype=str),
              "attribute_names": np.array(list(data.attributes), dtype=str)}
    arrays.update({f"feature_{i}": t.numpy() for i, t in enumerate(data.features.values())})
    arrays.update({f"attribute_{n}": v for n, v in data.attributes.items()})
    save_arrays(path, key, arrays)


# ---- parsing -------------------------------------------------------------------------------------
def _read_table(path: pathlib.Path, name: str, text_columns: list[str]):
    """The file as a pyarrow Table (text columns read as strings), and the offset from a row's
    0-based index to its row number in the file (2 for a CSV's header, 1 for Parquet)."""
    try:
        import pyarrow as pa
        import pyarrow.csv as pcsv
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError(f"sales file {name}: reading sales needs pyarrow "
                         "(pip install deepstock_fast[parquet])") from None
    lower = path.name.lower()
    try:
        if lower.endswith(".parquet"):
            return pq.read_table(path), 1
        if lower.endswith((".csv", ".csv.gz")):
            types = {c: pa.string() for c in text_columns}  # absent ones are ignored
            return pcsv.read_csv(path, convert_options=pcsv.ConvertOptions(
                column_types=types, strings_can_be_null=False)), 2
    except (pa.ArrowException, OSError) as e:
        raise ValueError(f"sales file {name}: not a readable table ({' '.join(str(e).split())})"
                         ) from None
    raise ValueError(f"sales file {name}: unknown suffix; use .csv, .csv.gz or .parquet")


def _column(table, column: str, name: str, role: str):
    if column not in table.column_names:
        raise ValueError(f"sales file {name}: no column {column!r} ({role}); it has "
                         f"{table.column_names}")
    import pyarrow as pa
    values = table.column(column)
    if pa.types.is_string(values.type):  # 32-bit offsets overflow past 2 GiB of text (1M SKUs)
        values = values.cast(pa.large_string())
    return values.combine_chunks()


def _first_null(arr, name, offset, column):
    if arr.null_count:
        i = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
        _fail(name, f"row {i + offset}, column {column!r}", "a missing value")


def _numbers(arr, name: str, offset: int, column: str) -> np.ndarray:
    """A numeric column as float64; the first cell that is not a number raises."""
    import pyarrow as pa
    import pyarrow.compute as pc
    _first_null(arr, name, offset, column)
    if pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type) or \
            pa.types.is_boolean(arr.type):
        return pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False)
    values = arr.to_pylist()
    for i, v in enumerate(values):
        try:
            if "_" in v:  # Python's digit separators ('1_000') are not numbers in a file
                raise ValueError
            float(v)
        except (TypeError, ValueError):
            _fail(name, f"row {i + offset}, column {column!r}", f"{v!r} is not a number")
    return np.asarray(values, dtype=np.float64)


def _days(arr, name: str, offset: int, column: str) -> np.ndarray:
    """A date column as int64 days since 1970-01-01."""
    import pyarrow as pa
    import pyarrow.compute as pc
    _first_null(arr, name, offset, column)
    if pa.types.is_timestamp(arr.type):
        arr = pc.cast(pc.floor_temporal(arr, unit="day"), pa.date32())
    elif pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        text = pc.utf8_trim_whitespace(arr)
        try:
            parsed = pc.cast(pc.strptime(text, format="%Y-%m-%d", unit="s"), pa.date32())
            # strptime rolls 2024-02-30 over into March: a date must print as it was written
            exact = pc.all(pc.equal(pc.strftime(parsed, format="%Y-%m-%d"), text)).as_py()
        except pa.ArrowInvalid:
            exact = False
        if not exact:
            for i, v in enumerate(arr.to_pylist()):
                try:
                    datetime.date.fromisoformat(v.strip())
                except ValueError:
                    _fail(name, f"row {i + offset}, column {column!r}",
                          f"{v!r} is not a date (YYYY-MM-DD)")
            _fail(name, f"column {column!r}", "dates must be YYYY-MM-DD")
        arr = parsed
    if not pa.types.is_date32(arr.type):
        _fail(name, f"column {column!r}", f"has type {arr.type}; dates must be YYYY-MM-DD")
    return arr.cast(pa.int32()).to_numpy(zero_copy_only=False).astype(np.int64)


def _codes(arr):
    """(codes [N] int64, values [K] str sorted): each row's series among the sorted ids."""
    import pyarrow.compute as pc
    encoded = pc.dictionary_encode(arr)
    values = np.asarray(encoded.dictionary.to_pylist(), dtype=str)
    order = np.argsort(values, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    codes = rank[encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)]
    return codes, values[order]


def _at():
    """The separator of a SKU@warehouse series name, typed like :func:`_text`'s columns."""
    import pyarrow as pa
    return pa.scalar("@", pa.large_string())


def _text(arr):
    import pyarrow as pa
    import pyarrow.compute as pc
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        return arr
    return pc.cast(arr, pa.large_string())


def _parse(path: pathlib.Path, name: str, attr_path: pathlib.Path | None, *, sku_column,
           date_column, quantity_column, warehouse_column, features, missing, duplicates
           ) -> SalesData:
    import pyarrow as pa
    import pyarrow.compute as pc
    texts = [sku_column, warehouse_column or "warehouse", "category"]
    table, offset = _read_table(path, name, texts)
    if table.num_rows == 0:
        _fail(name, "", "has no rows")
    if warehouse_column is None and "warehouse" in table.column_names:
        warehouse_column = "warehouse"
    sku = _text(_column(table, sku_column, name, "--sku-column"))
    _first_null(sku, name, offset, sku_column)
    if warehouse_column is not None:
        warehouse = _text(_column(table, warehouse_column, name, "warehouse"))
        _first_null(warehouse, name, offset, warehouse_column)
        key = pc.binary_join_element_wise(sku, warehouse, _at())
    else:
        key = sku
    codes, series = _codes(key)
    day = _days(_column(table, date_column, name, "--date-column"), name, offset, date_column)
    quantity = _numbers(_column(table, quantity_column, name, "--quantity-column"), name,
                        offset, quantity_column)
    bad = ~(np.isfinite(quantity) & (quantity >= 0) & (quantity <= MAX_QUANTITY))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        _fail(name, f"row {i + offset}, column {quantity_column!r}",
              f"{quantity[i].item()!r}: a quantity must be finite, >= 0 and <= {MAX_QUANTITY:g}")
    first = int(day.min())
    K, D = len(series), int(day.max()) - first + 1
    if K * D > 2**31:
        _fail(name, "", f"{K} series x {D} days is too large")
    flat = codes * D + (day - first)
    quantity = np.require(quantity, requirements="W")
    counts = torch.bincount(torch.from_numpy(flat), minlength=K * D).numpy()
    if duplicates == "error" and (counts > 1).any():
        rows = np.flatnonzero(flat == flat[np.flatnonzero(counts[flat] > 1)[0]])[:2]
        k, d = divmod(int(flat[rows[0]]), D)
        date = datetime.date(1970, 1, 1) + datetime.timedelta(days=first + d)
        _fail(name, f"rows {rows[0] + offset} and {rows[1] + offset}",
              f"both hold series {str(series[k])!r} on {date} (duplicates='sum' adds them up)")
    if missing == "error" and (counts == 0).any():
        k, d = divmod(int(np.flatnonzero(counts == 0)[0]), D)
        _fail(name, "", f"no row for series {str(series[k])!r} on "
              f"{datetime.date(1970, 1, 1) + datetime.timedelta(days=first + d)} "
              "(missing='zero' reads a day without a row as zero sales)")
    demand = torch.zeros(K * D, dtype=torch.float64).index_add_(
        0, torch.from_numpy(flat), torch.from_numpy(quantity)).view(K, D)

    used = {sku_column, date_column, quantity_column, warehouse_column}
    attrs = {}
    for column, kind in ATTRIBUTES.items():
        if column in table.column_names and column not in used:
            attrs[column] = _constant(table.column(column).combine_chunks(), codes, K, kind,
                                      name, offset, column, series)
    if attr_path is not None:
        attrs.update(_attribute_table(attr_path, series, sku_column, warehouse_column))
    if features is None:
        features = [c for c in table.column_names if c not in used and c not in ATTRIBUTES
                    and (pa.types.is_integer(table.schema.field(c).type)
                         or pa.types.is_floating(table.schema.field(c).type)
                         or pa.types.is_boolean(table.schema.field(c).type))]
    exogenous = {}
    for column in features:
        values = _numbers_nullable(_column(table, column, name, "feature"), name, offset,
                                   column)
        exogenous[column] = torch.from_numpy(_fill(values, flat, K, D).astype(np.float32))
    start = datetime.date(1970, 1, 1) + datetime.timedelta(days=first)
    small = demand.float()
    if torch.equal(small.double(), demand):  # exact in float32: half the bytes to read back
        demand = small
    return SalesData(series, start, demand, exogenous, attrs)


def _numbers_nullable(arr, name, offset, column) -> np.ndarray:
    """A feature column as float64 with NaN where a cell is empty."""
    import pyarrow as pa
    import pyarrow.compute as pc
    if not (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type)
            or pa.types.is_boolean(arr.type)):
        valid = arr.filter(arr.is_valid())
        _numbers(valid, name, offset, column)  # names the first bad cell (row of the valid)
        _fail(name, f"column {column!r}", f"has type {arr.type}; a feature must be numeric")
    values = pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False)
    bad = np.isinf(values)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        _fail(name, f"row {i + offset}, column {column!r}", f"{values[i].item()!r} is not finite")
    return values


def _fill(values: np.ndarray, flat: np.ndarray, K: int, D: int) -> np.ndarray:
    """[K, D] of a feature: the mean of a day's rows; days without a value carry the last known
    value forward (the first known one backward before it; 0 for a series without any)."""
    v, f = torch.from_numpy(np.require(values, requirements="W")), torch.from_numpy(flat)
    known = ~torch.isnan(v)
    if not bool(known.all()):
        v, f = v[known], f[known]
    total = torch.zeros(K * D, dtype=torch.float64).index_add_(0, f, v)
    count = torch.zeros(K * D, dtype=torch.float64).index_add_(0, f, torch.ones_like(v))
    out = (total / count).view(K, D)                          # NaN where no value
    has = count.view(K, D) > 0
    days = torch.arange(D).expand(K, D)
    index = torch.where(has, days, -1).cummax(1).values      # last known day at or before
    first = torch.where(has.any(1), has.to(torch.int8).argmax(1), 0)  # first known day
    index = torch.where(index < 0, first.view(-1, 1), index)
    return out.gather(1, index).nan_to_num_(0.0).numpy()


def _constant(arr, codes, K, kind, name, offset, column, series) -> np.ndarray:
    """A per-series attribute read from the rows: one value per series, or an error naming the
    first row that differs from its series' first row."""
    import pyarrow.compute as pc
    dictionary = None
    if kind == "text":  # compared as dictionary codes: millions of rows, a few categories
        _first_null(arr, name, offset, column)
        encoded = pc.dictionary_encode(_text(arr))
        dictionary = np.asarray(encoded.dictionary.to_pylist(), dtype=str)
        values = encoded.indices.to_numpy(zero_copy_only=False)
    else:
        values = _numbers(arr, name, offset, column)
    first = np.empty(K, dtype=np.int64)
    first[codes[::-1]] = np.arange(len(codes) - 1, -1, -1)
    per = values[first]
    differ = per[codes] != values
    if differ.any():
        i = int(np.flatnonzero(differ)[0])
        show = (lambda v: str(dictionary[v])) if dictionary is not None else float
        _fail(name, f"row {i + offset}, column {column!r}",
              f"{show(values[i])!r} differs from {show(per[codes[i]])!r} in row "
              f"{first[codes[i]] + offset} of series {str(series[codes[i]])!r}: an attribute "
              "is one value per series")
    return _attribute_values(per if dictionary is None else dictionary[per], kind, name, column)


def _attribute_values(values: np.ndarray, kind: str, name: str, column: str) -> np.ndarray:
    if kind == "text":
        return values.astype(str)
    if not np.isfinite(values).all() or (values < 0).any():
        _fail(name, f"column {column!r}", "attributes must be finite and >= 0")
    if kind == "int":
        if (values != np.round(values)).any():
            _fail(name, f"column {column!r}", "must hold whole numbers")
        return values.astype(np.int64)
    return values.astype(np.float64)


def _attribute_table(path: pathlib.Path, series: np.ndarray, sku_column: str,
                     warehouse_column: str | None) -> dict[str, np.ndarray]:
    """Attributes of every series from a second table keyed by SKU (and warehouse)."""
    import pyarrow.compute as pc
    name = str(path)
    table, offset = _read_table(path, name, [sku_column, warehouse_column or "warehouse",
                                             "category"])
    label = f"attributes file {name}"
    sku = _text(_column(table, sku_column, name, "--sku-column"))
    by_warehouse = warehouse_column is not None and warehouse_column in table.column_names
    key = pc.binary_join_element_wise(sku, _text(table.column(warehouse_column)
                                                 .combine_chunks()), _at()) if by_warehouse else sku
    keys = np.asarray(key.to_pylist(), dtype=str)
    unique, index, count = np.unique(keys, return_index=True, return_counts=True)
    if (count > 1).any():
        k = unique[np.flatnonzero(count > 1)[0]]
        rows = np.flatnonzero(keys == k)[:2] + offset
        raise ValueError(f"{label}: rows {rows[0]} and {rows[1]} both describe {str(k)!r}")
    lookup = series if by_warehouse or warehouse_column is None else np.asarray(
        [s.rsplit("@", 1)[0] for s in series], dtype=str)
    pos = np.searchsorted(unique, lookup)
    found = (pos < len(unique)) & (unique[np.minimum(pos, len(unique) - 1)] == lookup)
    if not found.all():
        lost = lookup[~found]
        raise ValueError(f"{label}: no row for SKU {str(lost[0])!r}"
                         f"{f' (and {len(lost) - 1} more)' if len(lost) > 1 else ''}")
    rows = index[pos]
    out = {}
    for column, kind in ATTRIBUTES.items():
        if column in table.column_names:
            arr = table.column(column).combine_chunks()
            values = (np.asarray(_text(arr).to_pylist(), dtype=str) if kind == "text"
                      else _numbers(arr, f"{name} (attributes)", offset, column))
            out[column] = _attribute_values(values[rows], kind, name, column)
    if not out:
        raise ValueError(f"{label}: has none of the attribute columns {list(ATTRIBUTES)}")
    return out
