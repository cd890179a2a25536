"""The deepstock command line: a full train run, kill-and-resume equivalence, eval, baselines,
clear errors for bad arguments."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from deepstock_fast import cli

TINY = ["--instance", "zipkin:L=1,p=4,horizon=40,warmup=10", "--batch-size", "16",
        "--validation-skus", "32", "--eval-every", "5", "--checkpoint-every", "5",
        "--test-skus", "64", "--test-horizon", "120", "--hidden", "8", "--no-progress"]


def deepstock(*args, check=True, **kw):
    result = subprocess.run([sys.executable, "-m", "deepstock_fast.cli", *args],
                            capture_output=True, text=True, **kw)
    if check and result.returncode != 0:
        raise AssertionError(result.stderr)
    return result


def test_train_writes_results_table_and_policies(tmp_path):
    out = tmp_path / "run"
    r = deepstock("train", *TINY, "--head", "none,base", "--epochs", "10", "--out", str(out))
    for name in ("ds + none", "ds + base", "DP optimum", "best base-stock",
                 "best capped base-stock", "gap % vs DP policy, test episode", "+-"):
        assert name in r.stdout
    results = json.loads((out / "results.json").read_text())
    assert set(results["runs"]) == {"none", "base"}
    assert results["machine"]["cpu_count"] >= 1 and results["seeds"]["seed"] == 0
    rows = {row["policy"]: row for row in results["comparison"]}
    assert rows["DP policy, test episode"]["gap_pct"] == 0.0
    assert all(rows[p]["cost_se"] > 0 and rows[p]["gap_se"] is not None
               for p in ("ds + none", "ds + base", "best base-stock"))
    assert (out / "base" / "policy.pt").exists() and (out / "none" / "checkpoint.pt").exists()
    pytest.importorskip("matplotlib")
    assert (out / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"

    e = deepstock("eval", "--policy", str(out / "base" / "policy.pt"), "--skus", "32",
                  "--json", str(tmp_path / "eval.json"))
    assert "fill rate" in e.stdout
    assert json.loads((tmp_path / "eval.json").read_text())["cost"] > 0


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path):
    args = ["train", *TINY, "--head", "base", "--epochs", "150"]
    deepstock(*args, "--out", str(tmp_path / "whole"))

    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "deepstock_fast.cli", *args, "--out",
                             str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = out / "base" / "checkpoint.pt"
    deadline = time.time() + 120
    while not checkpoint.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(checkpoint, weights_only=False)["done"]
    assert 0 < killed_at < 150, killed_at

    deepstock(*args, "--out", str(out), "--resume")
    whole = torch.load(tmp_path / "whole" / "base" / "policy.pt", weights_only=False)
    resumed = torch.load(out / "base" / "policy.pt", weights_only=False)
    for key, value in whole["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
    a = json.loads((tmp_path / "whole" / "results.json").read_text())
    b = json.loads((out / "results.json").read_text())
    assert a["comparison"][0]["cost"] == b["comparison"][0]["cost"]


def test_baselines_command():
    r = deepstock("baselines", "--instance", "zipkin:L=1,p=4", "--skus", "64", "--horizon", "300")
    assert "DP optimum" in r.stdout and "Zipkin (2008) published 4.04" in r.stdout


@pytest.mark.parametrize("args,message", [
    (["train", "--instance", "zipkin:L=9,p=4"], "zipkin needs L in 1..4"),
    (["train", "--instance", "nowhere.json"], "instance file nowhere.json does not exist"),
    (["train", "--instance", "zipkin:L=1,p=4", "--head", "base,target"], "heads must be among"),
    (["train", "--instance", "zipkin:L=1,p=4", "--epochs", "-3"], "must be > 0"),
    (["train", "--instance", "zipkin:L=1,p=4", "--hidden", "64,x"], "comma-separated widths"),
    (["train", "--instance", "zipkin:L=1,p=4", "--algo", "a2c"], "invalid choice: 'a2c'"),
    (["train", "--instance", "zipkin:L=1,p=4", "--device", "cuda:0"], "cuda"),
    (["train", "--instance", "zipkin:L=1,p=4", "--resume", "--out", "/nonexistent/x"],
     "no checkpoint"),
    (["train", "--instance", "zipkin:L=1,p=4", "--set", "tua=0.1"],
     "--set tua=0.1: expected key=value with key among"),
    (["train", "--instance", "zipkin:L=1,p=4", "--algo", "ppo", "--set", "critic_hidden=0,3"],
     "--set critic_hidden=0,3: widths must be positive"),
    (["eval", "--policy", "missing.pt"], "--policy missing.pt does not exist"),
    (["train"], "the following arguments are required: --instance"),
])
def test_bad_arguments_give_clear_errors(args, message, capsys):
    if any(a.startswith("cuda") for a in args) and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(SystemExit) as e:
        sys.exit(cli.main(args))
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_instance_files(tmp_path):
    path = tmp_path / "instance.json"
    path.write_text(json.dumps({"lead_time": 2, "penalty_cost": 19.0, "num_skus": 4}))
    config = cli.load_instance(str(path))
    assert config.lead_time == 2 and config.penalty_cost == 19.0
    path.write_text(json.dumps({"lead_time": 2, "colour": "red"}))
    with pytest.raises(ValueError, match="unknown instance config fields"):
        cli.load_instance(str(path))
