"""One DS policy for a whole catalog, from a long-format sales file to its test report.

Writes a synthetic catalog (``deepstock_fast.synthetic``: intermittent, seasonal, promotions,
price changes, lead times 1..10, per-SKU costs) as Parquet, reads it (the first parse, then
the binary cache), trains one DS + Base policy on random windows and SKU minibatches of the
training period (validation on a fixed subset of the validation period), and costs it on every
SKU over the test period next to the per-SKU base-stock, capped base-stock and (s, S)
policies searched on the training period alone. Reports the test metrics (cost, fill rate,
stockout rate, turnover days), the seconds of each stage and the peak memory; JSON with the
machine to bench/results/.

    OMP_NUM_THREADS=1 python bench/catalog.py [--skus 10000] [--days 365] [--epochs 300]
    python bench/catalog.py --skus 1000000 --device cuda --batch-size 65536 \
        --validation-skus 65536 --workers 16                                 # on a GPU
"""

from __future__ import annotations

import argparse
import pathlib
import resource
import sys
import tempfile
import time

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # also under `python -P`
from common import machine, sync, table, write_results  # noqa: E402

from deepstock_fast import sales, synthetic  # noqa: E402
from deepstock_fast.backtest import backtest  # noqa: E402
from deepstock_fast.envs import InstanceConfig  # noqa: E402
from deepstock_fast.evaluation import paired_gap  # noqa: E402
from deepstock_fast.policies import PolicyConfig  # noqa: E402
from deepstock_fast.trainers import DSConfig, train_ds  # noqa: E402


def peak_memory_gb(device: str) -> dict:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    out = {"peak_rss_gb": rss}
    if device.startswith("cuda"):
        out["peak_cuda_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skus", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=1024, help="SKUs per epoch")
    parser.add_argument("--validation-skus", type=int, default=1024)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--lr", type=float, default=1e-3,
                        help="DS's default 3e-3 was unstable on this catalog (docs/BENCHMARKS.md)")
    parser.add_argument("--time-budget", type=float, default=None, help="seconds of training")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-dir", default=None,
                        help="where the sales file and its cache go (default: a temporary "
                             "directory)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1,
                        help="processes writing the synthetic file (e.g. 16 for 1M SKUs)")
    args = parser.parse_args(argv)
    seconds = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = pathlib.Path(args.data_dir or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"synthetic-{args.skus}x{args.days}.parquet"
        start = time.perf_counter()
        path, attributes = synthetic.write_synthetic(path, args.skus, args.days, seed=args.seed,
                                                     workers=args.workers)
        seconds["generate"] = time.perf_counter() - start
        cache = path.with_name(path.name + sales.CACHE_SUFFIX)
        cache.unlink(missing_ok=True)
        for stage in ("parse", "cache_load"):
            sales._MEMO.clear()
            start = time.perf_counter()
            sales.read_sales(path, attributes=attributes)
            seconds[stage] = time.perf_counter() - start
        instance = InstanceConfig.from_name(f"sales:path={path},attributes={attributes}")
        config = DSConfig(epochs=args.epochs, batch_size=args.batch_size,
                          validation_skus=args.validation_skus, eval_every=args.eval_every,
                          time_budget=args.time_budget, lr=args.lr, seed=args.seed)
        sync(args.device)
        start = time.perf_counter()
        policy, result = train_ds(instance, PolicyConfig(head="base", hidden=(64, 64)), config,
                                  device=args.device, progress=True, label="DS + base")
        sync(args.device)
        seconds["train"] = time.perf_counter() - start
        start = time.perf_counter()
        bt = backtest({"DS + base": policy}, instance, seed=args.seed, device=args.device)
        sync(args.device)
        seconds["test_and_baselines"] = time.perf_counter() - start
    reference = bt.per_sku("best base-stock per SKU").average_cost
    rows = []
    for row in bt.by_category():
        if row["category"] != "all":
            continue
        gap, se = paired_gap(bt.per_sku(row["policy"]).average_cost, reference)
        rows.append({**row, "gap_pct": gap, "gap_se": se})
    print(table(rows, COLUMNS))
    print(table([{"stage": k, "seconds": v} for k, v in seconds.items()],
                [("stage", "stage", "s"), ("seconds", "seconds", ".2f")]))
    memory = peak_memory_gb(args.device)
    print(", ".join(f"{k} {v:.2f}" for k, v in memory.items()))
    payload = dict(machine=machine(args.device), args=vars(args), seconds=seconds,
                   memory=memory, epochs_done=result.iterations, stopped=result.stopped,
                   best_validation=result.best_validation, test=rows,
                   by_category=bt.by_category(), test_days=bt.days)
    print(f"wrote {write_results('catalog', payload)}")
    return 0


COLUMNS = [("policy", "policy", "s"), ("skus", "SKUs", "d"),
           ("average_cost", "cost / SKU-day", ".4f"),
           ("gap_pct", "gap % vs base-stock", "+.2f"), ("gap_se", "+-", ".2f"),
           ("fill_rate", "fill rate", ".3f"), ("stockout_rate", "stockout", ".3f"),
           ("turnover_days", "turnover d", ".2f")]

if __name__ == "__main__":
    sys.exit(main())
