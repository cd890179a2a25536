"""Population training against sequential runs: trials per hour and training SKU-days per
second for populations of K members (K seeds of the default configuration, except a fixed
budget and no early stopping, so that every trial does the same work) and for the same trials
run one after another, in the same benchmark run.

    python bench/population.py                                   # DS, K = 1 4 16 64, 1 thread
    python bench/population.py --members 1 16 --epochs 10 --busy # + next to a busy core
    python bench/population.py --device cuda --members 1 16 256 1024

Sequential time for K trials is K times the mean of ``--sequential`` single runs timed right
before the population (each trial does the same work; a single run is the population code
with K = 1). The population's
``speedup`` is that sequential time over its own, ``cpu_speedup`` the same in CPU seconds (with
one thread, the work itself, whatever other processes do to the wall time). ``--busy`` adds a population of 16 next to
a process that keeps one core busy, with ``--threads`` and with torch's default threads (one
per core), against a single run next to the busy core with ``--threads``. The JSON (with
the machine) is rewritten after every row.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import multiprocessing
import os
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # also under `python -P`
from common import machine, sync, table, write_results  # noqa: E402

from deepstock_fast.envs import InstanceConfig  # noqa: E402
from deepstock_fast.policies import PolicyConfig  # noqa: E402
from deepstock_fast.trainers import TRAINERS  # noqa: E402


def configs(algo: str, k: int, budget: int) -> list:
    """K members: seeds 0..K-1 of the algo's defaults with ``budget`` iterations and no early
    stopping."""
    cls = TRAINERS[algo].config
    field = "epochs" if algo == "ds" else "total_steps"
    return [cls(**{field: budget, "patience": 10 ** 6, "seed": seed}) for seed in range(k)]


def sku_days(algo: str, instance: InstanceConfig, config) -> int:
    """Training SKU-days (environment transitions times the review period) of one trial."""
    if algo == "ds":
        return config.epochs * (config.batch_size or instance.num_skus) * instance.horizon
    return config.total_steps * instance.review_period


def timed(algo: str, instance, members: list, args, threads: int | None
          ) -> tuple[float, float]:
    """(wall, CPU) seconds of training ``members`` (one population, or one run when a single
    one). With one thread on a shared machine, CPU seconds count the work whatever the other
    processes do to the wall time."""
    train = TRAINERS[algo].train
    policy = PolicyConfig(hidden=TRAINERS[algo].hidden)
    sync(args.device)
    start, cpu = time.perf_counter(), time.process_time()
    train(instance, policy, members if len(members) > 1 else members[0], device=args.device,
          progress=False, threads=threads)
    sync(args.device)
    return time.perf_counter() - start, time.process_time() - cpu


def _spin() -> None:
    while True:
        pass


@contextlib.contextmanager
def busy_core():
    """A process that keeps one core busy for the ``with`` block."""
    process = multiprocessing.get_context("spawn").Process(target=_spin, daemon=True)
    process.start()
    try:
        time.sleep(0.5)
        yield
    finally:
        process.terminate()
        process.join()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instance", default="zipkin:L=2,p=9", help="the instance trained on")
    parser.add_argument("--algos", nargs="+", default=["ds"], choices=sorted(TRAINERS))
    parser.add_argument("--members", nargs="+", type=int, default=[1, 4, 16, 64],
                        help="population sizes K (default 1 4 16 64)")
    parser.add_argument("--epochs", type=int, default=20, help="DS epochs per trial")
    parser.add_argument("--rl-steps", type=int, default=20_000,
                        help="PPO and DDPG environment transitions per trial")
    parser.add_argument("--sequential", type=int, default=3,
                        help="single runs measured for the sequential time")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--busy", action="store_true",
                        help="also time 16 members next to a busy core")
    parser.add_argument("--busy-epochs", type=int, default=4,
                        help="DS epochs of the busy-core measurement")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args(argv)
    instance = InstanceConfig.from_name(args.instance)
    rows, path = [], None

    def add(row: dict) -> None:
        nonlocal path
        rows.append(row)
        path = write_results("population", {
            "machine": machine(args.device), "instance": args.instance,
            "threads": args.threads, "args": vars(args), "rows": rows}, path)
        print(f"{row['algo']} K={row['members']} {row['mode']}: {row['seconds']:.1f}s, "
              f"{row['trials_per_hour']:.0f} trials/h, speed-up {row['speedup']:.2f}x"
              + (f" (CPU time: {row['cpu_speedup']:.2f}x)" if "cpu_speedup" in row else ""),
              flush=True)

    for algo in args.algos:
        budget = args.epochs if algo == "ds" else args.rl_steps
        single = configs(algo, 1, budget)[0]
        work = sku_days(algo, instance, single)
        for K in args.members:
            # single runs right before each population, so that a change in the machine's
            # load weighs on both alike
            sequential = [timed(algo, instance, [dataclasses.replace(single, seed=seed)], args,
                                args.threads) for seed in range(args.sequential)]
            seconds, cpu = timed(algo, instance, configs(algo, K, budget), args, args.threads)
            per_run = sum(s for s, _ in sequential) / len(sequential)
            cpu_per_run = sum(c for _, c in sequential) / len(sequential)
            add(dict(algo=algo, members=K, mode="population", seconds=seconds,
                     sequential_seconds=K * per_run, speedup=K * per_run / seconds,
                     cpu_seconds=cpu, sequential_cpu_seconds=K * cpu_per_run,
                     cpu_speedup=K * cpu_per_run / cpu,
                     trials_per_hour=3600 * K / seconds,
                     sequential_trials_per_hour=3600 / per_run,
                     sku_days_per_s=K * work / seconds, sequential_sku_days_per_s=work / per_run,
                     threads=args.threads, busy=False))
        if args.busy and args.device == "cpu":
            short = configs(algo, 16, args.busy_epochs if algo == "ds" else budget // 4)
            with busy_core():
                per_run, _ = timed(algo, instance, short[:1], args, args.threads)
            for threads in (args.threads, os.cpu_count()):
                with busy_core():
                    seconds, _ = timed(algo, instance, short, args, threads)
                add(dict(algo=algo, members=16, mode=f"busy core, {threads} thread(s)",
                         seconds=seconds, sequential_seconds=16 * per_run,
                         speedup=16 * per_run / seconds, trials_per_hour=3600 * 16 / seconds,
                         sequential_trials_per_hour=3600 / per_run,
                         sku_days_per_s=16 * sku_days(algo, instance, short[0]) / seconds,
                         sequential_sku_days_per_s=sku_days(algo, instance, short[0]) / per_run,
                         threads=threads, busy=True))
    print(table(rows, [("algo", "algo", "s"), ("members", "K", "d"), ("mode", "mode", "s"),
                       ("seconds", "population s", ".1f"),
                       ("sequential_seconds", "sequential s", ".1f"),
                       ("speedup", "speed-up", ".2f"),
                       ("cpu_speedup", "CPU-time speed-up", ".2f"),
                       ("trials_per_hour", "trials/h", ".0f"),
                       ("sequential_trials_per_hour", "sequential trials/h", ".0f"),
                       ("sku_days_per_s", "SKU-days/s", ".3g")]))
    print(f"single runs for the sequential time: {args.sequential}; torch threads "
          f"{args.threads}; {args.instance} on {args.device}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
