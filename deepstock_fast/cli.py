"""The ``deepstock`` command line: train, eval, baselines, tune, bench.

    deepstock train --instance zipkin:L=2,p=9 --head none,base       # the README's main job
    deepstock tune --algo ds --head none,base --instance zipkin:L=2,p=9 --workers 2
    deepstock tune report studies/zipkin-L2-p9-ds
    deepstock eval --policy runs/zipkin-L2-p9/base/policy.pt
    deepstock baselines --instance paper:setting=2
    deepstock bench throughput --quick

Instances are names (``zipkin:L=..,p=..``, ``paper:setting=..``, with ``key=value`` overrides) or
JSON/YAML files of an :class:`~deepstock_fast.envs.InstanceConfig`'s fields.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import os
import pathlib
import re
import runpy
import shutil
import sys
import traceback

import torch

from . import build_info, compare, distributed, seeding
from .envs import InstanceConfig
from .envs.instances import FAMILIES
from .evaluation import evaluate
from .backtest import backtest, rolling_origin
from .checkpoint import load_file
from .policies import HEADS, Policy, PolicyConfig
from .report import learning_curve, machine, policy_plot, table
from .trainers import TRAINERS, parse_settings
from .trainers.common import RUN_FILES, OutputDirError, TensorBoard, output_dir

ALGOS = tuple(TRAINERS)
#: command-line flag -> hyperparameter field (each applies to the algos whose config has it)
FLAGS = {"epochs": "epochs", "steps": "total_steps", "batch_size": "batch_size", "lr": "lr",
         "num_envs": "num_envs", "eval_every": "eval_every", "patience": "patience",
         "validation_skus": "validation_skus", "checkpoint_every": "checkpoint_every",
         "time_budget": "time_budget", "seed": "seed"}


class UsageError(ValueError):
    """A bad argument: reported as ``deepstock <command>: error: ...`` with exit status 2."""


#: Errors a bad argument or file gives: exit status 2 (anything else, a bug: 1).
USER_ERRORS = (ValueError, OSError, OutputDirError)


# ---- argument helpers ------------------------------------------------------------------------
def _widths(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(w) for w in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated widths like 64,64, got "
                                         f"{text!r}") from None
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"widths must be positive, got {text!r}")
    return widths


def _heads(text: str) -> list[str]:
    heads = [h.strip() for h in text.split(",") if h.strip()]
    bad = [h for h in heads if h not in HEADS]
    if not heads or bad:
        raise argparse.ArgumentTypeError(f"heads must be among {', '.join(HEADS)}; got {text!r}")
    return heads


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") \
                from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value
    return parse


def _device(text: str) -> str:
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        raise argparse.ArgumentTypeError(f"unknown device {text!r}") from None
    if device.type not in ("cpu", "cuda"):  # the ops have CPU and CUDA kernels only
        raise argparse.ArgumentTypeError(f"device must be cpu or cuda[:N], got {text!r}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError("device cuda requested but no CUDA GPU is available")
        if not build_info()["cuda_kernels"]:
            raise argparse.ArgumentTypeError("device cuda requested but the extension was built "
                                             "without CUDA kernels")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"device {text}: only {torch.cuda.device_count()} "
                                             "CUDA GPU(s) here")
    return text


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text.replace("=", "")).strip("-") or "instance"


# ---- train -------------------------------------------------------------------------------------
def algo_config(args):
    """The algo's hyperparameters: its defaults, the flags given, then every --set key=value."""
    cls = TRAINERS[args.algo][0]
    fields = {f.name for f in dataclasses.fields(cls)}
    values = {}
    for flag, name in FLAGS.items():
        value = getattr(args, flag)
        if value is None or (flag == "seed" and value == 0):
            continue
        if name not in fields:
            raise UsageError(f"--{flag.replace('_', '-')} does not apply to --algo {args.algo}")
        values[name] = value
    if args.fixed_train_set:
        if "fixed_train_set" not in fields:
            raise UsageError(f"--fixed-train-set does not apply to --algo {args.algo}")
        values["fixed_train_set"] = True
    try:
        values.update(parse_settings(args.set, fields))
    except ValueError as e:
        raise UsageError(f"--set {e}") from None
    return cls(**values)


#: ``deepstock train --sales`` flags -> keys of a ``sales:`` instance (envs/instances.py)
SALES_FLAGS = ("sku_column", "date_column", "quantity_column", "warehouse_column",
               "attributes", "missing", "duplicates", "valid_start", "test_start")


def train_instance(args) -> InstanceConfig:
    """The instance of ``--instance``, or of ``--sales FILE`` and its column and period flags
    (the ``sales:`` family; paths made absolute, so that the saved instance names the files
    from anywhere)."""
    if (args.instance is None) == (args.sales is None):
        raise UsageError("give one of --instance or --sales")
    if args.instance is not None:
        given = [f"--{f.replace('_', '-')}" for f in SALES_FLAGS
                 if getattr(args, f) != SALES_DEFAULTS.get(f)]
        if given:
            raise UsageError(f"{', '.join(given)} apply to --sales, not --instance")
        return InstanceConfig.load(args.instance)
    params = {"path": str(pathlib.Path(args.sales).resolve())}
    for flag in SALES_FLAGS:
        value = getattr(args, flag)
        if value is not None:
            params[flag] = value
    if args.attributes is not None:
        params["attributes"] = str(pathlib.Path(args.attributes).resolve())
    for key in ("valid_start", "test_start"):  # a fraction or a date
        if key in params:
            try:
                params[key] = float(params[key])
            except ValueError:
                pass
    return InstanceConfig.from_dict(FAMILIES["sales"](params))


#: defaults of the --sales flags (None: not given)
SALES_DEFAULTS = {"sku_column": "sku", "date_column": "date", "quantity_column": "quantity",
                  "missing": "zero", "duplicates": "sum"}


def cmd_train(args) -> int:
    """Checks the arguments, then trains in the claimed output directory (written into by this
    run alone, checked writable before minutes of training)."""
    instance = train_instance(args)
    config = algo_config(args)
    name = args.instance or pathlib.Path(args.sales).name.split(".")[0]
    out = pathlib.Path(args.out or f"runs/{_slug(name)}-{args.algo}")
    ctx, args.device = distributed.init(args.device)  # under torchrun: join the group
    if ctx.world > 1 and args.algo != "ds":
        raise UsageError(f"--algo {args.algo}: data-parallel runs (torchrun) train DS only")
    if not ctx.writer:  # another rank of a data-parallel run: its shards; rank 0 reports
        for head in args.head:
            TRAINERS[args.algo][1](instance, PolicyConfig(
                head=head, hidden=args.hidden or TRAINERS[args.algo][2],
                activation=args.activation), config, device=args.device, out_dir=out / head,
                resume=args.resume, progress=False)
        return 0
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite exclude each other: continue the run in "
                         "--out, or replace it")
    if args.resume and not out.is_dir():
        raise UsageError(f"--resume: no checkpoint in {out} (the directory does not exist)")
    if args.tensorboard:
        try:
            import torch.utils.tensorboard  # noqa: F401
        except ImportError:
            raise UsageError("--tensorboard needs the tensorboard package: pip install "
                             "'deepstock_fast[tensorboard]'") from None
    try:
        with output_dir(out):
            found = run_outputs(out)
            if found and not args.resume:
                if not args.overwrite:
                    raise UsageError(
                        f"--out {out} already holds a run ({', '.join(found[:3])}"
                        f"{', ...' if len(found) > 3 else ''}): pass --resume to continue it, "
                        "--overwrite to replace it, or choose another --out")
                clear_run(out)
            return _train(args, instance, config, out)
    except OutputDirError as e:
        raise UsageError(f"--out: {e}") from None


#: What ``deepstock train`` writes into a run directory, besides each head's RUN_FILES.
TOP_FILES = ("results.json", "learning_curve.png")


def _ours(out: pathlib.Path) -> list[pathlib.Path]:
    """The files and folders of a previous run in ``out``: results and plot at the top, and
    each head's checkpoint, policy, metrics and TensorBoard events."""
    found = [out / name for name in TOP_FILES]
    for head in HEADS:
        found += [out / head / name for name in (*RUN_FILES, "tensorboard")]
        found += sorted((out / head).glob("checkpoint-*.pt"))   # populations' groups
        found += sorted((out / head).glob("member-*"))          # populations' members
    return [path for path in found if path.exists()]


def run_outputs(out: pathlib.Path) -> list[str]:
    """The outputs of a previous run in ``out``, relative to it (empty: none)."""
    return [str(path.relative_to(out)) for path in _ours(out)]


def clear_run(out: pathlib.Path) -> None:
    """Removes a previous run's outputs from ``out`` (--overwrite); anything else stays."""
    for path in _ours(out):
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def _train(args, instance, config, out: pathlib.Path) -> int:
    train = TRAINERS[args.algo][1]
    hidden = args.hidden or TRAINERS[args.algo][2]
    test = compare.held_out_instance(instance, args.test_skus, args.test_horizon,
                                     args.test_warmup)
    print(f"deepstock train: {args.algo} on {args.instance or args.sales}, heads "
          f"{', '.join(args.head)}; "
          f"results in {out}/", file=sys.stderr)
    runs = {}
    for head in args.head:
        policy_config = PolicyConfig(head=head, hidden=hidden, activation=args.activation)
        callbacks = [TensorBoard(out / head / "tensorboard")] if args.tensorboard else []
        # a population: K seeds of the configuration, member k seeded with --seed + k
        configs = config if args.population is None else [
            dataclasses.replace(config, seed=config.seed + k) for k in range(args.population)]
        policies, results = train(instance, policy_config, configs, device=args.device,
                                  out_dir=out / head, resume=args.resume,
                                  progress=not args.no_progress, label=f"{args.algo}+{head}",
                                  callbacks=callbacks, threads=args.threads)
        if args.population is None:
            members = {head: (policies, results)}
        else:
            members = {f"{head} seed {c.seed}": pair for c, pair in
                       zip(configs, zip(policies, results))}
        for name, (policy, result) in members.items():
            if result.stopped == "diverged":
                print(f"deepstock train: error: {args.algo}+{name}: {result.message}",
                      file=sys.stderr)
            elif result.message:
                print(f"{args.algo}+{name}: {result.message}", file=sys.stderr)
        if all(r.stopped == "diverged" for _, r in members.values()):
            return 1
        if any(r.stopped == "interrupted" for _, r in members.values()):
            return 130
        for name, (policy, result) in members.items():
            if result.stopped != "diverged":
                runs[name] = (policy, result,
                              evaluate(policy, test, seed=args.seed, device=args.device))
    print("costing the references on the same test episode...", file=sys.stderr)
    failed = {}  # the comparisons that could not be made: the training's results stay
    bt = None
    try:  # a reference beyond its limits is a row saying why; this catches anything else
        if instance.catalog_size is not None:  # per-SKU baselines, by category
            bt = backtest({f"{args.algo} + {head}": policy for head, (policy, _, _) in
                           runs.items()}, instance, seed=args.seed, device=args.device)
            references = bt.reference_rows()
        else:
            references = compare.reference_rows(instance, test, seed=args.seed,
                                                 device=args.device)
    except Exception as e:  # noqa: BLE001
        references, failed["references"] = [], _one_line(e)
        print(f"deepstock train: the references could not be costed: {failed['references']}",
              file=sys.stderr)
    failed.update({r["policy"]: r["note"] for r in references if r["cost"] is None})
    rows = compare.comparison_rows(
        {f"{args.algo} + {head}": (result, ev) for head, (_, result, ev) in runs.items()},
        references, failed)
    print(table(rows, [("policy", "policy", "s"), ("cost", "cost / SKU-day", ".4f"),
                       ("cost_se", "+-", ".4f"),
                       ("gap_pct", f"gap % vs {rows[0].get('baseline') or '-'}", "+.2f"),
                       ("gap_se", "+-", ".2f"),
                       ("fill_rate", "fill rate", ".3f"), ("stockout_rate", "stockout", ".3f"),
                       ("turnover_days", "turnover d", ".2f"), ("seconds", "train s", ".0f"),
                       ("iterations", "iterations", "d")]))
    print(f"+-: standard errors over the {test.num_skus} test SKUs; gaps are paired (every "
          "policy runs on the same test demand)", file=sys.stderr)
    payload = {"command": sys.argv, "instance": instance.to_dict(), "test_instance": test.to_dict(),
               "algo": args.algo, "config": dataclasses.asdict(config),
               "seeds": {"seed": args.seed, **{p: seeding.stream(args.seed, p) for p in
                                               ("train", "validation", "test")}},
               "population": args.population,
               "runs": {head: {"policy_config": dataclasses.asdict(policy.config),
                               "result": dataclasses.asdict(result),
                               "test": {"average_cost_se": ev.average_cost_se,
                                        **{k: float(v) for k, v in
                                           ev.aggregate._asdict().items()}}}
                        for head, (policy, result, ev) in runs.items()},
               "comparison": rows, "references_failed": failed,
               "machine": machine(args.device)}
    if bt is not None:
        by_category = bt.by_category()
        print(table(by_category, CATEGORY_COLUMNS))
        payload["backtest"] = bt.to_json()
        for path in bt.write(out):
            print(f"wrote {path}", file=sys.stderr)
    if args.sales is not None and args.rolling_origins:
        folds = rolling_origin({f"{args.algo} + {head}": policy for head, (policy, _, _) in
                                runs.items()}, instance, args.rolling_origins, seed=args.seed,
                               device=args.device)
        print(table([{"fold": f"{f['origin']} .. {f['end']}", **r} for f in folds
                     for r in f["by_category"] if r["category"] == "all"],
                    [("fold", "test window [first, end)", "s"), ("policy", "policy", "s"),
                     ("average_cost", "cost / SKU-day", ".4f"), ("fill_rate", "fill rate", ".3f"),
                     ("stockout_rate", "stockout", ".3f"), ("turnover_days", "turnover d",
                                                            ".2f")]))
        payload["rolling_origin"] = folds
    (out / "results.json").write_text(json.dumps(payload, indent=1))
    try:
        learning_curve({head: result.history for head, (_, result, _) in runs.items()},
                       rows[0].get("baseline"), _baseline_cost(rows), out / "learning_curve.png",
                       title=f"{args.algo.upper()} on {args.instance or args.sales}",
                       unit=next(iter(runs.values()))[1].unit)
    except ImportError:
        print("(no learning-curve PNG: pip install matplotlib)", file=sys.stderr)
    print(f"wrote {out / 'results.json'}", file=sys.stderr)
    return 0


#: The columns of a by-category table (backtest.Backtest.by_category's rows).
CATEGORY_COLUMNS = [("policy", "policy", "s"), ("category", "category", "s"),
                    ("skus", "SKUs", "d"), ("average_cost", "cost / SKU-day", ".4f"),
                    ("fill_rate", "fill rate", ".3f"), ("stockout_rate", "stockout", ".3f"),
                    ("turnover_days", "turnover d", ".2f")]


def _baseline_cost(rows: list[dict]) -> float | None:
    """The cost of the rows' common baseline (the reference of their gaps), or None."""
    name = rows[0].get("baseline") if rows else None
    return next((r["cost"] for r in rows if r["policy"] == name), None)


# ---- eval, baselines, bench -------------------------------------------------------------------
def cmd_eval(args) -> int:
    path = pathlib.Path(args.policy)
    if not path.exists():
        raise UsageError(f"--policy {path} does not exist")
    payload = load_file(path, map_location=args.device, what="policy")
    policy = Policy.from_payload(payload, path)
    if args.instance:
        instance = InstanceConfig.load(args.instance)
    else:
        saved = payload.get("instance")
        if saved is None:
            raise UsageError("the policy file holds no instance: pass --instance")
        try:
            instance = InstanceConfig.from_dict(saved)
        except (TypeError, KeyError, AttributeError, ValueError) as e:
            raise UsageError(f"{path}: the saved instance is invalid ({e}); pass --instance") \
                from None
    test = compare.held_out_instance(instance, args.skus, args.horizon, args.warmup)
    ev = evaluate(policy, test, seed=args.seed, device=args.device)
    row = {"policy": str(path), "cost": ev.average_cost, "cost_se": ev.average_cost_se,
           **{k: float(v) for k, v in ev.aggregate._asdict().items() if k != "average_cost"}}
    print(table([row], [("policy", "policy", "s"), ("cost", "cost / SKU-day", ".4f"),
                        ("cost_se", "+-", ".4f"),
                        ("fill_rate", "fill rate", ".3f"), ("stockout_rate", "stockout", ".3f"),
                        ("turnover_days", "turnover d", ".2f")]))
    by_category = None
    if instance.periods:  # a sales history: the test period by category too
        by_category = backtest({str(path): policy}, instance, seed=args.seed,
                               device=args.device, kinds=()).by_category()
        print(table(by_category, CATEGORY_COLUMNS))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(
            {"instance": test.to_dict(), **row, "machine": machine(args.device),
             **({"by_category": by_category} if by_category else {})}, indent=1))
    if args.plot:
        try:
            reference = policy_plot(policy, instance, args.plot, seed=args.seed,
                                    device=args.device)
        except ImportError:
            raise UsageError("--plot needs matplotlib: pip install 'deepstock_fast[plot]'") \
                from None
        print(f"wrote {args.plot} (the policy next to the {reference})", file=sys.stderr)
    return 0


def cmd_baselines(args) -> int:
    instance = InstanceConfig.load(args.instance)
    test = compare.held_out_instance(instance, args.skus, args.horizon, args.warmup)
    rows = compare.reference_rows(instance, test, seed=args.seed, device=args.device,
                                  progress=True)
    print(table(rows, [("policy", "policy", "s"), ("cost", "cost / SKU-day", ".4f"),
                       ("cost_se", "+-", ".4f"), ("note", "", "s")]))
    return 0


# ---- tune --------------------------------------------------------------------------------------
def cmd_tune(args) -> int:
    """``deepstock tune ...`` runs or continues a study; ``deepstock tune report DIR...``
    reports studies."""
    from . import tuning

    if args.what:
        if args.what[0] != "report" or len(args.what) < 2:
            raise UsageError(f"expected 'report DIR...' or no positional argument, got "
                             f"{' '.join(args.what)!r}")
        dirs = args.what[1:]
        out = pathlib.Path(args.out or (dirs[0] if len(dirs) == 1 else "."))
        print(tuning.report(dirs, out))
        print(f"wrote {out / 'report.txt'}, {out / 'sensitivity.png'}", file=sys.stderr)
        return 0
    if args.algo is None or args.instance is None:
        raise UsageError("--algo and --instance are required (or: deepstock tune report "
                         "DIR...)")
    InstanceConfig.load(args.instance)  # a bad instance fails before anything is written
    try:
        space = tuning.load_space(args.space, args.algo) if args.space else None
        settings = parse_settings(args.set, tuning.search_names(args.algo))
        config = tuning.StudyConfig(
            algo=args.algo, heads=args.head, instance=args.instance, trials=args.trials,
            top=args.top, seeds=args.seeds, seed=args.seed, space=space, settings=settings,
            workers=args.workers, device=args.device, pruner=args.pruner,
            population=args.population)
    except ValueError as e:
        raise UsageError(str(e)) from None
    study_dir = pathlib.Path(args.study_dir or f"studies/{_slug(args.instance)}-{args.algo}")
    print(f"deepstock tune: {args.algo} on {args.instance}, heads {', '.join(args.head)}, "
          f"{args.trials} trials + top {args.top} x {args.seeds} seeds, {args.workers} "
          f"worker(s) of {tuning.worker_threads(args.workers)} thread(s); study in "
          f"{study_dir}/", file=sys.stderr)
    if args.backend == "ray":
        summary = tuning.run_study_ray(config, study_dir, address=args.address,
                                       gpus_per_trial=args.gpus_per_trial)
    else:
        if args.address:
            raise UsageError("--address needs --backend ray")
        summary = tuning.run_study(config, study_dir)
    if summary.get("interrupted"):
        print("deepstock tune: interrupted; run the same command again to continue the study",
              file=sys.stderr)
        return 130
    return 0


def cmd_synthetic(args) -> int:
    from .synthetic import write_synthetic
    sales, attributes = write_synthetic(args.out, args.skus, args.days,
                                        attributes=args.attributes, start=args.start,
                                        seed=args.seed, workers=args.workers)
    print(f"wrote {sales} and {attributes}", file=sys.stderr)
    return 0


BENCHES = ("throughput", "env_step", "zipkin", "baselines", "quality", "tuning", "catalog",
           "population", "paper")


def bench_dir() -> pathlib.Path:
    """Where the benchmark scripts are: ``DEEPSTOCK_BENCH_DIR``, else the source checkout's
    bench/ next to this package (present for an editable install only)."""
    return pathlib.Path(os.environ.get("DEEPSTOCK_BENCH_DIR")
                        or pathlib.Path(__file__).resolve().parents[1] / "bench")


def cmd_bench(args) -> int:
    """Runs ``bench/<name>.py`` with the remaining arguments; its JSON goes to ``--out``
    (passed on to the script as the ``DEEPSTOCK_BENCH_OUT`` environment variable)."""
    script = bench_dir() / f"{args.name}.py"
    if not script.is_file():
        raise UsageError(f"the benchmark scripts are not installed ({script} not found): they "
                         "ship with the source tree; run deepstock bench from a checkout "
                         "installed with pip install -e ., or set DEEPSTOCK_BENCH_DIR to its "
                         "bench/ directory")
    os.environ["DEEPSTOCK_BENCH_OUT"] = str(pathlib.Path(args.out).resolve())
    sys.argv = [str(script), *args.rest]
    runpy.run_path(str(script), run_name="__main__")
    return 0


# ---- the parser -------------------------------------------------------------------------------
class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default, except where there is none to show (a switch, a default of
    None) or the help already says it."""

    def _get_help_string(self, action):
        if "default" in (action.help or "") or action.default is None \
                or action.default is False or action.default == argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def _defaults(field: str) -> str:
    """``(default: DS x, PPO y)``: the field's default in each algo's config that has it."""
    values = [f"{algo.upper()} {f.default}" for algo in ALGOS
              for f in dataclasses.fields(TRAINERS[algo][0]) if f.name == field]
    return f"(default: {', '.join(values)})"


def version() -> str:
    """The package's version and what it runs on, in one line."""
    info = build_info()
    cuda = info.get("cuda_version") or torch.version.cuda
    kernels = "CUDA kernels" if info.get("cuda_kernels") else "no CUDA kernels"
    return (f"deepstock {importlib.metadata.version('deepstock_fast')} (torch "
            f"{info['torch_version']}, CUDA {cuda or 'none'}, {kernels})")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="deepstock", description=__doc__.split("\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--version", action="version", version=version(),
                   help="show the package version, torch and CUDA, then exit")
    sub = p.add_subparsers(dest="command", required=True)
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true",
                       help="show the Python traceback of an error")

    def common(q, instance_required=True):
        q.add_argument("--instance", required=instance_required is True,
                       help="a name (zipkin:L=2,p=9, paper:setting=2, with key=value overrides) "
                            "or a JSON/YAML instance config file" + (
                                "" if instance_required is True else
                                " (default: none; give --instance or --sales)"
                                if instance_required == "or sales" else
                                " (default: the instance saved with the policy)"))
        q.add_argument("--device", type=_device, default="cpu", help="cpu or cuda[:N]")
        q.add_argument("--seed", type=int, default=0,
                       help="the run's seed: training, validation and test streams derive "
                            "from it")

    def held_out_flags(q, prefix=""):
        q.add_argument(f"--{prefix}skus", type=_positive(int), default=None,
                       help="SKUs of the test episode (default: 1024 for identical SKUs, at "
                            "least 1000 draws for the paper's settings, else the instance's)")
        q.add_argument(f"--{prefix}horizon", type=_positive(int), default=None,
                       help="days of the test episode (default: 1000 for identical SKUs, "
                            "else the instance's horizon)")
        q.add_argument(f"--{prefix}warmup", type=int, default=None,
                       help="days of the test episode not counted (default: the instance's)")

    t = sub.add_parser("train", parents=[debug], formatter_class=HelpFormatter,
                       help="train regularized policies and compare them with the optimum and "
                            "classical baselines")
    common(t, instance_required="or sales")
    sales = t.add_argument_group("a sales history (instead of --instance; docs/DATA.md)")
    sales.add_argument("--sales", metavar="FILE", default=None,
                       help="long-format sales (CSV, .csv.gz or Parquet): one row per SKU and "
                            "day with sales, optional price, promotion, category, warehouse, "
                            "numeric features and per-SKU attributes (default: none)")
    sales.add_argument("--sku-column", default="sku", help="the SKU column")
    sales.add_argument("--date-column", default="date", help="the date column (YYYY-MM-DD)")
    sales.add_argument("--quantity-column", default="quantity", help="the units-sold column")
    sales.add_argument("--warehouse-column", default=None,
                       help="the warehouse column: series are SKU-warehouse pairs (default: "
                            "'warehouse' if the file has it)")
    sales.add_argument("--attributes", metavar="FILE", default=None,
                       help="per-SKU attributes (lead_time, holding_cost, penalty_cost, "
                            "order_cost, category) keyed by the SKU column (default: those "
                            "columns of the sales file, else the instance defaults)")
    sales.add_argument("--missing", choices=("zero", "error"), default="zero",
                       help="a day without a row: zero sales, or an error")
    sales.add_argument("--duplicates", choices=("sum", "error"), default="sum",
                       help="two rows of one SKU and day: summed, or an error")
    sales.add_argument("--valid-start", default=None, metavar="DATE",
                       help="first day of the validation period, a date or a fraction of the "
                            "days (default: 0.7)")
    sales.add_argument("--test-start", default=None, metavar="DATE",
                       help="first day of the test period, a date or a fraction of the days "
                            "(default: 0.85)")
    sales.add_argument("--rolling-origins", type=_positive(int), default=None, metavar="K",
                       help="also test on K consecutive windows of the test period, the "
                            "baselines searched again before each (default: none)")
    t.add_argument("--algo", choices=ALGOS, default="ds", help="the trainer")
    t.add_argument("--head", type=_heads, default=["base"],
                   help=f"comma-separated regularization heads among {', '.join(HEADS)} "
                        "(default: base)")
    t.add_argument("--epochs", type=_positive(int), default=None,
                   help=f"DS: training epochs {_defaults('epochs')}")
    t.add_argument("--steps", type=_positive(int), default=None,
                   help=f"PPO, DDPG: environment transitions, config field total_steps "
                        f"{_defaults('total_steps')}")
    t.add_argument("--batch-size", type=_positive(int), default=None,
                   help="samples per gradient step: DS SKU trajectories, PPO and DDPG "
                        f"transitions per minibatch {_defaults('batch_size')}")
    t.add_argument("--num-envs", type=_positive(int), default=None,
                   help=f"PPO, DDPG: SKUs stepped together {_defaults('num_envs')}")
    t.add_argument("--lr", type=_positive(float), default=None,
                   help=f"(initial) learning rate {_defaults('lr')}")
    t.add_argument("--hidden", type=_widths, default=None,
                   help="actor widths, e.g. 64,64 (default: "
                        f"{'; '.join(f'{a.upper()} ' + ','.join(map(str, TRAINERS[a][2])) for a in ALGOS)})")
    t.add_argument("--activation", choices=("elu", "relu", "tanh"), default="elu",
                   help="the actor's activation")
    t.add_argument("--eval-every", type=_positive(int), default=None,
                   help="iterations (DS epochs, PPO updates, DDPG steps) between validations "
                        f"{_defaults('eval_every')}")
    t.add_argument("--patience", type=_positive(int), default=None,
                   help=f"validations without improvement before stopping "
                        f"{_defaults('patience')}")
    t.add_argument("--validation-skus", type=_positive(int), default=None,
                   help=f"SKUs of the fixed validation episode {_defaults('validation_skus')}")
    t.add_argument("--fixed-train-set", action="store_true",
                   help="DS: train on one fixed episode (small-data settings)")
    t.add_argument("--checkpoint-every", type=_positive(int), default=None,
                   help=f"iterations between checkpoints {_defaults('checkpoint_every')}")
    t.add_argument("--time-budget", type=_positive(float), default=None,
                   help="seconds of training per head (default: no limit)")
    t.add_argument("--population", type=_positive(int), default=None, metavar="K",
                   help="train K seeds of the configuration at once as one population: "
                        "member k has seed --seed + k; files per member in "
                        "--out/<head>/member-<k>/ (default: one run)")
    t.add_argument("--threads", type=_positive(int), default=None,
                   help="torch threads for training (default: from the work's size, one "
                        "for small batches)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other hyperparameter of the algo's config, e.g. --set tau=0.01 "
                        "or --set update_epochs=10 (PPO's passes per rollout); repeatable "
                        "(default: none)")
    held_out_flags(t, "test-")
    t.add_argument("--out", default=None,
                   help="output directory (default: runs/<instance>-<algo>)")
    t.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its checkpoints; it may change only "
                        "the budget: --epochs, --steps, --time-budget, --patience")
    t.add_argument("--overwrite", action="store_true",
                   help="replace a previous run's outputs in --out (without it, a directory "
                        "holding one is refused)")
    t.add_argument("--tensorboard", action="store_true",
                   help="also write TensorBoard events to --out/<head>/tensorboard (needs "
                        "the tensorboard package)")
    t.add_argument("--no-progress", action="store_true",
                   help="no progress display (a bar on a terminal, a line every 30 s in a log)")
    t.set_defaults(run=cmd_train, parser=t)

    e = sub.add_parser("eval", parents=[debug], formatter_class=HelpFormatter,
                       help="cost and business metrics of a saved policy")
    common(e, instance_required=False)
    e.add_argument("--policy", required=True, help="a policy.pt written by deepstock train")
    held_out_flags(e)
    e.add_argument("--json", default=None, help="also write the result to this JSON file (default: none)")
    e.add_argument("--plot", default=None, metavar="FILE",
                   help="also plot the policy (order against inventory position) next to the "
                        "optimal DP policy, or the best base-stock policy, to this PNG "
                        "(default: none)")
    e.set_defaults(run=cmd_eval, parser=e)

    b = sub.add_parser("baselines", parents=[debug], formatter_class=HelpFormatter,
                       help="the DP optimum (where it applies), best base-stock and capped "
                            "base-stock policies of an instance")
    common(b)
    held_out_flags(b)
    b.set_defaults(run=cmd_baselines, parser=b)

    u = sub.add_parser("tune", parents=[debug], formatter_class=HelpFormatter,
                       help="hyperparameter tuning studies with the paper's protocol "
                            "(docs/TUNING.md); 'deepstock tune report DIR...' reports them",
                       description="Runs (or continues: the same command again) a tuning "
                                   "study: TPE search, then the top configurations re-run "
                                   "with other seeds; one study per head. 'deepstock tune "
                                   "report DIR...' prints the studies' table and writes "
                                   "the sensitivity figure.")
    u.add_argument("what", nargs="*", metavar="report DIR",
                   help="'report' and study directories: report them instead of tuning")
    u.add_argument("--instance", default=None,
                   help="a name (zipkin:L=2,p=9, paper:setting=2, with key=value overrides) "
                        "or a JSON/YAML instance config file (required, no default)")
    u.add_argument("--algo", choices=ALGOS, default=None,
                   help="the trainer (required, no default)")
    u.add_argument("--head", type=_heads, default=["base"],
                   help=f"comma-separated heads among {', '.join(HEADS)}, one study each on "
                        "the same instance, budget and seeds (default: base)")
    u.add_argument("--trials", type=_positive(int), default=30,
                   help="search trials per head (a larger number continues a study)")
    u.add_argument("--top", type=_positive(int), default=5,
                   help="configurations re-run after the search")
    u.add_argument("--seeds", type=_positive(int), default=5,
                   help="seeds of each re-run configuration")
    u.add_argument("--seed", type=int, default=0,
                   help="the study's seed: the sampler, the search trials' training, and the "
                        "test episode derive from it; the re-runs use seed+1..seed+SEEDS")
    u.add_argument("--workers", type=_positive(int), default=1,
                   help="trials run at once, in as many processes, each with max(1, cores // "
                        "WORKERS) torch threads (never more threads than cores)")
    u.add_argument("--study-dir", default=None,
                   help="the study's directory (default: studies/<instance>-<algo>)")
    u.add_argument("--space", default=None, metavar="FILE",
                   help="YAML/JSON search space: name: {low, high[, log]} | {choices: [...]} "
                        "| null, replacing the paper's for those names ('extends: none' starts "
                        "from an empty space) (default: the paper's space)")
    u.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="fix a hyperparameter outside the search, e.g. --set epochs=200 or "
                        "--set time_budget=60 (a smaller budget per trial); repeatable")
    u.add_argument("--device", type=_device, default="cpu",
                   help="cpu or cuda[:N]; several trials may share one GPU")
    u.add_argument("--backend", choices=("local", "ray"), default="local",
                   help="local processes, or a Ray cluster (pip install 'deepstock_fast[ray]')")
    u.add_argument("--address", default=None,
                   help="Ray: the address of an existing cluster (default: a local Ray)")
    u.add_argument("--gpus-per-trial", type=_positive(float), default=None,
                   help="Ray on cuda: the GPU share of a trial (default: 1 / WORKERS)")
    u.add_argument("--pruner", choices=("none", "median", "halving"), default="none",
                   help="stop hopeless trials on their intermediate validation costs "
                        "(Optuna's median or successive-halving pruner)")
    u.add_argument("--population", type=_positive(int), default=None, metavar="K",
                   help="trials asked at once and trained together as one population "
                        "(default: 16 on a GPU, else 1)")
    u.add_argument("--out", default=None,
                   help="report: where report.txt and sensitivity.png go (default: the study "
                        "directory for one, else .)")
    u.set_defaults(run=cmd_tune, parser=u)
    y = sub.add_parser("synthetic", parents=[debug], formatter_class=HelpFormatter,
                       help="write synthetic long-format sales and per-SKU attributes "
                            "(intermittent, seasonal, promotions, price changes)")
    y.add_argument("--out", required=True, metavar="FILE",
                   help="the sales file (.csv, .csv.gz or .parquet)")
    y.add_argument("--attributes", default=None, metavar="FILE",
                   help="the attribute table (default: <out stem>.attributes.<suffix>)")
    y.add_argument("--skus", type=_positive(int), default=1000, help="SKUs")
    y.add_argument("--days", type=_positive(int), default=365, help="days")
    y.add_argument("--start", default="2024-01-01", help="the first date")
    y.add_argument("--seed", type=int, default=0, help="the random seed")
    y.add_argument("--workers", type=_positive(int), default=1,
                   help="processes generating the data (the same file for any number)")
    y.set_defaults(run=cmd_synthetic, parser=y)

    r = sub.add_parser("bench", parents=[debug], formatter_class=HelpFormatter,
                       help="run one of the benchmarks of the source tree's bench/")
    r.add_argument("--out", default="bench-results",
                   help="directory for the benchmark's JSON results")
    r.add_argument("name", choices=BENCHES, help="the benchmark")
    r.add_argument("rest", nargs=argparse.REMAINDER,
                   help="arguments for the benchmark (see deepstock bench NAME --help)")
    r.set_defaults(run=cmd_bench, parser=r)
    return p


def _one_line(e: BaseException) -> str:
    """An exception as one line: its message's first line (a native op's message goes on with
    the C++ context), prefixed with its type unless it is a plain bad value."""
    lines = str(e).strip().splitlines()
    text = lines[0] if lines else "(no message)"
    return text if isinstance(e, (ValueError, OutputDirError)) else f"{type(e).__name__}: {text}"


def main(argv=None) -> int:
    """Runs one command; any error ends as one ``deepstock <command>: error: ...`` line on
    stderr and exit status 2 (bad arguments or files) or 1 (anything else), with the traceback
    only under ``--debug``."""
    p = parser()
    args, unknown = p.parse_known_args(argv)
    if unknown:  # reported by the command's parser: "deepstock <command>: error: ..."
        args.parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print(f"deepstock {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001  (the command line's boundary)
        if args.debug:
            traceback.print_exc()
        hint = "" if isinstance(e, USER_ERRORS) or args.debug else " (--debug shows where)"
        print(f"deepstock {args.command}: error: {_one_line(e)}{hint}", file=sys.stderr)
        return 2 if isinstance(e, USER_ERRORS) else 1


if __name__ == "__main__":
    sys.exit(main())
