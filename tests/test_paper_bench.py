"""bench/paper.py: the claims' verdicts follow the numbers, and the pipeline runs end to end
(tiny budgets) into a report with its tables, figures and JSON."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def paper():
    sys.path.insert(0, str(ROOT / "bench"))
    spec = importlib.util.spec_from_file_location("paper_bench", ROOT / "bench" / "paper.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def trained(algo, head, level, spread=0.01, n=400, values=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    per_sku = level + spread * torch.randn(n, generator=g, dtype=torch.float64)
    return dict(algo=algo, head=head, per_sku=per_sku, values=values or [level, level * 1.1],
                gap_pct=None, gap_se=None)


def result(name, setting, rows, group="main"):
    return dict(name=name, setting=setting, group=group, trained=rows)


def test_base_claim_agrees_only_when_none_costs_more(paper):
    better_base = [result(f"paper:setting={s},trajectories=10", s,
                          [trained(a, h, 1.0 if h == "base" else 1.2, seed=i)
                           for i, (a, h) in enumerate(
                               (a, h) for a in paper.ALGOS for h in ("none", "base"))])
                   for s in (1, 2)]
    claim = paper.claims(better_base)[0]
    assert claim["verdict"] == "agrees" and len(claim["evidence"]) == 3
    better_none = [result(r["name"], r["setting"], [
        dict(t, per_sku=2.2 - t["per_sku"]) for t in r["trained"]]) for r in better_base]
    assert paper.claims(better_none)[0]["verdict"] == "disagrees"
    # within noise: neither
    noise = [result(r["name"], r["setting"], [
        trained(t["algo"], t["head"], 1.0, spread=0.5, seed=i)
        for i, t in enumerate(r["trained"])]) for r in better_base]
    assert paper.claims(noise)[0]["verdict"] != "agrees"


def test_search_hardness_claim_compares_the_orders_of_the_methods(paper):
    gains = {"ds": 0.01, "ppo": 0.1, "ddpg": 0.5}  # None's test cost over Base's

    def build(hard):  # hard: how far None's median trial lies above its best
        return [result("paper:setting=1,trajectories=10", 1, [
            t for i, a in enumerate(paper.ALGOS)
            for t in (trained(a, "none", 1.0 + gains[a], values=[1.0, 1.0 + hard[a], 5.0],
                              seed=i),
                      trained(a, "base", 1.0, seed=10 + i))])]

    assert paper.claims(build({"ds": 0.02, "ppo": 0.2, "ddpg": 0.9}))[1]["verdict"] == "agrees"
    assert paper.claims(build({"ds": 0.9, "ppo": 0.2, "ddpg": 0.02}))[1]["verdict"] == \
        "disagrees"


def test_small_n_claim_needs_ds_to_overfit_and_then_win(paper):
    def sweep(ds_gaps, rival_gap):
        out = []
        for n, g in ds_gaps.items():
            rows = []
            for i, a in enumerate(paper.ALGOS):
                t = trained(a, "base", 1.0 + (g if a == "ds" else rival_gap) / 100, seed=i)
                t["gap_pct"], t["gap_se"] = (g if a == "ds" else rival_gap), 0.1
                rows.append(t)
            out.append(result(f"paper:setting=4,trajectories={n}", 4, rows,
                              group="main" if n == 10 else "n"))
        return out

    claim = paper.claims(sweep({5: 8.0, 10: 3.0, 100: 0.5}, 2.0))[3]
    assert claim["verdict"] == "agrees" and "n = 5" in claim["evidence"][0]
    assert paper.claims(sweep({5: 0.5, 10: 0.6, 100: 0.5}, 2.0))[3]["verdict"] == "partly"
    assert paper.claims(sweep({5: 0.5, 10: 0.6, 100: 3.0}, 2.0))[3]["verdict"] == "disagrees"


def test_the_smoke_run_writes_the_report_figures_and_json(tmp_path):
    pytest.importorskip("optuna")
    pytest.importorskip("matplotlib")
    env = dict(os.environ, OMP_NUM_THREADS="1", DEEPSTOCK_BENCH_OUT=str(tmp_path / "results"))
    cmd = [sys.executable, str(ROOT / "bench" / "paper.py"), "--smoke", "--algos", "ds",
           "--settings", "4", "--no-zipkin", "--workers", "1", "--docs", str(tmp_path / "docs"),
           "--study-root", str(tmp_path / "studies")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = (tmp_path / "docs" / "REPRODUCTION.md").read_text()
    for text in ("smoke mode", "## The paper's claims", "paper:setting=4,trajectories=10",
                 "paper:setting=4,trajectories=5", "DS + base", "Verdict:",
                 "figures/paper-search.png", "figures/paper-setting4-sweeps.png"):
        assert text in report, text
    assert (tmp_path / "docs" / "figures" / "paper-setting4-sweeps.png").stat().st_size > 1000
    payload = json.loads(next((tmp_path / "results").glob("paper-smoke-*.json")).read_text())
    assert payload["machine"] and payload["run"]["mode"] == "smoke"
    rows = [t for r in payload["results"] for t in r["trained"]]
    assert len(rows) == 5 and all(t["cost"] > 0 and t["gap_se"] >= 0 for t in rows)
    # the same command again continues the finished studies: nothing is trained twice
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0
    # the report re-renders from its numbers alone
    (tmp_path / "docs" / "REPRODUCTION.md").unlink()
    path = tmp_path / "docs" / "reproduction.json"
    subprocess.run([sys.executable, str(ROOT / "bench" / "paper.py"), "--report-only",
                    str(path), "--docs", str(tmp_path / "docs")], env=env, check=True,
                   capture_output=True, timeout=300)
    assert "## The paper's claims" in (tmp_path / "docs" / "REPRODUCTION.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["--workers", "0"], "--workers must be >= 1"),
    (["--report-only", "/nonexistent.json"], "--report-only /nonexistent.json"),
])
def test_bad_arguments_are_named(args, message):
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "paper.py"), *args],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and message in done.stderr
