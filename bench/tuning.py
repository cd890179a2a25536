"""Tuning studies with the paper's protocol (``deepstock tune``) on Zipkin instances: does the
Base head make the search converge faster and to a better policy than None, for DS, PPO and
DDPG?

For each instance, algo, head and number of workers, one study (``tuning.run_study``: TPE
search of ``--trials`` trials, then the top ``--top`` configurations re-run with ``--seeds``
seeds) and, per (algo, head):
  - the best-so-far validation cost after each trial, and its gap to the DP optimal policy
    simulated on the same validation episode (every search trial validates on the episode of
    the study's seed);
  - the number of trials until that gap first fell within ``--target-gap`` percent (1%);
  - the final test gap of the kept configuration's median seed to the DP optimum (paired, on
    the same test demand, and against the exact optimal cost);
  - wall time, training runs (trials and re-runs) per hour and training iterations (epochs,
    updates, steps) per head, sequential against ``--workers 2`` (with a time budget per trial,
    runs per hour follow the budget: compare the iterations done in it).
Prints a table, writes JSON with the machine to bench/results/. Studies go to ``--study-root``
and continue when the same command runs again.

    python bench/tuning.py                                       # the issue's full benchmark
    python bench/tuning.py --algos ds --trials 12 --top 2 --seeds 2 --set ds:epochs=100 \\
        --workers 1 2                                             # a reduced one
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # also under `python -P`
from common import machine, table, write_results  # noqa: E402

from deepstock_fast import compare, optimum, tuning  # noqa: E402
from deepstock_fast.envs import InstanceConfig  # noqa: E402
from deepstock_fast.trainers import TRAINERS, parse_settings  # noqa: E402
from deepstock_fast.trainers.common import validation_env  # noqa: E402


def settings_for(algo: str, items: list[str]) -> dict:
    """``--set`` items for ``algo``: ``algo:key=value`` for that algo, ``key=value`` for every
    algo whose search names include key."""
    mine = []
    for item in items:
        prefix, colon, rest = item.partition(":")
        if colon and prefix in TRAINERS and "=" not in prefix:
            if prefix == algo:
                mine.append(rest)
        elif item.partition("=")[0] in tuning.search_names(algo):
            mine.append(item)
    return parse_settings(mine, tuning.search_names(algo))


def validation_reference(instance: InstanceConfig, config, seed: int) -> float | None:
    """The DP optimal policy's cost on the validation episode every search trial of ``seed``
    validates on (None where the DP does not apply)."""
    if not compare.dp_applies(instance):
        return None
    valid = validation_env(instance, config.validation_skus, seed, "cpu").sample_episode()
    h, p, c = instance.holding_cost, instance.penalty_cost, instance.order_cost
    return float(optimum.simulate_policy(compare.dp_solution(instance), valid.demand.double(),
                                         h, p, c, warmup=instance.warmup).mean())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", nargs="+", default=["zipkin:L=2,p=9"])
    parser.add_argument("--algos", nargs="+", default=list(TRAINERS), choices=list(TRAINERS))
    parser.add_argument("--heads", nargs="+", default=["none", "base"])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--top", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="run every study with each number of workers (timing)")
    parser.add_argument("--set", nargs="*", default=[], metavar="[ALGO:]KEY=VALUE",
                        help="fixed settings, e.g. ds:epochs=200 ppo:total_steps=50000 "
                             "time_budget=60 (per trial)")
    parser.add_argument("--target-gap", type=float, default=1.0, help="percent")
    parser.add_argument("--study-root", default="bench-studies")
    args = parser.parse_args(argv)
    rows, path = [], None
    for name in args.instances:
        instance = InstanceConfig.from_name(name)
        for algo in args.algos:
            try:
                settings = settings_for(algo, args.set)
            except ValueError as e:
                parser.error(f"--set {e}")
            for workers in args.workers:
                config = tuning.StudyConfig(algo=algo, heads=args.heads, instance=name,
                                            trials=args.trials, top=args.top, seeds=args.seeds,
                                            seed=args.seed, settings=settings,
                                            workers=workers)
                slug = name.replace(":", "-").replace(",", "-").replace("=", "")
                study_dir = pathlib.Path(args.study_root) / f"{slug}-{algo}-w{workers}"
                start = time.perf_counter()
                summary = tuning.run_study(config, study_dir)
                wall = time.perf_counter() - start
                if summary.get("interrupted"):
                    print("interrupted: run the same command again to continue")
                    return 130
                _, algo_config = tuning.build_configs(algo, "base", instance, dict(settings))
                ref_valid = validation_reference(instance, algo_config, args.seed)
                ref = summary["reference"] or {}
                for head in args.heads:
                    h = summary["heads"][head]
                    curve = tuning.best_so_far(h["values"])
                    gaps = [None if v is None or ref_valid is None else
                            100 * (v / ref_valid - 1) for v in curve]
                    reached = next((i + 1 for i, g in enumerate(gaps)
                                    if g is not None and g <= args.target_gap), None)
                    kept = h.get("kept") or {}
                    runs = len(h["values"]) + args.top * args.seeds
                    # a time budget per trial makes runs/h follow the budget: count iterations
                    iterations = sum(int(r["iterations"] or 0) for r in
                                     tuning._read_csv(study_dir / head / "trials.csv"))
                    rows.append(dict(
                        instance=name, algo=algo, head=head, workers=workers,
                        trials=h["trials"], best_validation=h["best_validation"],
                        reference_validation=ref_valid, best_gap_pct=gaps[-1] if gaps else None,
                        trials_to_target=reached, kept_trial=kept.get("search_number"),
                        test_cost=kept.get("test_cost"), test_cost_se=kept.get("test_cost_se"),
                        test_gap_pct=h.get("paired_gap_pct"), test_gap_se=h.get("paired_gap_se"),
                        gap_vs_exact_pct=h.get("gap_vs_reference_pct"),
                        reference=ref.get("name"), reference_cost=ref.get("cost"),
                        study_wall_seconds=wall, trial_cpu_seconds=h["cpu_seconds"],
                        runs_per_hour=3600 * runs / h["wall_seconds"] if h["wall_seconds"]
                        else None,
                        study_runs_per_hour=3600 * runs * len(args.heads) / wall,
                        iterations=iterations,
                        curve=curve, gap_curve=gaps, params=kept.get("params"),
                        settings={k: list(v) if isinstance(v, tuple) else v
                                  for k, v in settings.items()}))
                path = write_results("tuning", {
                    "machine": machine("cpu"), "target_gap_pct": args.target_gap,
                    "protocol": dict(trials=args.trials, top=args.top, seeds=args.seeds,
                                     seed=args.seed), "rows": rows}, path)
                print(f"{name} {algo} workers={workers}: {wall:.0f} s", flush=True)
    print(table(rows, [("algo", "algo", "s"), ("head", "head", "s"), ("workers", "W", "d"),
                       ("trials", "trials", "d"), ("best_validation", "best valid", ".4f"),
                       ("best_gap_pct", "valid gap %", "+.2f"),
                       ("trials_to_target", f"trials to {args.target_gap:g}%", "d"),
                       ("test_cost", "test cost", ".4f"), ("test_gap_pct", "test gap %", "+.2f"),
                       ("test_gap_se", "+-", ".2f"), ("gap_vs_exact_pct", "vs exact %", "+.2f"),
                       ("study_wall_seconds", "study s", ".0f"),
                       ("study_runs_per_hour", "runs/h", ".0f")]))
    print("valid gap: best-so-far validation cost vs the DP policy on the same validation "
          "episode; test gap: the kept configuration's median seed vs the DP policy on the "
          "same test demand (paired)")
    print(f"wrote {path}")
    print(json.dumps({"study_root": str(args.study_root)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
