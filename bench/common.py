"""Shared pieces of the benchmarks: timing, the machine description, JSON results, tables."""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import time

import torch

from deepstock_fast.report import machine, table  # noqa: F401  (re-exported)

#: Where results go: DEEPSTOCK_BENCH_OUT (``deepstock bench --out DIR`` sets it), else
#: bench/results/ of the source tree.
RESULTS = pathlib.Path(os.environ.get("DEEPSTOCK_BENCH_OUT")
                       or pathlib.Path(__file__).resolve().parent / "results")


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def seconds_per_call(fn, device: str, min_time: float = 0.25, rounds: int = 3) -> float:
    """Best-of-`rounds` mean time of one call, each round lasting at least `min_time`."""
    fn()  # warm up (and compile)
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    once = max(time.perf_counter() - t0, 1e-6)
    reps = max(1, int(min_time / once))
    best = float("inf")
    for _ in range(rounds):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        sync(device)
        best = min(best, (time.perf_counter() - t0) / reps)
    return best


def write_results(name: str, payload: dict, path: pathlib.Path | None = None) -> pathlib.Path:
    """Write ``payload`` to a new timestamped file, or over ``path`` (a long benchmark rewrites
    its file after each row, so that a crash or Ctrl-C keeps what was measured)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    if path is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = RESULTS / f"{name}-{payload['machine']['device']}-{stamp}.json"
    path.write_text(json.dumps(payload, indent=1))
    return path
