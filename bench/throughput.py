"""Throughput of the native ops against the same math in eager PyTorch and torch.compile.

For each device, pipeline length max_lead and batch size B it measures
  - inventory_step: environment-steps per second (one epoch of P = 1 day), and the bytes it moves
    per second next to a plain tensor copy of the same number of bytes (the memory-bound limit);
  - rollout (base-stock policy, T days fused in one call): environment-periods (days) per second;
each against deepstock_fast.reference (eager) and, with --compile, torch.compile of it.
Lead times are mixed 0..max_lead inside each batch. On CUDA the ops run with value checks off
(no synchronisation per call, as in a training loop; invalid inputs would give NaN). Prints a
table and writes JSON with the machine to bench/results/.

    python bench/throughput.py                  # CPU (and CUDA when present), default sizes
    python bench/throughput.py --quick          # the README's main job: a few minutes on 2 cores
    python bench/throughput.py --device cuda --log2-batch 10 12 14 16 18 20 22
"""

from __future__ import annotations

import argparse
import math
import pathlib
import sys

import torch

import deepstock_fast as ds
from deepstock_fast import reference

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # also under `python -P`
from common import machine, seconds_per_call, table, write_results  # noqa: E402


def step_problem(batch: int, max_lead: int, device: str, dtype=torch.float32):
    g = torch.Generator(device=device).manual_seed(batch + max_lead)
    on_hand = torch.rand(batch, generator=g, device=device, dtype=dtype) * 10
    pipeline = torch.rand(batch, max_lead, generator=g, device=device, dtype=dtype) * 5
    lead = torch.randint(0, max_lead + 1, (batch,), generator=g, device=device)
    order = torch.rand(batch, generator=g, device=device, dtype=dtype) * 10
    demand = torch.poisson(torch.full((batch, 1), 5.0, device=device, dtype=dtype), generator=g)
    costs = [torch.tensor([v], device=device, dtype=dtype) for v in (1.0, 9.0, 0.0)]
    return (on_hand, pipeline, lead, order, demand, *costs, True)


def bytes_moved(inputs, outputs) -> int:
    return sum(t.nbytes for t in (*inputs, *outputs) if isinstance(t, torch.Tensor))


def bench_step(batch, max_lead, device, compiled_step, rows):
    args = step_problem(batch, max_lead, device)
    outputs = torch.ops.deepstock.inventory_step(*args)
    moved = bytes_moved(args, outputs)
    half = torch.empty(moved // 8, device=device)  # float32: a copy reads and writes nbytes each
    dst = torch.empty_like(half)
    t_copy = seconds_per_call(lambda: dst.copy_(half), device)
    copy_gbps = 2 * half.nbytes / t_copy / 1e9
    impls = {"op": lambda: torch.ops.deepstock.inventory_step(*args),
             "eager": lambda: reference.inventory_step(*args)}
    if compiled_step is not None:
        impls["compiled"] = lambda: compiled_step(*args)
    times = {k: seconds_per_call(f, device) for k, f in impls.items()}
    rows.append(dict(
        op="inventory_step", device=device, max_lead=max_lead, log2_batch=int(math.log2(batch)),
        per_s=batch / times["op"], eager_per_s=batch / times["eager"],
        compiled_per_s=batch / times["compiled"] if "compiled" in times else None,
        x_eager=times["eager"] / times["op"],
        x_compiled=times["compiled"] / times["op"] if "compiled" in times else None,
        bytes_per_env=moved / batch, gbps=moved / times["op"] / 1e9, copy_gbps=copy_gbps,
        of_copy=(moved / times["op"]) / (2 * half.nbytes / t_copy)))


def reference_day(on_hand, pipeline, lead, level, demand_day, h, p, c):
    """One day of a base-stock policy in eager PyTorch (what torch.compile gets to fuse)."""
    order = reference.base_stock_order(level, on_hand + pipeline.sum(1))
    x, pipe, cost, _ = reference.inventory_step(on_hand, pipeline, lead, order, demand_day, h, p, c,
                                                True)
    return x, pipe, cost.sum(1)


def bench_rollout(batch, max_lead, days, device, compiled_day, rows):
    g = torch.Generator(device=device).manual_seed(batch)
    demand = torch.poisson(torch.full((batch, days), 5.0, device=device), generator=g)
    if device == "cuda":  # time-major storage: coalesced reads on the GPU
        demand = demand.T.contiguous().T
    lead = torch.randint(0, max_lead + 1, (batch,), generator=g, device=device)
    pipeline = torch.zeros(batch, max_lead, device=device)
    level = torch.full((batch,), 5.0 * (max_lead + 2), device=device)
    params = level.unsqueeze(1)
    costs = [torch.tensor([v], device=device) for v in (1.0, 9.0, 0.0)]

    def op():
        return ds.rollout(demand, "base_stock", params, lead, pipeline=pipeline,
                          holding_cost=costs[0], penalty_cost=costs[1], order_cost=costs[2])

    def loop(day_fn):
        def run():
            x, pipe = torch.zeros(batch, device=device), pipeline
            total = torch.zeros(batch, device=device)
            for t in range(days):
                x, pipe, cost = day_fn(x, pipe, lead, level, demand[:, t:t + 1], *costs)
                total = total + cost
            return total / days
        return run

    impls = {"op": op, "eager": loop(reference_day)}
    if compiled_day is not None:
        impls["compiled"] = loop(compiled_day)
    want = impls["eager"]()
    torch.testing.assert_close(op().average_cost, want, rtol=1e-4, atol=1e-3)
    times = {k: seconds_per_call(f, device, rounds=2) for k, f in impls.items()}
    work = batch * days
    rows.append(dict(
        op="rollout", device=device, max_lead=max_lead, log2_batch=int(math.log2(batch)),
        per_s=work / times["op"], eager_per_s=work / times["eager"],
        compiled_per_s=work / times["compiled"] if "compiled" in times else None,
        x_eager=times["eager"] / times["op"],
        x_compiled=times["compiled"] / times["op"] if "compiled" in times else None))


COLUMNS = [("op", "op", "s"), ("device", "dev", "s"), ("max_lead", "Lmax", "d"),
           ("log2_batch", "log2 B", "d"), ("per_s", "op /s", ".3g"),
           ("eager_per_s", "eager /s", ".3g"), ("compiled_per_s", "compiled /s", ".3g"),
           ("x_eager", "x eager", ".1f"), ("x_compiled", "x compiled", ".1f"),
           ("gbps", "op GB/s", ".1f"), ("copy_gbps", "copy GB/s", ".1f"),
           ("of_copy", "of copy", ".0%")]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    parser.add_argument("--log2-batch", type=int, nargs="+", default=[10, 12, 14, 16, 18, 20, 22])
    parser.add_argument("--max-lead", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--days", type=int, default=32, help="rollout horizon T")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                        help="also time torch.compile of the reference")
    parser.add_argument("--quick", action="store_true",
                        help="B = 2^10, 2^16, 2^20 and Lmax = 1, 4: a few minutes on a 2-core CPU")
    args = parser.parse_args(argv)
    if args.quick:
        args.log2_batch, args.max_lead = [10, 16, 20], [1, 4]
    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if "cuda" in devices and not (torch.cuda.is_available() and ds.build_info()["cuda_kernels"]):
        if args.device == "cuda":
            print("CUDA requested but no GPU or no CUDA kernels built", file=sys.stderr)
            return 2
        devices.remove("cuda")

    for device in devices:
        rows: list[dict] = []
        compiled_step = compiled_day = None
        if args.compile:
            compiled_step = torch.compile(reference.inventory_step, dynamic=True)
            compiled_day = torch.compile(reference_day, dynamic=True)
        with ds.cuda_value_checks(False):
            for max_lead in args.max_lead:
                for log2 in args.log2_batch:
                    batch = 2 ** log2
                    print(f"[{device}] Lmax={max_lead} B=2^{log2} ...", flush=True)
                    bench_step(batch, max_lead, device, compiled_step, rows)
                    bench_rollout(batch, max_lead, args.days, device, compiled_day, rows)
        print(table(rows, COLUMNS))
        path = write_results("throughput", dict(machine=machine(device), days=args.days,
                                                 rows=rows))
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
