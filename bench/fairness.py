"""None against Base, fairly: for each instance, algo and training seed, both heads are trained
with the same configuration and seed, then costed on the same test demand; the gap
None - Base is reported per seed with its paired standard error over the test SKUs (the SKUs'
cost differences on common demand), and over seeds with the standard error across seeds.

    python bench/fairness.py                              # zipkin L=2,p=9 and L=4,p=39, paper 1, 2
    python bench/fairness.py --algos ds --seeds 0 1 2 --instances zipkin:L=2,p=9
    python bench/fairness.py --resume bench/results/fairness-cpu-....json   # skip finished rows

Budgets are reduced from the trainers' defaults (``--ds-epochs``, ``--rl-steps``) so that the
whole grid runs in about an hour on 2 cores; every run uses one torch thread (``--threads``).
Zipkin rows also give each head's gap to the DP's optimal policy on the same test demand.
The JSON (with the machine) is rewritten after every row.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # also under `python -P`
from common import machine, table, write_results  # noqa: E402

import torch  # noqa: E402

from deepstock_fast import compare, optimum  # noqa: E402
from deepstock_fast.envs import InstanceConfig  # noqa: E402
from deepstock_fast.evaluation import evaluate, paired_gap  # noqa: E402
from deepstock_fast.policies import PolicyConfig  # noqa: E402
from deepstock_fast.trainers import TRAINERS  # noqa: E402

INSTANCES = ("zipkin:L=2,p=9", "zipkin:L=4,p=39", "paper:setting=1", "paper:setting=2")
#: Far from every training and validation stream of seeds 0..999.
TEST_SEED = 987_654_321


def test_instance(instance: InstanceConfig, zipkin: bool) -> InstanceConfig:
    """1024 SKUs x 1000 days for Zipkin (a long-run average); 1000 trajectories of the paper's
    settings (10x the paper's largest test set)."""
    if zipkin:
        return instance.replace(num_skus=1024, horizon=1000)
    return instance.replace(num_skus=1000)


def run_row(name: str, algo: str, seed: int, args) -> dict:
    instance = InstanceConfig.from_name(name)
    zipkin = name.startswith("zipkin")
    test = test_instance(instance, zipkin)
    cls, train, hidden = TRAINERS[algo]
    budget = {"epochs": args.ds_epochs} if algo == "ds" else {"total_steps": args.rl_steps}
    config = cls(seed=seed, **budget)
    row = dict(instance=name, algo=algo, seed=seed, config=dataclasses.asdict(config))
    costs = {}
    for head in ("none", "base"):
        start, cpu = time.perf_counter(), time.process_time()
        policy, result = train(instance, PolicyConfig(head=head, hidden=hidden), config,
                               device=args.device, progress=False,
                               label=f"{name} {algo}+{head} seed {seed}")
        ev = evaluate(policy, test, seed=TEST_SEED, device=args.device)
        costs[head] = ev.per_sku.average_cost
        row[head] = dict(test_cost=float(ev.per_sku.average_cost.double().mean()),
                         best_validation=result.best_validation, stopped=result.stopped,
                         iterations=result.iterations, seconds=time.perf_counter() - start,
                         cpu_seconds=time.process_time() - cpu)
    row["gap_pct"], row["gap_se"] = paired_gap(costs["none"], costs["base"])
    if zipkin:
        L, p = instance.lead_time, instance.penalty_cost
        sol = optimum.solve_lost_sales(optimum.poisson_pmf(5.0), L, 1.0, p)
        demand = compare.held_out_demand(test, TEST_SEED, args.device).double()
        dp = optimum.simulate_policy(sol, demand, 1.0, p, warmup=test.warmup)
        for head in ("none", "base"):
            row[head]["gap_to_dp_pct"], row[head]["gap_to_dp_se"] = paired_gap(costs[head], dp)
    return row


def summary(rows: list[dict]) -> list[dict]:
    """Per (instance, algo): the mean None - Base gap over seeds and its standard error across
    seeds, and the mean of the per-seed paired standard errors (the test set's noise)."""
    out = []
    for key in dict.fromkeys((r["instance"], r["algo"]) for r in rows):
        gaps = [r["gap_pct"] for r in rows if (r["instance"], r["algo"]) == key]
        ses = [r["gap_se"] for r in rows if (r["instance"], r["algo"]) == key]
        n = len(gaps)
        mean = sum(gaps) / n
        sd = math.sqrt(sum((g - mean) ** 2 for g in gaps) / (n - 1)) if n > 1 else float("nan")
        out.append(dict(instance=key[0], algo=key[1], seeds=n, gap_pct=mean,
                        se_seeds=sd / math.sqrt(n), se_test=sum(ses) / n,
                        per_seed=" ".join(f"{g:+.2f}" for g in gaps)))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", nargs="+", default=list(INSTANCES))
    parser.add_argument("--algos", nargs="+", default=list(TRAINERS), choices=sorted(TRAINERS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--ds-epochs", type=int, default=200)
    parser.add_argument("--rl-steps", type=int, default=100_000,
                        help="PPO and DDPG environment transitions")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--label", default="", help="e.g. 'before' or 'after', kept in the JSON")
    parser.add_argument("--resume", type=pathlib.Path, default=None,
                        help="a JSON this script wrote: keep its rows, run the missing ones")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows, path = [], None
    if args.resume is not None:
        rows, path = json.loads(args.resume.read_text())["rows"], args.resume
    done = {(r["instance"], r["algo"], r["seed"]) for r in rows}
    for name in args.instances:
        for algo in args.algos:
            for seed in args.seeds:
                if (name, algo, seed) in done:
                    continue
                row = run_row(name, algo, seed, args)
                rows.append(row)
                path = write_results("fairness", {
                    "machine": machine(args.device), "label": args.label,
                    "threads": args.threads, "test_seed": TEST_SEED, "rows": rows,
                    "summary": summary(rows)}, path)
                print(f"{name} {algo} seed {seed}: None - Base {row['gap_pct']:+.2f}% "
                      f"(SE {row['gap_se']:.2f}); test costs none {row['none']['test_cost']:.4f} "
                      f"base {row['base']['test_cost']:.4f}", flush=True)
    print(table(summary(rows), [("instance", "instance", "s"), ("algo", "algo", "s"),
                                ("seeds", "seeds", "d"), ("gap_pct", "None - Base %", "+.2f"),
                                ("se_seeds", "SE (seeds)", ".2f"),
                                ("se_test", "SE (test, paired)", ".2f"),
                                ("per_seed", "per seed", "s")]))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
