"""Quality of trained policies against the exact optimum on the Zipkin (2008) instances.

For each instance (lost sales, Poisson(5), h = 1, p in {4, 9, 19, 39}, L in {1..4}) and each
regularization head, DS trains with the package defaults and the run is scored by
  - the gap to the optimum on the validation episode during training, against the DP's optimal
    policy simulated on the same episode (common random numbers), and the wall and CPU seconds
    until that gap first fell to 1%;
  - the final test gap: the trained policy and the DP policy on one test episode of 1024 SKUs x
    1000 days (same demand), and the test cost against the exact optimal cost.
Prints a table, writes JSON with the machine to bench/results/.

    python bench/quality.py                                   # all 16 instances, base and none
    python bench/quality.py --instances 4,39 --heads base     # one instance
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # also under `python -P`
from common import machine, table, write_results  # noqa: E402

from deepstock_fast import compare, optimum  # noqa: E402
from deepstock_fast.envs import InstanceConfig, InventoryEnv  # noqa: E402
from deepstock_fast.evaluation import evaluate  # noqa: E402
from deepstock_fast.policies import PolicyConfig  # noqa: E402
from deepstock_fast.trainers import DSConfig, train_ds  # noqa: E402

ALL = [(L, p) for L in (1, 2, 3, 4) for p in (4, 9, 19, 39)]


def instance_list(text: str | None):
    if not text:
        return ALL
    out = []
    for item in text.split(";"):
        L, p = (int(v) for v in item.split(","))
        out.append((L, p))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", default=None,
                        help="'L,p;L,p;...' (default: all 16)")
    parser.add_argument("--heads", nargs="+", default=["base", "none"])
    parser.add_argument("--epochs", type=int, default=DSConfig.epochs)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target-gap", type=float, default=1.0, help="percent")
    args = parser.parse_args(argv)
    config = DSConfig(epochs=args.epochs, seed=args.seed)
    published = optimum.zipkin_published()
    rows = []
    for lead, penalty in instance_list(args.instances):
        instance = InstanceConfig.from_name(f"zipkin:L={lead},p={penalty}")
        sol = optimum.solve_lost_sales(optimum.poisson_pmf(5.0), lead, 1.0, float(penalty))
        valid = InventoryEnv(instance.replace(num_skus=config.validation_skus), args.device,
                             seed=config.seed + 1_000_003).sample_episode().demand
        dp_valid = float(optimum.simulate_policy(sol, valid.double(), 1.0, penalty,
                                                 warmup=instance.warmup).mean())
        test = instance.replace(num_skus=1024, horizon=1000)
        test_seed = config.seed + 2
        dp_test = float(optimum.simulate_policy(
            sol, compare.test_demand(test, test_seed, args.device).double(), 1.0, penalty,
            warmup=test.warmup).mean())
        for head in args.heads:
            start = time.perf_counter()
            policy, result = train_ds(instance, PolicyConfig(head=head), config,
                                      device=args.device, label=f"L={lead} p={penalty} {head}")
            reached = next((h for h in result.history
                            if 100 * (h["validation_cost"] / dp_valid - 1) <= args.target_gap),
                           None)
            cost = evaluate(policy, test, seed=test_seed, device=args.device).average_cost
            rows.append(dict(
                lead_time=lead, penalty=penalty, head=head, published=published[(lead, penalty)],
                optimum=sol.average_cost, test_cost=cost, dp_test_cost=dp_test,
                gap_pct=100 * (cost / dp_test - 1),
                gap_vs_exact_pct=100 * (cost / sol.average_cost - 1),
                best_validation_gap_pct=100 * (result.best_validation / dp_valid - 1),
                seconds_to_target=reached["seconds"] if reached else None,
                cpu_seconds_to_target=reached["cpu_seconds"] if reached else None,
                train_seconds=result.seconds, epochs=result.iterations, stopped=result.stopped,
                wall_seconds=time.perf_counter() - start))
            r = rows[-1]
            print(f"L={lead} p={penalty} {head}: test gap {r['gap_pct']:+.2f}% (same demand), "
                  f"{r['gap_vs_exact_pct']:+.2f}% vs exact, 1% at "
                  f"{r['seconds_to_target'] if reached else float('nan'):.0f}s", flush=True)
    text = table(rows, [("lead_time", "L", "d"), ("penalty", "p", "d"), ("head", "head", "s"),
                        ("optimum", "optimum", ".4f"), ("test_cost", "test cost", ".4f"),
                        ("gap_pct", "gap % (same demand)", "+.2f"),
                        ("gap_vs_exact_pct", "gap % vs exact", "+.2f"),
                        ("seconds_to_target", f"s to {args.target_gap:g}%", ".0f"),
                        ("cpu_seconds_to_target", "CPU s", ".0f"),
                        ("train_seconds", "train s", ".0f"), ("epochs", "epochs", "d")])
    print(text)
    path = write_results("quality", {"machine": machine(args.device),
                                     "ds_config": dataclasses.asdict(config),
                                     "target_gap_pct": args.target_gap, "rows": rows})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
