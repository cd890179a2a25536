"""Demand processes: per-SKU parameters, sampled on the device from a seeded torch.Generator.

Every process has ``num_skus`` and ``sample(days, generator=..., paths=1) -> [S, N, days]`` (float,
on the process's device). The same generator state gives the same demand; parameters may differ
per SKU (shape [S]) or be shared (a number). Negative draws of continuous processes are set to
zero, as the paper's generators do (``max(0, .)``).

The paper's synthetic settings (docs/METHOD.md) are reproduced as documented there; where
the summary leaves a detail open, the choice is stated on the class.

:data:`DEMAND_KINDS` maps each config kind (``{"kind": "poisson", "rate": 5.0}``) to its class;
a class joins it with ``@register("name")`` and says there which parameters it takes
(``params``, ``optional_params``: name -> check), how a config builds it (``from_spec``) and
what kind of SKUs it makes (``iid``, ``drawn``, ``has_std``). Configs, their checks and the
reference costs (``compare``) read nothing else.
"""

from __future__ import annotations

import csv
import datetime
import gzip
import math
import os
import pathlib
import re
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from . import checks
from . import sales as sales_lib

#: Largest demand quantity (a per-day mean, a replayed value) the package accepts: costs of a
#: whole episode then stay finite even in float32.
MAX_QUANTITY = 1e9
MAX_POISSON_RATE = 1e6    # the inverse-CDF table of a rate has about rate entries
_QUANTITY = checks.number(0, MAX_QUANTITY)
_SIGNED_QUANTITY = checks.number(-MAX_QUANTITY, MAX_QUANTITY)
_SEED = checks.integer(0, 2**63 - 1)


def _per_sku(value, num_skus: int, name: str, device) -> Tensor:
    t = torch.as_tensor(value, dtype=torch.float64, device=device).reshape(-1)
    if t.numel() not in (1, num_skus):
        raise ValueError(f"{name} needs 1 or num_skus = {num_skus} values, got {t.numel()}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite")
    return t.expand(num_skus).clone()


def _check_days(days: int, paths: int) -> None:
    if days < 1 or paths < 1:
        raise ValueError(f"days and paths must be >= 1, got days={days}, paths={paths}")


class DemandProcess:
    """What a config needs to know of a demand kind, as class attributes (the processes
    themselves are dataclasses with ``num_skus`` and ``sample``):

    - ``kind``: its name in configs (set by :func:`register`);
    - ``params`` / ``optional_params``: parameter -> check(name, value), required / optional
      (:mod:`deepstock_fast.checks`; a per-SKU parameter takes one value or a list);
    - ``iid``: every SKU draws i.i.d. days from one distribution, so SKUs with the same
      parameters are identical copies (a long-run test may use as many as it likes);
    - ``drawn``: the SKUs are trajectories drawn from one distribution (the paper's settings),
      so a test may draw as many as it likes;
    - ``has_std``: a per-SKU std or sigma (the ``std`` extra observation);
    - ``catalog``: the SKUs are the rows of a given history (a catalog: replay, sales); an
      environment of any size draws its SKUs from them (:meth:`Replay.start_range`);
    - ``trajectory_params``: each SKU's parameters are themselves draws (from
      ``instance_seed``), so a set of trajectories draws its own (:data:`DATASET_PARAMS`).

    Every kind but a catalog also takes :data:`DATASET_PARAMS`.
    """

    kind: ClassVar[str]
    params: ClassVar[dict] = {}
    optional_params: ClassVar[dict] = {}
    iid: ClassVar[bool] = False
    drawn: ClassVar[bool] = False
    has_std: ClassVar[bool] = False
    catalog: ClassVar[bool] = False
    trajectory_params: ClassVar[bool] = False

    @classmethod
    def from_spec(cls, spec: dict, num_skus: int, days: int, device) -> "DemandProcess":
        """The process of a config's checked ``demand`` parameters (``spec``, without "kind")
        for ``num_skus`` SKUs on ``device``; ``days``: the days of an episode."""
        return cls(**spec, num_skus=num_skus, device=device)


#: Demand parameters of every kind but a catalog: ``trajectories`` = n makes the instance a
#: fixed training set, n trajectories drawn once from ``dataset_seed``'s "dataset" stream
#: (with their own parameters where the kind draws them per trajectory) that every training
#: episode draws its SKUs from, as from a catalog; its validation and test episodes are fresh
#: trajectories (``InstanceConfig.for_period``). Without it, every episode draws new ones.
DATASET_PARAMS = {"trajectories": checks.integer(1, 10**7), "dataset_seed": _SEED}

#: Demand kind (a config's ``demand["kind"]``) -> its class.
DEMAND_KINDS: dict[str, type[DemandProcess]] = {}


def register(kind: str):
    """Class decorator: ``kind`` in a config's ``demand`` means this :class:`DemandProcess`."""
    def add(cls: type[DemandProcess]) -> type[DemandProcess]:
        if kind in DEMAND_KINDS:
            raise ValueError(f"demand kind {kind!r} is registered already "
                             f"({DEMAND_KINDS[kind].__name__})")
        cls.kind = kind
        DEMAND_KINDS[kind] = cls
        return cls
    return add


@register("poisson")
@dataclass
class Poisson(DemandProcess):
    """Poisson(rate) demand per day."""

    params = {"rate": checks.per_sku(checks.number(0, MAX_POISSON_RATE))}
    iid = True

    rate: Tensor | float
    num_skus: int = 1
    device: str | torch.device = "cpu"

    def __post_init__(self):
        self.rate = _per_sku(self.rate, self.num_skus, "rate", self.device)
        if (self.rate < 0).any():
            raise ValueError("rate must be >= 0")
        # Inverse-CDF sampling (a uniform and a binary search per draw: about 3x faster than
        # torch.poisson on a CPU): one CDF row per distinct rate, up to where the tail < 1e-16.
        self._rates, self._row = torch.unique(self.rate, return_inverse=True)
        top = float(self._rates.max())
        size = int(top + 12 * math.sqrt(top) + 30)
        self._cdf = None  # too many distinct large rates for a table: torch.poisson
        if size * len(self._rates) <= 2**24:
            k = torch.arange(size, dtype=torch.float64, device=self.rate.device)
            rates = self._rates.unsqueeze(1)
            log_pmf = torch.xlogy(k, rates) - rates - torch.lgamma(k + 1)
            self._cdf = log_pmf.exp().cumsum(1).clamp(max=1.0)  # [distinct rates, K]

    def sample(self, days: int, *, generator: torch.Generator, paths: int = 1) -> Tensor:
        _check_days(days, paths)
        u = torch.rand(self.num_skus, paths * days, generator=generator, dtype=torch.float64,
                       device=self.rate.device)
        if self._cdf is not None and len(self._rates) == 1:
            k = torch.searchsorted(self._cdf[0], u, right=True, out_int32=True)
        elif self._cdf is not None and self._cdf.shape[1] * self.num_skus <= 2**24:
            k = torch.searchsorted(self._cdf[self._row], u, right=True, out_int32=True)
        else:  # many distinct rates: a CDF row per SKU would cost too much memory
            rates = self.rate.view(-1, 1, 1).expand(self.num_skus, paths, days).contiguous()
            return torch.poisson(rates, generator=generator)
        return u.copy_(k).view(self.num_skus, paths, days)  # into u's memory: no fresh tensor


@register("normal")
@dataclass
class Normal(DemandProcess):
    """Normal(mean, std) demand per day, negative draws set to 0, optionally rounded."""

    params = {"mean": checks.per_sku(_SIGNED_QUANTITY), "std": checks.per_sku(_QUANTITY)}
    optional_params = {"round": checks.boolean}
    iid = True
    has_std = True

    mean: Tensor | float
    std: Tensor | float
    num_skus: int = 1
    round: bool = False
    device: str | torch.device = "cpu"

    def __post_init__(self):
        self.mean = _per_sku(self.mean, self.num_skus, "mean", self.device)
        self.std = _per_sku(self.std, self.num_skus, "std", self.device)
        if (self.std < 0).any():
            raise ValueError("std must be >= 0")

    def sample(self, days: int, *, generator: torch.Generator, paths: int = 1) -> Tensor:
        _check_days(days, paths)
        z = torch.randn(self.num_skus, paths, days, generator=generator, dtype=torch.float64,
                        device=self.mean.device)
        d = (self.mean.view(-1, 1, 1) + self.std.view(-1, 1, 1) * z).clamp(min=0)
        return d.round() if self.round else d


@register("uniform_int")
@dataclass
class UniformInt(DemandProcess):
    """Integer demand uniform on low, low + 1, ..., high - 1."""

    params = {"low": checks.per_sku(checks.number(0, MAX_QUANTITY, whole=True)),
              "high": checks.per_sku(checks.number(1, MAX_QUANTITY, whole=True))}
    iid = True

    low: Tensor | float
    high: Tensor | float
    num_skus: int = 1
    device: str | torch.device = "cpu"

    def __post_init__(self):
        self.low = _per_sku(self.low, self.num_skus, "low", self.device)
        self.high = _per_sku(self.high, self.num_skus, "high", self.device)
        if (self.low < 0).any() or (self.high <= self.low).any():
            raise ValueError("need 0 <= low < high")

    def sample(self, days: int, *, generator: torch.Generator, paths: int = 1) -> Tensor:
        _check_days(days, paths)
        u = torch.rand(self.num_skus, paths, days, generator=generator, dtype=torch.float64,
                       device=self.low.device)
        width = (self.high - self.low).view(-1, 1, 1)
        return (self.low.view(-1, 1, 1) + torch.floor(u * width)).minimum(
            self.high.view(-1, 1, 1) - 1)


@register("geometric")
@dataclass
class Geometric(DemandProcess):
    """Geometric demand on 0, 1, 2, ... with the given mean: P(k) = p (1 - p)^k, p = 1/(1+mean)."""

    params = {"mean": checks.per_sku(checks.number(0, MAX_QUANTITY, open_low=True))}
    iid = True

    mean: Tensor | float
    num_skus: int = 1
    device: str | torch.device = "cpu"

    def __post_init__(self):
        self.mean = _per_sku(self.mean, self.num_skus, "mean", self.device)
        if (self.mean <= 0).any():
            raise ValueError("mean must be > 0")

    def sample(self, days: int, *, generator: torch.Generator, paths: int = 1) -> Tensor:
        _check_days(days, paths)
        u = torch.rand(self.num_skus, paths, days, generator=generator, dtype=torch.float64,
                       device=self.mean.device)
        q = (self.mean / (1 + self.mean)).view(-1, 1, 1)  # 1 - p
        return torch.floor(torch.log1p(-u) / torch.log(q))


@register("paper_independent")
@dataclass
class PaperIndependent(DemandProcess):
    """The paper's setting 1: each day t of the horizon has a low value, clip(N(10, 4)), and
    demand on day t is uniform on the integers low_t .. low_t + 4 for every SKU and path.

    Choices where the summary is silent: 4 is the standard deviation; low_t is rounded to an
    integer and clipped at 0; the lows are drawn once per instance (from ``instance_seed``) and
    shared by all trajectories, so that the day index is the informative feature.
    """

    optional_params = {"instance_seed": _SEED}
    drawn = True

    horizon: int
    num_skus: int = 1
    instance_seed: int = 0
    device: str | torch.device = "cpu"
    lows: Tensor = field(init=False)

    @classmethod
    def from_spec(cls, spec, num_skus, days, device) -> "PaperIndependent":
        return cls(days, num_skus, spec.get("instance_seed", 0), device)

    def __post_init__(self):
        g = torch.Generator().manual_seed(self.instance_seed)
        lows = (10 + 4 * torch.randn(self.horizon, generator=g, dtype=torch.float64))
        self.lows = lows.round().clamp(min=0).to(self.device)

    def sample(self, days: int, *, generator: torch.Generator, paths: int = 1) -> Tensor:
        _check_days(days, paths)
        if days > self.horizon:
            raise ValueError(f"days {days} exceeds the instance horizon {self.horizon}")
        u = torch.rand(self.num_skus, paths, days, generator=generator, dtype=torch.float64,
                       device=self.lows.device)
        return self.lows[:days] + torch.floor(5 * u)


@register("ar1")
@dataclass
class AR1(DemandProcess):
    """d_t = max(0, phi d_{t-1} + (1 - phi) base + eps_t), eps_t ~ N(0, sigma^2), d_0 = base.

    The paper's settings 2 and 3 draw per trajectory phi ~ U(0.3, 0.9), base ~ U(5, 10),
    sigma ~ U(2, 8): :meth:`paper`.
    """

    params = {"phi": checks.per_sku(checks.number(-1, 1, open_low=True, open_high=True)),
              "base": checks.per_sku(_SIGNED_QUANTITY), "sigma": checks.per_sku(_QUANTITY)}
    has_std = True

    phi: Tensor | float
    base: Tensor | float
    sigma: Tensor | float
    num_skus: int = 1
    device: str | torch.device = "cpu"

    def __post_init__(self):
        self.phi = _per_sku(self.phi, self.num_skus, "phi", self.device)
        self.base = _per_sku(self.base, self.num_skus, "base", self.device)
        self.sigma = _per_sku(self.sigma, self.num_skus, "sigma", self.device)
        if (self.phi.abs() >= 1).any() or (self.sigma < 0).any():
            raise ValueError("need |phi| < 1 and sigma >= 0")

    @classmethod
    def paper(cls, num_skus: int, *, generator: torch.Generator, device="cpu") -> "AR1":
        u = torch.rand(3, num_skus, generator=generator, dtype=torch.float64)
        return cls(0.3 + 0.6 * u[0], 5 + 5 * u[1], 2 + 6 * u[2], num_skus, device)

    def sample(self, days: int, *, generator: torch.Generator, paths: int = 1) -> Tensor:
        _check_days(days, paths)
        eps = torch.randn(self.num_skus, paths, days, generator=generator, dtype=torch.float64,
                          device=self.phi.device) * self.sigma.view(-1, 1, 1)
        phi, base = self.phi.view(-1, 1), self.base.view(-1, 1)
        d = base.expand(self.num_skus, paths)
        out = []
        for t in range(days):
            d = (phi * d + (1 - phi) * base + eps[:, :, t]).clamp(min=0)
            out.append(d)
        return torch.stack(out, dim=2)


@register("paper_ar1")
class PaperAR1(AR1):
    """The paper's settings 2 and 3: :meth:`AR1.paper`'s parameters drawn from
    ``instance_seed``."""

    params = {}
    optional_params = {"instance_seed": _SEED}
    drawn = True
    trajectory_params = True

    @classmethod
    def from_spec(cls, spec, num_skus, days, device) -> "PaperAR1":
        g = torch.Generator().manual_seed(spec.get("instance_seed", 0))
        return cls.paper(num_skus, generator=g, device=device)


@register("paper_iid_normal")
class PaperIIDNormal(Normal):
    """The paper's setting 4: :func:`paper_iid_normal`'s sigmas drawn from ``instance_seed``."""

    params = {}
    optional_params = {"instance_seed": _SEED}
    iid = False  # sigma differs per SKU
    drawn = True
    trajectory_params = True

    @classmethod
    def from_spec(cls, spec, num_skus, days, device) -> "PaperIIDNormal":
        g = torch.Generator().manual_seed(spec.get("instance_seed", 0))
        return paper_iid_normal(num_skus, generator=g, device=device)


def paper_iid_normal(num_skus: int, *, generator: torch.Generator,
                     device="cpu") -> PaperIIDNormal:
    """The paper's setting 4: Normal(100, sigma) per day with sigma ~ U(5, 20) per SKU."""
    sigma = 5 + 15 * torch.rand(num_skus, generator=generator, dtype=torch.float64)
    return PaperIIDNormal(100.0, sigma, num_skus, device=device)


@register("replay")
@dataclass
class Replay(DemandProcess):
    """Given demand history [S, D] replayed as is (from a tensor, NumPy array, CSV or Parquet).

    ``sample`` returns the first ``days`` days of the history (one path; the generator is not
    used). :meth:`split` cuts the history in time into train / validation / test parts. Values
    must be finite, >= 0 and <= ``MAX_QUANTITY``. In a config: ``path`` (a file, with optional
    ``header`` and ``id_column``: :meth:`from_file`) or ``history`` (rows of numbers, one per
    SKU).
    """

    optional_params = {"path": checks.path, "history": checks.history,
                       "header": checks.optional(checks.boolean),
                       "id_column": checks.optional(checks.boolean)}

    history: Tensor
    catalog = True

    @classmethod
    def from_spec(cls, spec, num_skus, days, device) -> "Replay":
        """The history as given (its SKUs and days are checked against the config's there)."""
        if ("path" in spec) == ("history" in spec):
            raise ValueError("needs exactly one of 'path' or 'history'")
        if "history" in spec:
            extra = [k for k in ("header", "id_column") if k in spec]
            if extra:
                raise ValueError(f"{extra} apply to a 'path', not a 'history'")
            process = cls(torch.as_tensor(spec["history"], dtype=torch.float64))
        else:
            process = cls.from_file(spec["path"], header=spec.get("header"),
                                    id_column=spec.get("id_column"))
        return cls._trusted(process.history.to(device))

    def __post_init__(self):
        h = torch.as_tensor(self.history, dtype=torch.float64)
        if h.dim() != 2 or h.shape[0] < 1 or h.shape[1] < 1:
            raise ValueError(f"demand history must have shape [SKU, day], got {tuple(h.shape)}")
        if torch.isnan(h).any():
            sku, day = (int(v) for v in torch.nonzero(torch.isnan(h))[0])
            raise ValueError(f"demand history has missing values (first at SKU {sku}, day {day})")
        if not torch.isfinite(h).all() or (h < 0).any() or (h > MAX_QUANTITY).any():
            raise ValueError(f"demand history must be finite, non-negative and <= "
                             f"{MAX_QUANTITY:g}")
        self.history = h

    @property
    def num_skus(self) -> int:
        return self.history.shape[0]

    @classmethod
    def from_file(cls, path: str | os.PathLike, *, header: bool | None = None,
                  id_column: bool | None = None) -> "Replay":
        """The history [S, D] of a CSV (``.csv``, or gzip-compressed ``.csv.gz``) or Parquet
        (``.parquet``, needs pyarrow) file: one row per SKU, one column per day.

        CSV: UTF-8 (a byte-order mark is fine), comma-separated, every row as wide as the first;
        trailing blank lines are ignored, blank lines between rows are an error. Row 1 is a
        header when ``header`` is True, or, when ``header`` is None, when one of its cells (but a
        declared id column's) is not a number (``d0,d1,...``, dates). An all-numeric row 1 is data unless declared; one that
        counts days over 7 or more columns (``0,1,2,...`` or ``1,2,3,...``) is refused as
        ambiguous. Column 1 holds SKU ids (skipped) when ``id_column`` is True, or, when it is
        None, when the header names it ``sku``, ``sku_id``, ``id``, ``item``, ``item_id``,
        ``product``, ``product_id`` (any case) or leaves it empty (pandas' index); ids are never
        guessed from values. Parquet: every column is a day, except a first column declared by
        ``id_column`` or with one of those names (or ``__index_level_0__``); day columns must be
        int or float.

        Bad files raise ``ValueError`` naming the file and, where it applies, the row and column
        as a spreadsheet counts them (1-based, the header is row 1). A file is parsed once per
        process: later calls get the same history (keyed by path, size and modification time;
        do not modify it in place).
        """
        return cls._trusted(read_history(path, header=header, id_column=id_column))

    @classmethod
    def _trusted(cls, history: Tensor) -> "Replay":
        # read_history checked the values already: skip the passes over a large history
        self = cls.__new__(cls)
        self.history = history
        return self

    #: Exogenous columns (name -> [S, D]) and per-SKU attributes (name -> [S] array): none.
    exogenous: ClassVar[dict] = {}
    attributes: ClassVar[dict] = {}

    def start_range(self, days: int, history_days: int) -> tuple[int, int]:
        """The first and last day an episode's window of ``days`` days (``history_days`` of
        them before its day 0) may start on: a replayed matrix always starts at day 0."""
        if days > self.history.shape[1]:
            raise ValueError(f"days {days} exceeds the history's {self.history.shape[1]} days")
        return 0, 0

    def split(self, train: float = 0.6, validation: float = 0.2) -> tuple["Replay", ...]:
        """Time-based split into (train, validation, test) by fractions of the days."""
        if not (0 < train and 0 < validation and train + validation < 1):
            raise ValueError("need 0 < train, 0 < validation, train + validation < 1")
        days = self.history.shape[1]
        a = int(round(train * days))
        b = int(round((train + validation) * days))
        if not 0 < a < b < days:
            raise ValueError(f"{days} days are too few for this split")
        return Replay(self.history[:, :a]), Replay(self.history[:, a:b]), Replay(self.history[:, b:])

    def sample(self, days: int, *, generator: torch.Generator | None = None,
               paths: int = 1) -> Tensor:
        _check_days(days, paths)
        if days > self.history.shape[1]:
            raise ValueError(f"days {days} exceeds the history's {self.history.shape[1]} days")
        return self.history[:, :days].unsqueeze(1).expand(-1, paths, -1)


def _column_name(name, v):
    if not (isinstance(v, str) and v.strip()):
        checks.fail(name, "a column name (a non-empty string)", v)


def _column_names(name, v):
    if not (isinstance(v, (list, tuple)) and all(isinstance(x, str) and x.strip() for x in v)
            and len(set(v)) == len(v)):
        checks.fail(name, "a list of distinct column names", v)


def _date_or_fraction(name, v):
    if checks.is_number(v) and 0 < v < 1:
        return
    if isinstance(v, str):
        try:
            datetime.date.fromisoformat(v)
            return
        except ValueError:
            pass
    checks.fail(name, "a date YYYY-MM-DD or a fraction in (0, 1)", v)


#: The periods of a sales history, in time order (``demand.period`` of a sales instance).
PERIODS = ("train", "validation", "test")
#: Where the periods start by default: fractions of the days.
DEFAULT_VALID_START, DEFAULT_TEST_START = 0.7, 0.85
#: Exogenous columns read as known ahead (planned) unless ``known_ahead`` says otherwise.
KNOWN_AHEAD = ("price", "promotion")
#: ``demand`` keys of a sales instance passed on to :func:`sales.read_sales`.
READ_OPTIONS = ("sku_column", "date_column", "quantity_column", "warehouse_column",
                "features", "attributes", "missing", "duplicates")


@register("sales")
@dataclass
class Sales(DemandProcess):
    """A catalog's long-format sales history (:mod:`deepstock_fast.sales`), cut in time into a
    training, a validation and a test period; an instance draws its episodes from one of them.

    Config: ``path``; the reading options of :func:`~deepstock_fast.sales.read_sales`
    (``sku_column``, ``date_column``, ``quantity_column``, ``warehouse_column``, ``features``,
    ``attributes``, ``missing``, ``duplicates``); ``valid_start`` and ``test_start`` (dates or
    fractions of the days, default 0.7 and 0.85) and ``test_end`` (the day after the test
    period, default: the day after the data's last); ``period`` (``train``, the default,
    ``validation`` or ``test``); ``known_ahead``: the exogenous columns whose future values are
    known at decision time (planned prices, promotions; default: those of :data:`KNOWN_AHEAD`
    the data has).

    Windows: a training episode's days (its ``history_days``, horizon and forecast days) lie
    inside the training period, at a random start per SKU and episode; a validation or test
    episode's horizon starts on the period's first day (its history days are the days before:
    the past, known at that time) and its forecast days end inside the period. No episode of
    one period reads a day of a later period.
    """

    params = {"path": checks.path}
    optional_params = {"sku_column": _column_name, "date_column": _column_name,
                       "quantity_column": _column_name,
                       "warehouse_column": checks.optional(_column_name),
                       "features": checks.optional(_column_names),
                       "attributes": checks.optional(checks.path),
                       "missing": checks.choice(sales_lib.MISSING),
                       "duplicates": checks.choice(sales_lib.DUPLICATES),
                       "valid_start": _date_or_fraction, "test_start": _date_or_fraction,
                       "test_end": _date_or_fraction,
                       "period": checks.choice(PERIODS), "known_ahead": _column_names}
    catalog = True

    data: sales_lib.SalesData
    period: str = "train"
    valid_day: int = 0
    test_day: int = 0
    known_ahead: tuple = ()
    end_day: int = 0          # one past the test period's last day (0: the data's end)
    device: str | torch.device = "cpu"

    @classmethod
    def from_spec(cls, spec, num_skus, days, device) -> "Sales":
        data = sales_lib.read_sales(spec["path"], **{k: spec[k] for k in READ_OPTIONS
                                                     if k in spec})
        valid = data.day_index(spec.get("valid_start", DEFAULT_VALID_START), "valid_start")
        test = data.day_index(spec.get("test_start", DEFAULT_TEST_START), "test_start")
        end = data.day_index(spec["test_end"], "test_end") if "test_end" in spec else data.days
        if not 0 < valid < test < end <= data.days:
            raise ValueError(f"need the first day < valid_start ({data.date(valid)}) < "
                             f"test_start ({data.date(test)}) < test_end "
                             f"({data.date(end)}) <= the day after the last "
                             f"({data.date(data.days)})")
        known = spec.get("known_ahead", [c for c in KNOWN_AHEAD if c in data.features])
        unknown = [c for c in known if c not in data.features]
        if unknown:
            raise ValueError(f"known_ahead names {unknown}, not exogenous columns of the data "
                             f"({list(data.features)})")
        return cls(data, spec.get("period", "train"), valid, test, tuple(known), end, device)

    def __post_init__(self):
        self.history = self.data.demand.to(self.device)
        self.exogenous = {k: v.to(self.device) for k, v in self.data.features.items()}
        self.attributes = self.data.attributes

    @property
    def num_skus(self) -> int:
        return self.data.num_series

    def bounds(self, period: str | None = None) -> tuple[int, int]:
        """The first day and one past the last day of ``period`` (default: this one's)."""
        return {"train": (0, self.valid_day), "validation": (self.valid_day, self.test_day),
                "test": (self.test_day, self.end_day or self.data.days)}[period or self.period]

    def start_range(self, days: int, history_days: int) -> tuple[int, int]:
        """The first and last start (its first history day) of a window of ``days`` days."""
        lo, hi = self.bounds()
        what = f"the {self.period} period ({self.data.date(lo)} .. {self.data.date(hi - 1)}, " \
               f"{hi - lo} days)"
        if self.period == "train":
            if days > hi:
                raise ValueError(f"an episode needs history_days + horizon + forecast days = "
                                 f"{days} days; {what} has {hi}")
            return 0, hi - days
        if lo < history_days:
            raise ValueError(f"{what} starts {lo} days into the data; its episodes need "
                             f"history_days = {history_days} days before it")
        if lo - history_days + days > hi:
            raise ValueError(f"an episode needs horizon + forecast days = "
                             f"{days - history_days} days; {what} has {hi - lo}")
        return lo - history_days, lo - history_days

    def sample(self, days: int, *, generator: torch.Generator | None = None,
               paths: int = 1) -> Tensor:
        """The first window of the period for every SKU (an environment draws windows with
        :meth:`start_range` instead)."""
        _check_days(days, paths)
        start = self.start_range(days, 0)[0]
        return self.history[:, start:start + days].unsqueeze(1).expand(-1, paths, -1)


# ---- replay files --------------------------------------------------------------------------------
#: Header names that mark a replay file's first column as SKU ids (compared lower-case, stripped).
ID_COLUMN_NAMES = ("", "sku", "sku_id", "id", "item", "item_id", "product", "product_id",
                   "__index_level_0__")
_CACHE: OrderedDict = OrderedDict()  # (path, mtime_ns, size, header, id_column) -> history
_CACHE_SIZE = 4
CACHE_VERSION = 1  # of the replay cache files: a new layout of them needs a new number


def read_history(path: str | os.PathLike, *, header: bool | None = None,
                 id_column: bool | None = None) -> Tensor:
    """The float64 history [S, D] of a replay file (layout: :meth:`Replay.from_file`), parsed
    once: the result is cached by resolved path, modification time and size in the process (so
    building configs and environments of the same file costs nothing after the first) and in
    ``<file>.deepstock.npz`` next to it (so the next run reads the binary form)."""
    name = str(path)
    p = pathlib.Path(path)
    try:
        stat = p.stat()
    except FileNotFoundError:
        raise ValueError(f"replay file {name}: no such file") from None
    except OSError as e:
        raise ValueError(f"replay file {name}: cannot be read ({e.strerror})") from None
    if p.is_dir():
        raise ValueError(f"replay file {name}: is a directory, not a CSV or Parquet file")
    key = (str(p.resolve()), stat.st_mtime_ns, stat.st_size, header, id_column)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    lower = p.name.lower()
    if not lower.endswith((".parquet", ".csv", ".csv.gz")):
        raise ValueError(f"replay file {name}: unknown suffix; use .csv, .csv.gz or .parquet")
    # the binary cache next to the file (sales.py), valid for this size, time and layout
    disk_key = f"replay {CACHE_VERSION} {key}"
    cached = sales_lib.load_arrays(sales_lib.cache_path(p), disk_key)
    if cached is not None and "history" in cached:
        array = cached["history"]
    else:
        if lower.endswith(".parquet"):
            array = _read_parquet(p, name, id_column)
        else:
            array = _read_csv(p, name, header, id_column)
        sales_lib.save_arrays(sales_lib.cache_path(p), disk_key, {"history": array})
    history = torch.from_numpy(array)
    _CACHE[key] = history
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return history


def _number(cell: str) -> float | None:
    """A CSV cell as a float, or None when it is not a number (Python's float() without its
    digit separators, so that '1_000' is not read as 1000)."""
    if "_" in cell:
        return None
    try:
        return float(cell)
    except ValueError:
        return None


def _check_values(name: str, array: np.ndarray, where) -> np.ndarray:
    """Raises for the first missing, infinite, negative or too large value of ``array`` [S, D];
    ``where(i, j)`` says where element (i, j) is in the file."""
    bad = ~(np.isfinite(array) & (array >= 0) & (array <= MAX_QUANTITY))
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])
        value = float(array[i, j])
        what = ("a missing value (NaN)" if np.isnan(value) else
                f"{value!r}: demand must be finite, >= 0 and <= {MAX_QUANTITY:g}")
        raise ValueError(f"replay file {name}: {where(i, j)}: {what}")
    return array


def _read_csv(path: pathlib.Path, name: str, header: bool | None,
              id_column: bool | None) -> np.ndarray:
    raw = path.read_bytes()
    gzipped = raw[:2] == b"\x1f\x8b"
    if path.name.lower().endswith(".gz"):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise ValueError(f"replay file {name}: not a valid gzip file ({e})") from None
    elif gzipped:
        raise ValueError(f"replay file {name}: is gzip-compressed; name it .csv.gz")
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise ValueError(f"replay file {name}: is UTF-16 text; save it as UTF-8")
    text = _decode(raw, name)
    del raw
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = text.rstrip()  # trailing blank lines (and spaces) are not rows
    if not text:
        raise ValueError(f"replay file {name}: is empty")
    lines = text.split("\n")
    del text
    first = next(csv.reader(lines[:1]))
    numbers = [_number(c) for c in first[1:]] if id_column else [_number(c) for c in first]
    if header is None:  # a declared id column's cell says nothing about a header
        header = any(v is None for v in numbers)
        width = len(numbers)
        if not header and width >= 7 and numbers[0] in (0, 1) and numbers == [
                numbers[0] + k for k in range(width)]:
            raise ValueError(f"replay file {name}: row 1 counts days ({first[0]}, {first[1]}, "
                             "...): is it a header? Declare header=true or header=false")
    if id_column is None:
        id_column = header and first[0].strip().lower() in ID_COLUMN_NAMES
    skip, skip_cols = int(header), int(id_column)
    if len(lines) <= skip:
        raise ValueError(f"replay file {name}: has a header row but no SKU rows")
    if len(first) <= skip_cols:
        raise ValueError(f"replay file {name}: row 1 has no day columns")
    if not any(re.fullmatch(r"[ \t]*", line) for line in lines):
        try:  # numpy's C parser; whatever it refuses, the exact scan below explains
            array = np.loadtxt(lines, delimiter=",", comments=None, quotechar='"',
                               skiprows=skip, dtype=np.float64, ndmin=2,
                               converters={0: lambda _: 0.0} if skip_cols else None)
        except ValueError:
            array = None
        if array is not None and array.shape[1] == len(first):
            return _check_values(name, array[:, skip_cols:] if skip_cols else array,
                                 lambda i, j: f"row {i + skip + 1}, column {j + skip_cols + 1}")
    return _scan_csv(lines, name, skip, skip_cols, len(first))


def _decode(raw: bytes, name: str) -> str:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        row = raw.count(b"\n", 0, e.start) + 1
        column = raw.count(b",", raw.rfind(b"\n", 0, e.start) + 1, e.start) + 1
        raise ValueError(f"replay file {name}: row {row}, column {column}: bytes "
                         f"{raw[e.start:e.start + 4]!r} are not UTF-8 (save the file as UTF-8)"
                         ) from None
    if "\x00" in text:
        row = text.count("\n", 0, text.index("\x00")) + 1
        raise ValueError(f"replay file {name}: row {row}: NUL characters (UTF-16 or binary "
                         "data?); save the file as UTF-8 text")
    return text


def _scan_csv(lines: list[str], name: str, skip: int, skip_cols: int, width: int) -> np.ndarray:
    """The exact, cell-by-cell reading: the first problem raises naming its row and column."""
    rows = []
    for r, cells in enumerate(csv.reader(lines[skip:]), start=skip + 1):
        if not cells or all(not c.strip() for c in cells) and len(cells) <= 1:
            raise ValueError(f"replay file {name}: row {r} is empty (a missing SKU row?)")
        if len(cells) != width:
            raise ValueError(f"replay file {name}: row {r} has {len(cells)} columns, row 1 has "
                             f"{width}")
        row = []
        for c, cell in enumerate(cells[skip_cols:], start=skip_cols + 1):
            value = _number(cell)
            if value is None:
                hint = (" (SKU ids in column 1? Declare id_column=true or name the column 'sku'"
                        " in a header row)" if c == 1 and cell.strip() else "")
                what = "is empty (a missing value)" if not cell.strip() else (
                    f"{cell!r} is not a number{hint}")
                raise ValueError(f"replay file {name}: row {r}, column {c} {what}")
            row.append(value)
        rows.append(row)
    array = np.array(rows, dtype=np.float64).reshape(len(rows), width - skip_cols)
    return _check_values(name, array, lambda i, j: f"row {i + skip + 1}, column {j + skip_cols + 1}")


def _read_parquet(path: pathlib.Path, name: str, id_column: bool | None) -> np.ndarray:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError(f"replay file {name}: reading Parquet needs pyarrow "
                         "(pip install deepstock_fast[parquet])") from None
    try:
        file = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise ValueError(f"replay file {name}: not a readable Parquet file ({e})") from None
    schema = file.schema_arrow
    names = schema.names
    if id_column is None:
        id_column = bool(names) and names[0].strip().lower() in ID_COLUMN_NAMES
    skip_cols = int(id_column)
    days = names[skip_cols:]
    if not days:
        raise ValueError(f"replay file {name}: has no day columns")
    for j, day in enumerate(days):
        kind = schema.field(j + skip_cols).type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
            raise ValueError(f"replay file {name}: column {j + skip_cols + 1} ({day!r}) has type "
                             f"{kind}; day columns must be int or float (declare id_column=true "
                             "if the first column holds SKU ids)")
    rows = file.metadata.num_rows
    if rows == 0:
        raise ValueError(f"replay file {name}: has no SKU rows")
    array = np.empty((rows, len(days)), dtype=np.float64)
    start = 0
    try:  # one row group at a time: the peak is the history plus one group
        for g in range(file.num_row_groups):
            group = file.read_row_group(g, columns=days)
            for j, column in enumerate(group.columns):
                if column.null_count:
                    i = start + int(np.flatnonzero(column.is_null().to_numpy(
                        zero_copy_only=False))[0])
                    raise ValueError(f"replay file {name}: row {i + 1}, column "
                                     f"{j + skip_cols + 1} ({days[j]!r}): a missing value")
                array[start:start + group.num_rows, j] = column.to_numpy()
            start += group.num_rows
    except (pa.ArrowException, OSError) as e:
        raise ValueError(f"replay file {name}: not a readable Parquet file ({e})") from None
    return _check_values(name, array, lambda i, j: f"row {i + 1}, column {j + skip_cols + 1} "
                                                   f"({days[j]!r})")
