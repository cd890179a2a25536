"""The DeepStock paper's experiments, reproduced: every method (DS, PPO, DDPG) with every
regularization (None, Base, and Coeff and Both where the setting has demand features), tuned
with the paper's protocol (``deepstock tune``), on the paper's synthetic settings 1-4 with its
data sizes and on Zipkin's L = 2, p = 9 and L = 4, p = 39; setting 4 also over the number of
training trajectories n and the horizon. Each kept policy is costed on one common test set per
instance next to exact or oracle references (the DP optimum, the closed-form newsvendor, the
AR(1) oracle) and the classical baselines fitted on the training trajectories, every gap
paired with its standard error. Writes docs/REPRODUCTION.md with its figures
(docs/figures/paper-*.png) and JSON with the machine to bench/results/; each of the paper's
claims is checked against the numbers.

    python bench/paper.py --quick            # about an hour on 2 CPU cores (reduced protocol)
    python bench/paper.py --full --device cuda   # the paper's protocol (a GPU, or a long run)
    python bench/paper.py --report-only docs/reproduction.json   # re-render the report

Studies go to ``--study-root`` (default bench-studies/paper-<mode>); the same command again
continues an interrupted run without repeating finished trials.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import pathlib
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # also under `python -P`
from common import machine, write_results  # noqa: E402

import torch  # noqa: E402

from deepstock_fast import compare, oracles, tuning  # noqa: E402
from deepstock_fast.envs import InstanceConfig  # noqa: E402
from deepstock_fast.evaluation import evaluate, paired_gap  # noqa: E402
from deepstock_fast.policies import Policy  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
ALGOS = ("ds", "ppo", "ddpg")
ALL_HEADS = ("none", "base", "coeff", "both")
#: Training trajectories of the paper's settings (validation and test draw fresh ones).
PAPER_TRAJECTORIES = {1: 10, 2: 20, 3: 10, 4: 10}
ZIPKIN = ("zipkin:L=2,p=9", "zipkin:L=4,p=39")
#: The test episode every policy and reference of an instance is costed on.
TEST_SEED = 0

#: The protocol of each mode: tuning budgets, the fixed settings per algo (``--set``) and
#: the setting-4 sweeps. "full" is the paper's (tuning.FIXED's budgets).
MODES = {
    "full": dict(trials=30, top=5, seeds=5, settings={}, sweep_n=(5, 10, 20, 50, 100, 200),
                 sweep_horizon=(60, 120), sweep_heads=("none", "base")),
    "quick": dict(trials=8, top=2, seeds=2, settings={
        "ds": {"epochs": 300, "time_budget": 12.0},
        "ppo": {"total_steps": 40_000, "time_budget": 12.0},
        "ddpg": {"total_steps": 25_600, "critic_warmup": 500, "gradient_steps": 8,
                 "time_budget": 20.0}},
        sweep_n=(5, 10, 20, 100), sweep_horizon=(90,), sweep_heads=("base",)),
    # the pipeline end to end in about a minute (tests): not a result
    "smoke": dict(trials=2, top=1, seeds=1, settings={
        "ds": {"epochs": 3},
        "ppo": {"total_steps": 1024, "n_steps": 1024, "batch_size": 128, "update_epochs": 1},
        "ddpg": {"total_steps": 256, "learning_starts": 128, "critic_warmup": 2,
                 "gradient_steps": 1}},
        sweep_n=(5, 10), sweep_horizon=(), sweep_heads=("base",)),
}


# ---- the experiments -----------------------------------------------------------------------
def paper_name(setting: int, trajectories: int | None = None, horizon: int | None = None) -> str:
    n = PAPER_TRAJECTORIES[setting] if trajectories is None else trajectories
    return f"paper:setting={setting},trajectories={n},forecasts=false" + (
        f",horizon={horizon}" if horizon else "")


def experiments(mode: dict, settings: list[int], zipkin: bool) -> list[dict]:
    """[{"name", "heads", "group"}]: the main table (group "main") and setting 4's sweeps
    ("n", "horizon"), each instance once."""
    out = [dict(name=paper_name(s), heads=ALL_HEADS, group="main", setting=s)
           for s in settings]
    out += [dict(name=z, heads=("none", "base"), group="main", setting=None)
            for z in (ZIPKIN if zipkin else ())]
    if 4 in settings:
        for n in mode["sweep_n"]:
            if n != PAPER_TRAJECTORIES[4]:
                out.append(dict(name=paper_name(4, n), heads=mode["sweep_heads"], group="n",
                                setting=4))
        for h in mode["sweep_horizon"]:
            out.append(dict(name=paper_name(4, horizon=h), heads=mode["sweep_heads"],
                            group="horizon", setting=4))
    return out


def slug(name: str) -> str:
    return name.replace(":", "-").replace(",", "-").replace("=", "")


# ---- references -------------------------------------------------------------------------
def references(exp: dict, instance: InstanceConfig, test: InstanceConfig,
               device) -> tuple[list[dict], str]:
    """The references of an experiment's instance on the episode of its test instance:
    rows {"policy", "cost", "cost_se", "per_sku", "note"} (per_sku [S], or None for an
    expected cost) and the name of the row that gaps are measured against (the optimal or
    oracle policy on the same test demand)."""
    rows = compare.reference_rows(instance, test, seed=TEST_SEED, device=device)
    for r in rows:  # next to the trained policies' per-SKU costs, on the CPU
        if r["per_sku"] is not None:
            r["per_sku"] = r["per_sku"].double().cpu()
    if exp["setting"] is None:
        return rows, "DP policy, test episode"
    oracle = oracles.reference_rows(test, TEST_SEED)
    return oracle + rows, oracle[-1]["policy"]


# ---- one experiment ----------------------------------------------------------------------
def run_experiment(exp: dict, mode: dict, args, progress) -> dict:
    """Tunes every (algo, head) of ``exp`` and costs the kept policies on the common test
    episode next to its references."""
    instance = InstanceConfig.from_name(exp["name"])
    test = compare.held_out_instance(instance)
    refs, ref_name = references(exp, instance, test, args.device)
    ref = next(r for r in refs if r["policy"] == ref_name)
    static = next((r for r in refs if r["policy"] == "best base-stock"), None)
    trained = []
    for algo in args.algos:
        settings = dict(mode["settings"].get(algo, {}))
        config = tuning.StudyConfig(algo=algo, heads=list(exp["heads"]), instance=exp["name"],
                                    trials=mode["trials"], top=mode["top"],
                                    seeds=mode["seeds"], seed=0, settings=settings,
                                    workers=args.workers, device=args.device,
                                    population=args.population)
        study_dir = args.study_root / f"{slug(exp['name'])}-{algo}"
        start = time.perf_counter()
        summary = tuning.run_study(config, study_dir, write_report=False)
        if summary.get("interrupted"):
            raise KeyboardInterrupt
        for head in exp["heads"]:
            h = summary["heads"].get(head, {})
            kept = h.get("kept") or {}
            row = dict(instance=exp["name"], group=exp["group"], algo=algo, head=head,
                       trials=h.get("trials"), values=h.get("values", []),
                       best_validation=h.get("best_validation"),
                       params=kept.get("params"), wall_seconds=h.get("wall_seconds"),
                       cost=None, cost_se=None, per_sku=None)
            policy_path = pathlib.Path(kept.get("out_dir", "-")) / "policy.pt"
            if policy_path.exists():
                ev = evaluate(Policy.load(policy_path), test, seed=TEST_SEED,
                              device=args.device)
                per_sku = ev.per_sku.average_cost.double().cpu()
                row.update(cost=float(per_sku.mean()),
                           cost_se=float(per_sku.std() / per_sku.numel() ** 0.5),
                           per_sku=per_sku)
                row["gap_pct"], row["gap_se"] = paired_gap(per_sku, ref["per_sku"])
                if static is not None and static["per_sku"] is not None:
                    row["gap_static_pct"], row["gap_static_se"] = paired_gap(
                        per_sku, static["per_sku"])
            trained.append(row)
        progress(f"{exp['name']} {algo}: {time.perf_counter() - start:.0f} s")
    return dict(exp, heads=list(exp["heads"]), reference=ref_name, references=refs,
                trained=trained, test_trajectories=test.num_skus)


# ---- the claims ------------------------------------------------------------------------------
def _row(result: dict, algo: str, head: str) -> dict | None:
    return next((r for r in result["trained"] if r["algo"] == algo and r["head"] == head
                 and r["per_sku"] is not None), None)


def _pair(a: dict | None, b: dict | None):
    """(gap %, se) of a against b on the same test demand, or None."""
    if a is None or b is None:
        return None
    return paired_gap(a["per_sku"], b["per_sku"])


def _paired_gaps(results: list[dict], first: tuple, second: tuple) -> list[tuple]:
    """[(gap %, se, instance)] of policy ``first`` (algo, head) against ``second`` on every
    result that tested both, paired on its test demand."""
    gaps = [(_pair(_row(r, *first), _row(r, *second)), r["name"]) for r in results]
    return [(g[0], g[1], name) for g, name in gaps if g is not None]


def _sign_verdict(gaps: list[tuple], expected: int) -> tuple[str, int, int]:
    """(verdict, significant gaps (2 SE) of the expected sign (+1 or -1), of the other): agrees
    when most gaps have the expected sign and none the other, disagrees when most have the
    other."""
    above = sum(g > 2 * se for g, se, _ in gaps)
    below = sum(g < -2 * se for g, se, _ in gaps)
    right, wrong = (above, below) if expected > 0 else (below, above)
    verdict = ("agrees" if right > len(gaps) / 2 and wrong == 0 else
               "disagrees" if wrong > len(gaps) / 2 else "partly")
    return verdict, right, wrong


def _listing(gaps: list[tuple]) -> str:
    return ", ".join(f"{name} {g:+.2f} +- {se:.2f}%" for g, se, name in gaps)


def claims(results: list[dict]) -> list[dict]:
    """Each of the paper's claims: what it says, the numbers that test it and the verdict."""
    main = [r for r in results if r["group"] == "main"]
    out = []

    # 1. Base lowers the test loss for all three methods
    lines, verdicts = [], []
    for algo in ALGOS:
        gaps = _paired_gaps(main, (algo, "none"), (algo, "base"))
        if gaps:
            verdict, worse, better = _sign_verdict(gaps, +1)
            verdicts.append(verdict)
            lines.append(f"{algo.upper()}: None costs more than Base, significantly (2 SE), on "
                         f"{worse} of {len(gaps)} instances, less on {better}: "
                         + _listing(gaps))
    out.append(dict(claim="Base lowers the test loss for all three methods (DS, PPO, DDPG).",
                    evidence=lines, verdict=_overall(verdicts),
                    measure="test cost of None against Base, paired on the same test "
                            "trajectories, per instance"))

    # 2. The harder the search, the larger the gain from None to Base
    points = []
    for algo in ALGOS:
        hard, gain = [], []
        for r in main:
            none = next((t for t in r["trained"] if t["algo"] == algo and t["head"] == "none"),
                        None)
            g = _pair(_row(r, algo, "none"), _row(r, algo, "base"))
            values = [v for v in (none or {}).get("values", []) if v is not None]
            if g is None or not values:
                continue
            best = min(values)
            hard.append(100 * (sorted(values)[len(values) // 2] / best - 1))
            gain.append(g[0])
        if hard:
            points.append((algo, sum(hard) / len(hard), sum(gain) / len(gain)))
    if len(points) >= 2:
        by_hard = [a for a, _, _ in sorted(points, key=lambda p: p[1])]
        by_gain = [a for a, _, _ in sorted(points, key=lambda p: p[2])]
        verdict = "agrees" if by_hard == by_gain else \
            "partly" if by_hard[-1] == by_gain[-1] else "disagrees"
    else:
        verdict = "not measured"
    out.append(dict(
        claim="The harder the hyperparameter search, the larger the gain from None to Base.",
        evidence=[f"{a.upper()}: None's median search trial {h:.1f}% above its best; "
                  f"None - Base test gap {g:+.2f}% (mean over instances)"
                  for a, h, g in points],
        verdict=verdict,
        measure="search hardness = how far None's median trial lies above its best trial "
                "(validation cost); gain = None's test cost over Base's; the orders of the "
                "methods by the two are compared"))

    # 3. With Base, DDPG and PPO beat DS in small data (settings 1-3)
    small = [r for r in main if r["setting"] in (1, 2, 3)]
    lines, verdicts = [], []
    for algo in ("ppo", "ddpg"):
        gaps = _paired_gaps(small, (algo, "base"), ("ds", "base"))
        if gaps:
            verdict, better, worse = _sign_verdict(gaps, -1)
            verdicts.append(verdict)
            lines.append(f"{algo.upper()} + Base against DS + Base: lower on {better} of "
                         f"{len(gaps)} settings, higher on {worse}: " + _listing(gaps))
    out.append(dict(claim="With Base, DDPG and PPO beat DS in small data (settings 1-3).",
                    evidence=lines, verdict=_overall(verdicts),
                    measure="test cost of PPO/DDPG + Base against DS + Base, paired"))

    # 4. DS overfits at small n and wins only with many i.i.d. trajectories (setting 4)
    sweep = sorted((r for r in results if r["setting"] == 4 and r["group"] in ("main", "n")),
                   key=lambda r: InstanceConfig.from_name(r["name"]).dataset_size)
    lines, verdict = [], "not measured"
    ds_gaps = []
    for r in sweep:
        n = InstanceConfig.from_name(r["name"]).dataset_size
        cells = []
        for algo in ALGOS:
            t = _row(r, algo, "base")
            if t is not None:
                cells.append(f"{algo.upper()} {t['gap_pct']:+.2f} +- {t['gap_se']:.2f}%")
                if algo == "ds":
                    ds_gaps.append((n, t["gap_pct"], t["gap_se"]))
        lines.append(f"n = {n}: gap to the optimal newsvendor, " + ", ".join(cells))
    if len(ds_gaps) >= 2:
        (n0, g0, s0), (n1, g1, s1) = ds_gaps[0], ds_gaps[-1]
        overfits = g0 - g1 > 2 * math.hypot(s0, s1)
        def rivals(result: dict) -> list[tuple]:  # DS + Base against PPO and DDPG + Base
            return [g for g in (_pair(_row(result, "ds", "base"), _row(result, a, "base"))
                                for a in ("ppo", "ddpg")) if g is not None]

        def beats(gaps: list[tuple]) -> bool:
            return bool(gaps) and all(g < -2 * se for g, se in gaps)

        first, last = rivals(sweep[0]), rivals(sweep[-1])
        wins_late, wins_early = beats(last), beats(first)
        # "only with many": DS + Base beats both at the largest n and not at the smallest
        parts = [overfits, wins_late, bool(first) and not wins_early]
        verdict = "agrees" if all(parts) else "disagrees" if not any(parts) else "partly"

        def against(n: int, gaps: list[tuple]) -> str:
            if not gaps:
                return f"at n = {n} no PPO or DDPG run to compare with"
            return (f"at n = {n} DS + Base {'beats' if beats(gaps) else 'does not beat'} "
                    f"both (against PPO, DDPG + Base: " + ", ".join(
                        f"{g:+.2f} +- {se:.2f}%" for g, se in gaps) + ")")
        lines.append(f"DS + Base at n = {n0}: {g0:+.2f}% (the paper: about +8%); at n = {n1}: "
                     f"{g1:+.2f}% ({'' if overfits else 'not '}significantly lower); "
                     f"{against(n0, first)}; {against(n1, last)}")
    out.append(dict(claim="DS overfits with few trajectories (about 8% test gap at n = 5 even "
                          "with i.i.d. demand) and wins only with many i.i.d. trajectories.",
                    evidence=lines, verdict=verdict,
                    measure="setting 4, test gap of each method + Base to the optimal policy "
                            "against the number n of training trajectories"))
    return out


def _overall(verdicts: list[str]) -> str:
    if not verdicts:
        return "not measured"
    if all(v == "agrees" for v in verdicts):
        return "agrees"
    if all(v == "disagrees" for v in verdicts):
        return "disagrees"
    return "partly"


# ---- the report --------------------------------------------------------------------------------
def figures(results: list[dict], out_dir: pathlib.Path) -> list[str]:
    """Best-so-far validation against trials (one panel per main instance) and setting 4's test
    gap against n; small PNGs. Returns their paths relative to docs/."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    main = [r for r in results if r["group"] == "main"]
    cols = 3
    rows = -(-len(main) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    styles = {"none": ":", "base": "-", "coeff": "--", "both": "-."}
    colors = {"ds": "C0", "ppo": "C1", "ddpg": "C2"}
    for ax, r in zip(axes.flat, main):
        for t in r["trained"]:
            curve = tuning.best_so_far(t["values"])
            xs = [i + 1 for i, v in enumerate(curve) if v is not None]
            ax.plot(xs, [v for v in curve if v is not None], styles[t["head"]],
                    color=colors[t["algo"]], label=f"{t['algo']}+{t['head']}")
        ax.set_title(r["name"], fontsize=8)
        ax.set_xlabel("trials", fontsize=7)
        ax.set_ylabel("best validation cost", fontsize=7)
        ax.set_yscale("log")
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(main):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=6, ncol=6, loc="lower center")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    path = out_dir / "paper-search.png"
    fig.savefig(path, dpi=60)
    plt.close(fig)
    paths.append(path)

    panels = [(group, "training trajectories n" if group == "n" else "horizon (days)",
               [r for r in results if r["setting"] == 4 and r["group"] in ("main", group)])
              for group in ("n", "horizon")]
    panels = [p for p in panels if len(p[2]) >= 2]
    if panels:
        fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.2),
                                 squeeze=False)
        for ax, (group, label, rows) in zip(axes.flat, panels):
            for algo in ALGOS:
                pts = sorted((_sweep_value(r, group), t["gap_pct"], t["gap_se"])
                             for r in rows for t in r["trained"]
                             if t["algo"] == algo and t["head"] == "base"
                             and t.get("gap_pct") is not None)
                if pts:
                    ax.errorbar([p[0] for p in pts], [p[1] for p in pts],
                                yerr=[2 * p[2] for p in pts], marker="o", color=colors[algo],
                                label=f"{algo} + base", capsize=2)
            if group == "n":
                ax.set_xscale("log")
            ax.set_xlabel(label, fontsize=8)
            ax.set_ylabel("test gap to the optimum, %", fontsize=8)
            ax.set_title(f"setting 4: test gap against {label.split(' (')[0]} (2 SE bars)",
                         fontsize=8)
            ax.legend(fontsize=7)
            ax.tick_params(labelsize=7)
        fig.tight_layout()
        path = out_dir / "paper-setting4-sweeps.png"
        fig.savefig(path, dpi=70)
        plt.close(fig)
        paths.append(path)
    return [str(p.relative_to(out_dir.parent)) for p in paths]


def _sweep_value(result: dict, group: str) -> int:
    """The swept quantity of a setting-4 experiment: its training trajectories or horizon."""
    instance = InstanceConfig.from_name(result["name"])
    return instance.dataset_size if group == "n" else instance.horizon


def _fmt(x, f=".4f"):
    return "" if x is None else format(x, f)


def render(payload: dict, figure_paths: list[str]) -> str:
    """docs/REPRODUCTION.md from a run's JSON payload."""
    m, run = payload["machine"], payload["run"]
    lines = [
        "# Reproducing DeepStock",
        "",
        f"Generated by `{run['command']}` ({run['mode']} mode) on {run['date']}, commit "
        + ", then ".join(f"`{c}`" for c in run.get("commits", [run["commit"]]))
        + f", in {run['wall_seconds'] / 60:.0f} minutes of wall time"
        + (f" over {run['invocations']} invocations of the command (each continues the "
           "studies of the ones before; finished trials are not run again)"
           if run.get("invocations", 1) > 1 else "") + f" on {m.get('cpu')} "
        f"({m.get('cpu_count')} cores, device {m.get('device')}, {run['threads']} torch "
        f"thread per process, {run['workers']} worker(s)); torch "
        f"{m.get('build', {}).get('torch_version')}. Regenerate with the same "
        "command; `python bench/paper.py --report-only docs/reproduction.json` re-renders "
        "this page from its numbers.",
        "",
        "## Protocol",
        "",
        f"- Tuning (`deepstock tune`): Optuna TPE with 10 random start-up trials, "
        f"{run['protocol']['trials']} trials per (method, regularization); the top "
        f"{run['protocol']['top']} configurations re-run with {run['protocol']['seeds']} "
        "seeds, the best mean validation cost kept and its median seed tested. Search spaces: "
        "the paper's (docs/TUNING.md).",
        "- Budgets fixed per trial: " + ("the paper's (DS up to 3000 epochs, PPO and DDPG 200k "
                                         "environment steps, early stopping)"
                                         if not run["protocol"]["settings"] else "; ".join(
            f"{a.upper()} " + ", ".join(f"{k} = {v}" for k, v in s.items())
            for a, s in run["protocol"]["settings"].items())) + ".",
    ]
    if run["mode"] == "quick":
        lines += ["- **Reduced protocol** (`--quick`): fewer trials and seeds and budgets of "
                  "seconds per trial, so that everything runs in about an hour on a 2-core "
                  "CPU. With fewer than 10 trials the search is random search; PPO and DDPG "
                  "in particular are far from converged, so their numbers say little about "
                  "the methods at the paper's budgets. The time budgets are caps, reached by "
                  "DS on Zipkin's 200-day episodes (about 75 of its 300 epochs), whose runs "
                  "therefore depend on the machine's speed. `--full` runs the paper's "
                  "protocol."]
    elif run["mode"] == "smoke":
        lines += ["- **Smoke mode**: budgets of a few iterations that test the pipeline; "
                  "these numbers are not results."]
    lines += [
        "- Data: the paper's sizes of training trajectories (settings 1 and 3: 10, setting 2: "
        "20, setting 4: 10 unless swept), fixed and replayed every epoch "
        "(`paper:setting=K,trajectories=n`); validation on fresh trajectories of their own "
        "stream; every policy and reference of an instance tested on the same "
        f"{payload['results'][0]['test_trajectories'] if payload['results'] else ''} fresh "
        "trajectories (Zipkin: 1024 SKUs x 1000 days), never seen in training or tuning.",
        "- Observations: the state, the setting's one feature (the day; yesterday's demand; "
        "sigma) and the 28- and 7-day trailing means, which with a constant are also the Coeff "
        "heads' features; no forecast features (`forecasts=false`): the noisy forward means of "
        "the paper's synthetic code reveal future demand that none of the references uses, and "
        "with them a trained policy can beat the AR(1) oracle by a wide margin (docs/METHOD.md).",
        "- Gaps are paired (same test demand) with their standard errors over test "
        "trajectories; \"vs reference\" is against the optimal policy (setting 1: the "
        "finite-horizon DP; setting 4: the critical-fractile newsvendor; Zipkin: the exact "
        "lost-sales DP), or, for the AR(1) settings 2 and 3, an oracle that knows each "
        "trajectory's phi, base and sigma, which a policy seeing only yesterday's demand may "
        "not reach; \"vs static\" is against the best single base-stock level searched on the "
        "training trajectories.",
        "",
        "## The paper's claims",
        "",
    ]
    for c in payload["claims"]:
        lines += [f"### {c['claim']}", "", f"**Verdict: {c['verdict']}.** Measured as "
                  f"{c['measure']}.", ""]
        lines += [f"- {e}" for e in c["evidence"]] + [""]
    lines += ["## Results per instance", ""]
    for r in payload["results"]:
        lines += [f"### `{r['name']}` ({'main table' if r['group'] == 'main' else 'setting 4, ' + r['group'] + ' sweep'})",
                  "", "| policy | test cost | +- | vs reference % | +- | vs static % | +- | "
                  "best validation | trials |", "|---|---|---|---|---|---|---|---|---|"]
        for ref in r["references"]:
            if ref.get("cost") is None:
                continue
            lines.append(f"| {ref['policy']} | {ref['cost']:.4f} | "
                         f"{_fmt(ref.get('cost_se'))} | | | | | | |")
        for t in r["trained"]:
            lines.append(
                f"| {t['algo'].upper()} + {t['head']} | {_fmt(t['cost'])} | "
                f"{_fmt(t['cost_se'])} | {_fmt(t.get('gap_pct'), '+.2f')} | "
                f"{_fmt(t.get('gap_se'), '.2f')} | {_fmt(t.get('gap_static_pct'), '+.2f')} | "
                f"{_fmt(t.get('gap_static_se'), '.2f')} | {_fmt(t['best_validation'])} | "
                f"{t['trials'] or ''} |")
        notes = [f"{ref['policy']}: {ref['note']}" for ref in r["references"] if ref.get("note")]
        lines += ["", f"Reference for gaps: {r['reference']}. " + "; ".join(notes) + ".", ""]
    lines += ["## Figures", ""]
    for p in figure_paths:
        lines += [f"![{pathlib.Path(p).stem}]({p})", ""]
    return "\n".join(lines)


def _jsonable(results: list[dict]) -> list[dict]:
    def clean(x):
        if isinstance(x, torch.Tensor):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items() if k != "per_sku"}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x
    return clean(results)


def write_report(payload: dict, results: list[dict], docs: pathlib.Path) -> pathlib.Path:
    """docs/REPRODUCTION.md, its figures and its numbers (docs/reproduction.json, what
    ``--report-only`` renders from)."""
    figure_paths = figures(results, docs / "figures")
    path = docs / "REPRODUCTION.md"
    path.write_text(render(payload, figure_paths) + "\n")
    (docs / "reproduction.json").write_text(json.dumps(
        dict(payload, results=_jsonable(results)), indent=1) + "\n")
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_const", dest="mode", const="quick")
    mode.add_argument("--full", action="store_const", dest="mode", const="full")
    mode.add_argument("--smoke", action="store_const", dest="mode", const="smoke",
                      help="the pipeline end to end with tiny budgets (tests; not a result)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=None,
                        help="trials at once on CPU (default: 2, one thread each)")
    parser.add_argument("--population", type=int, default=None,
                        help="trials trained as one population (default: 16 on a GPU)")
    parser.add_argument("--algos", nargs="+", default=list(ALGOS), choices=ALGOS)
    parser.add_argument("--settings", nargs="+", type=int, default=[1, 2, 3, 4],
                        choices=[1, 2, 3, 4])
    parser.add_argument("--no-zipkin", action="store_true")
    parser.add_argument("--study-root", type=pathlib.Path, default=None)
    parser.add_argument("--docs", type=pathlib.Path, default=ROOT / "docs",
                        help="where REPRODUCTION.md and figures/ go")
    parser.add_argument("--report-only", type=pathlib.Path, default=None, metavar="JSON")
    args = parser.parse_args(argv)
    args.mode = args.mode or "quick"
    for name in ("workers", "population"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.report_only:
        try:
            payload = json.loads(args.report_only.read_text())
        except (OSError, ValueError) as e:
            parser.error(f"--report-only {args.report_only}: {e}")
        missing = [k for k in ("machine", "run", "claims", "results")
                   if not isinstance(payload, dict) or k not in payload]
        if missing:
            parser.error(f"--report-only {args.report_only}: not a report's JSON (no "
                         f"{', '.join(missing)})")
        print(f"wrote {write_report(payload, payload['results'], args.docs)}")
        return 0
    if args.workers is None:
        args.workers = 1 if args.device.startswith("cuda") else 2
    torch.set_num_threads(1)
    spec = MODES[args.mode]
    args.study_root = args.study_root or pathlib.Path("bench-studies") / f"paper-{args.mode}"
    exps = experiments(spec, args.settings, not args.no_zipkin)
    start = time.perf_counter()

    def progress(message: str) -> None:
        print(f"[{time.perf_counter() - start:6.0f} s] {message}", flush=True)

    results, path = [], None
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip() or "unknown"
    if subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                      capture_output=True, text=True).stdout.strip():
        commit += " with uncommitted changes"
    run = dict(mode=args.mode, command="python bench/paper.py " + " ".join(
        argv if argv is not None else sys.argv[1:]), commit=commit,
        date=datetime.date.today().isoformat(), workers=args.workers, threads=1,
        protocol=dict(trials=spec["trials"], top=spec["top"], seeds=spec["seeds"],
                      settings={a: spec["settings"][a] for a in args.algos
                                if a in spec["settings"]}))
    # the wall time of every invocation of this run, so that a resumed run reports its total
    ledger_path = args.study_root / "paper-run.json"
    args.study_root.mkdir(parents=True, exist_ok=True)
    ledger = json.loads(ledger_path.read_text()) if ledger_path.exists() else {
        "first_start": datetime.datetime.now().isoformat(timespec="seconds"),
        "invocations": 0, "seconds": 0.0}
    ledger["invocations"] += 1
    ledger["commits"] = list(dict.fromkeys(ledger.get("commits", []) + [commit]))
    before = ledger["seconds"]
    payload = {}
    try:
        for i, exp in enumerate(exps):
            progress(f"experiment {i + 1}/{len(exps)}: {exp['name']}")
            results.append(run_experiment(exp, spec, args, progress))
            ledger["seconds"] = before + time.perf_counter() - start
            ledger_path.write_text(json.dumps(ledger))
            run.update(wall_seconds=ledger["seconds"], invocations=ledger["invocations"],
                       first_start=ledger["first_start"], commits=ledger["commits"])
            payload = {"machine": machine(args.device), "run": run,
                       "claims": claims(results), "results": _jsonable(results)}
            path = write_results(f"paper-{args.mode}", payload, path)
    except KeyboardInterrupt:
        ledger["seconds"] = before + time.perf_counter() - start
        ledger_path.write_text(json.dumps(ledger))
        print("interrupted: run the same command again to continue (finished trials are kept)")
        return 130
    report = write_report(payload, results, args.docs)
    for c in payload["claims"]:
        print(f"[{c['verdict']}] {c['claim']}")
        for e in c["evidence"]:
            print(f"    {e}")
    print(f"wrote {path} and {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
