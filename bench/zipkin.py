"""The exact lost-sales optimum and classical baselines on the 16 Zipkin (2008) instances.

Poisson(5) demand, h = 1, p in {4, 9, 19, 39}, lead time L in {1, 2, 3, 4}, review every period.
Columns: the published optimum, our DP optimum, the best base-stock, capped base-stock and
constant-order policies (searched on training paths), the myopic policy and the two-period
lookahead (optimum.lookahead_policy), all costed on independent test paths, with gaps to the DP
optimum in percent. Prints a table, writes JSON and Markdown to bench/results/. About
three minutes on a 2-core CPU.

    python bench/zipkin.py
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # also under `python -P`
from common import machine, table, write_results  # noqa: E402

import torch  # noqa: E402

from deepstock_fast import baselines, optimum  # noqa: E402

BASELINES = ("base_stock", "capped_base_stock", "constant")
COLUMNS = [("lead_time", "L", "d"), ("penalty", "p", "d"), ("published", "published", ".2f"),
           ("dp", "DP optimum", ".4f"), ("gap_pct", "DP vs pub. %", "+.3f"),
           ("iterations", "DP iters", "d"), ("seconds", "DP s", ".1f")]
LOOKAHEAD = {"myopic": 1, "lookahead_2": 2}
for _kind in (*BASELINES, *LOOKAHEAD):
    COLUMNS += [(_kind, _kind, ".3f"), (f"{_kind}_gap_pct", "gap %", ".2f")]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lead-times", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--tolerance", type=float, default=1e-7)
    parser.add_argument("--train-paths", type=int, default=128,
                        help="demand paths the baselines are searched on")
    parser.add_argument("--test-paths", type=int, default=1024,
                        help="independent demand paths every policy is costed on")
    parser.add_argument("--days", type=int, default=2000, help="days per path (200 of warm-up)")
    args = parser.parse_args(argv)
    pmf = optimum.poisson_pmf(5.0)

    def paths(n, seed):
        rate = torch.full((1, n, args.days), 5.0, dtype=torch.float64)
        return torch.poisson(rate, generator=torch.Generator().manual_seed(seed))

    train, test = paths(args.train_paths, 1), paths(args.test_paths, 2)
    published = optimum.zipkin_published()
    rows = []
    for (lead, penalty), cost in sorted(published.items()):
        if lead not in args.lead_times:
            continue
        start = time.perf_counter()
        sol = optimum.solve_lost_sales(pmf, lead, 1.0, penalty, tolerance=args.tolerance,
                                       progress=True)
        row = dict(lead_time=lead, penalty=penalty, published=cost, dp=sol.average_cost,
                   gap_pct=100 * (sol.average_cost - cost) / cost,
                   rounds_to_published=round(sol.average_cost, 2) == cost,
                   max_position=sol.max_position, states=int((sol.policy >= 0).sum()),
                   iterations=sol.iterations, seconds=time.perf_counter() - start)
        costs = dict(holding_cost=1.0, penalty_cost=float(penalty), warmup=200)
        for kind in BASELINES:
            policy, _ = baselines.fit(kind, train, lead, **costs)
            value = float(baselines.evaluate(policy, test, lead, **costs).average_cost[0])
            row[kind] = value
            row[f"{kind}_params"] = policy.params[0].tolist()
            row[f"{kind}_gap_pct"] = 100 * (value - sol.average_cost) / sol.average_cost
        for name, periods in LOOKAHEAD.items():
            policy = optimum.lookahead_policy(pmf, lead, 1.0, penalty, periods=periods)
            value = float(optimum.simulate_policy(policy, test[0], 1.0, penalty, warmup=200).mean())
            row[name] = value
            row[f"{name}_gap_pct"] = 100 * (value - sol.average_cost) / sol.average_cost
        rows.append(row)
    text = table(rows, COLUMNS)
    print(text)
    matched = sum(r["rounds_to_published"] for r in rows)
    print(f"{matched}/{len(rows)} instances round to the published two decimals")
    path = write_results("zipkin", dict(machine=machine("cpu"), rows=rows))
    markdown = path.with_suffix(".md")
    header = "| " + " | ".join(h for _, h, _ in COLUMNS) + " |"
    lines = [header, "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(format(r[k], f) for k, _, f in COLUMNS) + " |" for r in rows]
    markdown.write_text("\n".join(lines) + "\n")
    print(f"wrote {path} and {markdown}")
    return 0 if matched == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
