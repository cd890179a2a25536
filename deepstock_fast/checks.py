"""Checks of plain-data values (config fields, demand parameters): each check is a function
``check(name, value)`` that raises ``ValueError("<name> must be <what>, got <value>")``; most carry
``check.want`` (the <what>) so that wrappers such as :func:`optional` can reuse it."""

from __future__ import annotations

import math
import os

import numpy as np
import torch


def show(value) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:100] + " ..."


def fail(name: str, want: str, value):
    raise ValueError(f"{name} must be {want}, got {show(value)}")


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)  # a bool is an int in Python


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def integer(low: int, high: int):
    def check(name, v):
        if not (is_int(v) and low <= v <= high):
            fail(name, check.want, v)
    check.want = f"an int in {low}..{high}"
    return check


def number(low: float, high: float, *, open_low=False, open_high=False, whole=False):
    def check(name, v):
        if not (is_number(v) and (low < v if open_low else low <= v)
                and (v < high if open_high else v <= high)
                and (not whole or float(v).is_integer())):
            fail(name, check.want, v)
    interval = f"{'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
    check.want = f"a finite {'whole ' if whole else ''}number in {interval}"
    return check


def boolean(name, v):
    if not isinstance(v, bool):  # "no" would be truthy
        fail(name, boolean.want, v)


boolean.want = "true or false"


def choice(options: tuple):
    def check(name, v):
        if not (isinstance(v, str) and v in options):
            fail(name, f"one of {options}", v)
    return check


def optional(inner):
    def check(name, v):
        if v is not None:
            try:
                inner(name, v)
            except ValueError:
                fail(name, f"None or {inner.want}", v)
    return check


def per_sku(inner):
    """One value for all SKUs or a list (tuple) of them; the length is checked against num_skus
    with the other fields."""
    def check(name, v):
        if isinstance(v, (list, tuple)):
            if not v:
                fail(name, "a value or a non-empty list of num_skus values", v)
            for i, item in enumerate(v):
                inner(f"{name}[{i}]", item)
        else:
            inner(name, v)
    return check


def names(known: tuple):
    def check(name, v):
        if not (isinstance(v, (list, tuple)) and all(isinstance(x, str) and x in known for x in v)
                and len(set(v)) == len(v)):
            unknown = [x for x in v if x not in known] if isinstance(v, (list, tuple)) else v
            fail(name, f"a list of distinct names from {known} (unknown: {show(unknown)})", v)
    return check


def path(name, v):
    if not (isinstance(v, (str, os.PathLike)) and str(v)):
        fail(name, "a file path (str)", v)


def history(name, v):
    """[[day values of SKU 0], [...], ...]: plain lists of numbers (or a 2-d numeric array)."""
    if isinstance(v, (torch.Tensor, np.ndarray)):
        if v.dtype in (torch.bool, np.bool_) or v.ndim != 2:
            fail(name, "a 2-d array of numbers [SKU, day]", f"{v.dtype} array of shape "
                 f"{tuple(v.shape)}")
        return
    if not (isinstance(v, (list, tuple)) and v and all(isinstance(r, (list, tuple)) for r in v)):
        fail(name, "a non-empty list of rows [[day values of SKU 0], ...]", v)
    width = len(v[0])
    for i, row in enumerate(v):
        if len(row) != width or not row:
            fail(f"{name}[{i}]", f"a non-empty row of {width} values like row 0", row)
        if not all(is_number(x) for x in row):  # numbers only: no bools, None or strings
            j = next(j for j, x in enumerate(row) if not is_number(x))
            fail(f"{name}[{i}][{j}]", "a finite number", row[j])
