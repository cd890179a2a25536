"""Demand features of the Coeff regularization, computed for all days of an episode at once."""

from __future__ import annotations

import re

import torch
from torch import Tensor


def demand_features(path: Tensor, history_days: int, days: range, names: tuple[str, ...],
                    noise_std: float = 3.0, generator: torch.Generator | None = None,
                    dtype: torch.dtype | None = None) -> Tensor:
    """Features [len(days), B, m] (time-major) on the given days, from one demand path per SKU.

    Args:
        path: [B, history_days + D] demand: ``history_days`` days before day 0, then days 0, 1,
            ... (at least up to the last of ``days`` plus the longest forecast window).
        days: the days to compute features for (day 0 is the first day after the history), e.g.
            ``range(0, horizon + 1, review_period)`` for every review epoch.
        names: features in order, from ``config.COEFF_FEATURES``:
            ``trailing_k``: mean demand of the k days before day t (of fewer at the start of the
            path; 0 on its first day); ``forecast_k``: mean demand of days t .. t+k-1 plus
            N(0, noise_std^2) noise (a forecast proxy; the noise is drawn from ``generator``);
            ``constant``: 1.
        dtype: of the result (default: the path's); the means are computed in float64.
    """
    batch, length = path.shape
    count = len(days)
    longest = max([int(n.split("_")[1]) for n in names if n != "constant"], default=0)
    # cumulative[longest + i] = demand of path days 0 .. i-1 (left zero padding for trailing),
    # time-major so that the features come out as [days, B] without transposing them
    cumulative = path.new_zeros(longest + 1 + length, batch, dtype=torch.float64)
    torch.cumsum(path.T, 0, dtype=torch.float64, out=cumulative[longest + 1:])
    first = longest + history_days + days.start

    def at(offset: int) -> Tensor:  # cumulative at day t + offset for every t in days: [count, B]
        start = first + offset
        return cumulative[start:start + days.step * (count - 1) + 1:days.step]

    # each column is computed in float64 and written once, converted, into the output; in place
    # on one float64 and one noise buffer (at 2^16 SKUs, a fresh tensor per op is mostly page
    # faults)
    features = path.new_empty(count, batch, len(names), dtype=dtype or path.dtype)
    column = path.new_empty(count, batch, dtype=torch.float64)
    noise = None
    for j, name in enumerate(names):
        if name == "constant":
            features[:, :, j] = 1.0
            continue
        kind, k = name.split("_")
        k = int(k)
        if kind == "trailing":
            seen = torch.arange(history_days + days.start, history_days + days.stop, days.step,
                                device=path.device).clamp(min=1, max=k)
            features[:, :, j] = torch.sub(at(0), at(-k), out=column).div_(seen.unsqueeze(1))
        else:
            if history_days + days[-1] + k > length:
                raise ValueError(f"{name} needs {k} days of demand from day {days[-1]}; the path "
                                 f"ends at day {length - history_days - 1}")
            if noise is None:  # float32: the noise needs no more precision, and float32 draws
                noise = path.new_empty(count, batch, dtype=torch.float32)  # are 4x faster
            torch.randn(count, batch, generator=generator, out=noise)
            torch.sub(at(k), at(0), out=column).div_(k).add_(noise.mul_(noise_std))
            features[:, :, j] = column
    return features


#: Feature names of exogenous columns (a sales history's price, promotion, ...):
#: ``<column>_next_<k>``: the column's mean over days t .. t+k-1, for columns known ahead
#: (planned prices and promotions); ``<column>_last``: its value on day t-1 (any column).
_EXOGENOUS = re.compile(r"(?P<column>.+?)_(?:next_(?P<k>[0-9]+)|last)")


def exogenous_feature(name: str) -> tuple[str, int] | None:
    """(column, k) of an exogenous feature name: k days ahead for ``<column>_next_<k>``, 0 for
    ``<column>_last``; None for a demand feature (``config.COEFF_FEATURES``)."""
    match = _EXOGENOUS.fullmatch(name)
    if match is None:
        return None
    k = match.group("k")
    return match.group("column"), int(k) if k is not None else 0


def exogenous_features(columns: dict[str, Tensor], history_days: int, days: range,
                       names: tuple[str, ...], dtype: torch.dtype) -> Tensor:
    """Features [len(days), B, len(names)] of exogenous columns (each [B, history_days + D],
    aligned with the demand path): for ``<column>_next_<k>`` the mean over days t .. t+k-1
    (known ahead), for ``<column>_last`` the value on day t-1; nothing later is read."""
    count = len(days)
    first = next(iter(columns.values()))
    out = first.new_empty(count, first.shape[0], len(names), dtype=dtype)
    starts = torch.arange(history_days + days.start, history_days + days.stop, days.step,
                          device=first.device)
    for j, name in enumerate(names):
        column, k = exogenous_feature(name)
        values = columns[column].to(torch.float64)
        if k == 0:
            out[:, :, j] = values[:, starts - 1].T
        else:
            if int(starts[-1]) + k > values.shape[1]:
                raise ValueError(f"{name} needs {k} days from day {days[-1]}; the path ends at "
                                 f"day {values.shape[1] - history_days - 1}")
            cumulative = torch.nn.functional.pad(values.cumsum(1), (1, 0))
            out[:, :, j] = ((cumulative[:, starts + k] - cumulative[:, starts]) / k).T
    return out
