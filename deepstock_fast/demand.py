"""Demand processes: per-SKU parameters, sampled on the device from a seeded torch.Generator.

Every process has ``num_skus`` and ``sample(days, generator=..., paths=1) -> [S, N, days]`` (float,
on the process's device). The same generator state gives the same demand; parameters may differ
per SKU (shape [S]) or be shared (a number). Negative draws of continuous processes are set to
zero, as the paper's generators do (``max(0, .)``).

The paper's synthetic settings (PAPER.md) are reproduced as documented there; where the summary
leaves a detail open, the choice is stated on the class.
"""

from __future__ import annotations

import csv
import math
import pathlib
from dataclasses import dataclass, field

import torch
from torch import Tensor


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


@dataclass
class Poisson:
    """Poisson(rate) demand per day."""

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
        k = torch.arange(int(top + 12 * math.sqrt(top) + 30), dtype=torch.float64,
                         device=self.rate.device)
        rates = self._rates.unsqueeze(1)
        log_pmf = torch.xlogy(k, rates) - rates - torch.lgamma(k + 1)
        self._cdf = log_pmf.exp().cumsum(1).clamp(max=1.0)  # [distinct rates, K]

    def sample(self, days: int, *, generator: torch.Generator, paths: int = 1) -> Tensor:
        _check_days(days, paths)
        u = torch.rand(self.num_skus, paths * days, generator=generator, dtype=torch.float64,
                       device=self.rate.device)
        if len(self._rates) == 1:
            k = torch.searchsorted(self._cdf[0], u, right=True, out_int32=True)
        elif self._cdf.shape[1] * self.num_skus <= 2**24:
            k = torch.searchsorted(self._cdf[self._row], u, right=True, out_int32=True)
        else:  # many distinct rates: a CDF row per SKU would cost too much memory
            rates = self.rate.view(-1, 1, 1).expand(self.num_skus, paths, days).contiguous()
            return torch.poisson(rates, generator=generator)
        return u.copy_(k).view(self.num_skus, paths, days)  # into u's memory: no fresh tensor


@dataclass
class Normal:
    """Normal(mean, std) demand per day, negative draws set to 0, optionally rounded."""

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


@dataclass
class UniformInt:
    """Integer demand uniform on low, low + 1, ..., high - 1."""

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


@dataclass
class Geometric:
    """Geometric demand on 0, 1, 2, ... with the given mean: P(k) = p (1 - p)^k, p = 1/(1+mean)."""

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


@dataclass
class PaperIndependent:
    """The paper's setting 1: each day t of the horizon has a low value, clip(N(10, 4)), and
    demand on day t is uniform on the integers low_t .. low_t + 4 for every SKU and path.

    Choices where the summary is silent: 4 is the standard deviation; low_t is rounded to an
    integer and clipped at 0; the lows are drawn once per instance (from ``instance_seed``) and
    shared by all trajectories, so that the day index is the informative feature.
    """

    horizon: int
    num_skus: int = 1
    instance_seed: int = 0
    device: str | torch.device = "cpu"
    lows: Tensor = field(init=False)

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


@dataclass
class AR1:
    """d_t = max(0, phi d_{t-1} + (1 - phi) base + eps_t), eps_t ~ N(0, sigma^2), d_0 = base.

    The paper's settings 2 and 3 draw per trajectory phi ~ U(0.3, 0.9), base ~ U(5, 10),
    sigma ~ U(2, 8): :meth:`paper`.
    """

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


def paper_iid_normal(num_skus: int, *, generator: torch.Generator, device="cpu") -> Normal:
    """The paper's setting 4: Normal(100, sigma) per day with sigma ~ U(5, 20) per SKU."""
    sigma = 5 + 15 * torch.rand(num_skus, generator=generator, dtype=torch.float64)
    return Normal(100.0, sigma, num_skus, device=device)


@dataclass
class Replay:
    """Given demand history [S, D] replayed as is (from a tensor, NumPy array, CSV or Parquet).

    ``sample`` returns the first ``days`` days of the history (one path; the generator is not
    used). :meth:`split` cuts the history in time into train / validation / test parts.
    """

    history: Tensor

    def __post_init__(self):
        h = torch.as_tensor(self.history, dtype=torch.float64)
        if h.dim() != 2 or h.shape[1] < 1:
            raise ValueError(f"demand history must have shape [SKU, day], got {tuple(h.shape)}")
        if torch.isnan(h).any():
            sku, day = (int(v) for v in torch.nonzero(torch.isnan(h))[0])
            raise ValueError(f"demand history has missing values (first at SKU {sku}, day {day})")
        if not torch.isfinite(h).all() or (h < 0).any():
            raise ValueError("demand history must be finite and non-negative")
        self.history = h

    @property
    def num_skus(self) -> int:
        return self.history.shape[0]

    @classmethod
    def from_file(cls, path: str | pathlib.Path) -> "Replay":
        """CSV (one row per SKU, one column per day; a header row is skipped if not numeric) or
        Parquet (one column per day; needs pyarrow)."""
        path = pathlib.Path(path)
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq  # optional dependency

            table = pq.read_table(path)
            rows = [[float("nan") if v is None else float(v) for v in col.to_pylist()]
                    for col in table.columns]
            return cls(torch.tensor(rows, dtype=torch.float64).T)
        with path.open(newline="") as f:
            rows = list(csv.reader(f))
        def number(cell):
            return float(cell) if cell.strip() != "" else math.nan
        try:
            [number(c) for c in rows[0]]
        except ValueError:
            rows = rows[1:]
        widths = {len(r) for r in rows}
        if len(widths) != 1:
            raise ValueError(f"{path}: rows have different numbers of days {sorted(widths)}")
        return cls(torch.tensor([[number(c) for c in r] for r in rows], dtype=torch.float64))

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
