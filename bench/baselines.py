"""Speed of the per-SKU classical-policy search: base-stock levels for many SKUs at once.

Each SKU has its own Poisson demand rate (1 to 21 per day), one demand path of T days, lead time
2, lost sales, h = 1, p = 9, and 64 candidate levels; every candidate is simulated with the fused
rollout op. Prints a table and writes JSON with the machine to bench/results/.

    python bench/baselines.py [--skus 1000 10000 100000] [--days 100 365] [--device cpu]
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # also under `python -P`
from common import machine, sync, table, write_results  # noqa: E402

from deepstock_fast import baselines  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skus", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--days", type=int, nargs="+", default=[100, 365])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    rows = []
    for skus in args.skus:
        for days in args.days:
            g = torch.Generator(device=args.device).manual_seed(skus + days)
            rates = torch.rand(skus, generator=g, device=args.device) * 20 + 1
            demand = torch.poisson(rates.view(skus, 1, 1).expand(skus, 1, days).contiguous(),
                                   generator=g)
            sync(args.device)
            start = time.perf_counter()
            policy, costs = baselines.fit("base_stock", demand, 2, holding_cost=1.0,
                                          penalty_cost=9.0, warmup=10)
            sync(args.device)
            seconds = time.perf_counter() - start
            rows.append(dict(skus=skus, days=days, candidates=costs.shape[1], seconds=seconds,
                             env_days_per_s=skus * costs.shape[1] * days / seconds))
            print(table(rows[-1:], COLUMNS).splitlines()[-1], flush=True)
    print(table(rows, COLUMNS))
    print(f"wrote {write_results('baselines', dict(machine=machine(args.device), rows=rows))}")
    return 0


COLUMNS = [("skus", "SKUs", "d"), ("days", "days", "d"), ("candidates", "candidates", "d"),
           ("seconds", "seconds", ".2f"), ("env_days_per_s", "env-days/s", ".3g")]

if __name__ == "__main__":
    sys.exit(main())
