"""Quality of trained policies against the exact optimum on the Zipkin (2008) instances (and,
optionally, against the best base-stock policy on the paper's synthetic settings).

For each instance (lost sales, Poisson(5), h = 1, p in {4, 9, 19, 39}, L in {1..4}), each algo
(DS by default; PPO, DDPG) and each regularization head, the trainer runs with the package
defaults and the run is scored by
  - the gap to the optimum on the validation episode during training, against the DP's optimal
    policy simulated on the same episode (common random numbers), and the wall and CPU seconds
    until that gap first fell to 1%;
  - the final test gap: the trained policy and the DP policy on one test episode of 1024 SKUs x
    1000 days (same demand), and the test cost against the exact optimal cost.
Prints a table, writes JSON with the machine to bench/results/.

    python bench/quality.py                                   # DS on all 16, base and none
    python bench/quality.py --instances 4,39 --heads base     # one instance
    python bench/quality.py --algos ppo ddpg --instances "2,9;4,39" --paper 1 2
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
from deepstock_fast.evaluation import evaluate, paired_gap  # noqa: E402
from deepstock_fast.trainers import parse_settings  # noqa: E402
from deepstock_fast.policies import PolicyConfig  # noqa: E402
from deepstock_fast.seeding import stream  # noqa: E402
from deepstock_fast.trainers import TRAINERS  # noqa: E402

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
                        help="Zipkin instances 'L,p;L,p;...' (default: all 16; 'none': skip)")
    parser.add_argument("--paper", type=int, nargs="*", default=[],
                        help="also the paper's synthetic settings (e.g. 1 2), against the best "
                             "base-stock policy per SKU")
    parser.add_argument("--algos", nargs="+", default=["ds"], choices=sorted(TRAINERS))
    parser.add_argument("--heads", nargs="+", default=["base", "none"])
    parser.add_argument("--epochs", type=int, default=None, help="DS epochs")
    parser.add_argument("--steps", type=int, default=None, help="PPO/DDPG transitions")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target-gap", type=float, default=1.0, help="percent")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="hyperparameters for every algo whose config has KEY, e.g. lr=3e-4")
    args = parser.parse_args(argv)
    published = optimum.zipkin_published()
    try:  # a key may belong to any of the chosen algos' configs
        overrides = parse_settings(args.set, {f.name for a in args.algos
                                              for f in dataclasses.fields(TRAINERS[a][0])})
    except ValueError as e:
        parser.error(f"--set {e}")
    cases = [] if args.instances == "none" else [
        (f"zipkin:L={L},p={p}", (L, p)) for L, p in instance_list(args.instances)]
    cases += [(f"paper:setting={k}", None) for k in args.paper]
    rows, path = [], None
    for name, zipkin in cases:
        instance = InstanceConfig.from_name(name)
        test = compare.held_out_instance(instance)
        test_seed = args.seed  # evaluate() and held_out_demand() draw from its test stream
        for algo in args.algos:
            cls, train, hidden = TRAINERS[algo]
            changes = {"seed": args.seed}
            if algo == "ds" and args.epochs:
                changes["epochs"] = args.epochs
            if algo != "ds" and args.steps:
                changes["total_steps"] = args.steps
            fields = {f.name for f in dataclasses.fields(cls)}
            changes.update({k: v for k, v in overrides.items() if k in fields})
            config = cls(**changes)
            valid = InventoryEnv(instance.replace(num_skus=config.validation_skus), args.device,
                                 seed=stream(args.seed, "validation")
                                 ).sample_episode().demand
            if zipkin:
                lead, penalty = zipkin
                sol = optimum.solve_lost_sales(optimum.poisson_pmf(5.0), lead, 1.0,
                                               float(penalty))
                ref_valid = float(optimum.simulate_policy(sol, valid.double(), 1.0, penalty,
                                                          warmup=instance.warmup).mean())
                ref_per_sku = optimum.simulate_policy(
                    sol, compare.held_out_demand(test, test_seed, args.device).double(), 1.0,
                    penalty, warmup=test.warmup)
                reference, exact = "DP policy", sol.average_cost
            else:
                refs = {r["policy"]: r for r in compare.reference_rows(
                    instance, test, seed=test_seed, device=args.device)}
                ref_per_sku, ref_valid, reference, exact = refs["best base-stock"]["per_sku"], \
                    None, "best base-stock", None
            ref_test = float(ref_per_sku.mean())
            for head in args.heads:
                start, cpu_start = time.perf_counter(), time.process_time()
                policy, result = train(instance, PolicyConfig(head=head, hidden=hidden), config,
                                       device=args.device, label=f"{name} {algo}+{head}")
                reached = next((h for h in result.history if ref_valid and 100 * (
                    h["validation_cost"] / ref_valid - 1) <= args.target_gap), None)
                ev = evaluate(policy, test, seed=test_seed, device=args.device)
                cost = ev.average_cost
                gap, gap_se = paired_gap(ev.per_sku.average_cost, ref_per_sku)
                rows.append(dict(
                    instance=name, algo=algo, head=head, reference=reference,
                    published=published.get(zipkin) if zipkin else None, optimum=exact,
                    test_cost=cost, reference_test_cost=ref_test,
                    gap_pct=gap, gap_se=gap_se,
                    gap_vs_exact_pct=100 * (cost / exact - 1) if exact else None,
                    seconds_to_target=reached["seconds"] if reached else None,
                    cpu_seconds_to_target=reached["cpu_seconds"] if reached else None,
                    train_seconds=result.seconds, iterations=result.iterations,
                    cpu_seconds=time.process_time() - cpu_start,  # all threads, evaluation incl.
                    unit=result.unit, stopped=result.stopped,
                    wall_seconds=time.perf_counter() - start, config=dataclasses.asdict(config)))
                r = rows[-1]
                path = write_results("quality", {"machine": machine(args.device),
                                                 "target_gap_pct": args.target_gap,
                                                 "rows": rows}, path)
                print(f"{name} {algo}+{head}: test gap {r['gap_pct']:+.2f}% vs {reference} on "
                      f"the same demand, {args.target_gap:g}% at "
                      f"{r['seconds_to_target'] if reached else float('nan'):.0f}s", flush=True)
    text = table(rows, [("instance", "instance", "s"), ("algo", "algo", "s"),
                        ("head", "head", "s"), ("reference_test_cost", "reference", ".4f"),
                        ("test_cost", "test cost", ".4f"),
                        ("gap_pct", "gap % (same demand)", "+.2f"), ("gap_se", "+-", ".2f"),
                        ("gap_vs_exact_pct", "gap % vs exact", "+.2f"),
                        ("seconds_to_target", f"s to {args.target_gap:g}%", ".0f"),
                        ("cpu_seconds_to_target", "CPU s", ".0f"),
                        ("train_seconds", "train s", ".0f"), ("cpu_seconds", "run CPU s", ".0f"),
                        ("iterations", "iters", "d")])
    print(text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
