"""The deepstock command line: a full train run, kill-and-resume equivalence, eval, baselines,
clear errors for bad arguments."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import pathlib
import pickle
import signal
import subprocess
import sys
import time

import pytest
import torch

from deepstock_fast import cli
from deepstock_fast.trainers import TRAINERS
from deepstock_fast.checkpoint import load_file
from deepstock_fast.envs import InstanceConfig
from deepstock_fast.trainers.common import output_dir

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

    def trained() -> int:  # epochs in the newest checkpoint (the first one is written at 0)
        return load_file(checkpoint)["done"] if checkpoint.exists() else 0

    while trained() == 0 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = load_file(checkpoint)["done"]
    assert 0 < killed_at < 150, killed_at

    deepstock(*args, "--out", str(out), "--resume")
    whole = load_file(tmp_path / "whole" / "base" / "policy.pt")
    resumed = load_file(out / "base" / "policy.pt")
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
    (["train"], "give one of --instance or --sales"),
    (["train", "--instance", "zipkin:L=1,p=4", "--sales", "x.csv"],
     "give one of --instance or --sales"),
    (["train", "--instance", "zipkin:L=1,p=4", "--test-start", "2024-01-01"],
     "--test-start apply to --sales, not --instance"),
    (["train", "--sales", "no-such.csv"], "sales file"),
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
    config = InstanceConfig.load(str(path))
    assert config.lead_time == 2 and config.penalty_cost == 19.0
    path.write_text(json.dumps({"lead_time": 2, "colour": "red"}))
    with pytest.raises(ValueError, match="unknown instance config fields"):
        InstanceConfig.load(str(path))


QUICK = [*TINY, "--epochs", "5", "--test-skus", "16", "--test-horizon", "40"]


def run_cli(argv, capsys) -> tuple[int, str]:
    """``deepstock argv`` in this process: (exit status, stderr)."""
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as e:  # argparse's errors
        code = e.code
    return code, capsys.readouterr().err


def one_error_line(code, err, command="train") -> str:
    """The error's message: exit status not 0, one ``deepstock <command>: error:`` line, no
    traceback."""
    assert code != 0 and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith(f"deepstock {command}: error: ")]
    assert len(lines) == 1, err
    return lines[0]


def bad_files(tmp_path) -> dict:
    """A saved policy and checkpoint, and damaged or malicious copies of them."""
    out = tmp_path / "run"
    assert cli.main(["train", *QUICK, "--out", str(out)]) == 0
    good = out / "base" / "policy.pt"
    data = good.read_bytes()
    files = {"empty": b"", "truncated": data[:len(data) // 2], "text": b"not a policy\n",
             "corrupted": data[:100] + b"\0" * 200 + data[300:],
             "malicious": pickle.dumps(Payload(tmp_path / "MARKER"), protocol=2)}
    for name, content in files.items():
        (tmp_path / f"{name}.pt").write_bytes(content)
    return {name: tmp_path / f"{name}.pt" for name in files} | {"out": out}


class Payload:
    """Unpickling it would create ``marker``: a stand-in for arbitrary code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_damaged_policy_and_checkpoint_files_give_one_line_errors(tmp_path, capsys):
    files = bad_files(tmp_path)
    capsys.readouterr()
    for name in ("empty", "truncated", "text", "corrupted", "malicious"):
        path = files[name]
        line = one_error_line(*run_cli(["eval", "--policy", path, "--skus", "8"], capsys),
                              "eval")
        assert str(path) in line, line
        checkpoint = files["out"] / "base" / "checkpoint.pt"
        checkpoint.write_bytes(path.read_bytes())
        line = one_error_line(*run_cli(["train", *QUICK, "--out", files["out"], "--resume"],
                                       capsys))
        assert str(checkpoint) in line, line
    assert "refused to load" in line and "nothing in it was run" in line
    assert not (tmp_path / "MARKER").exists()


def test_argument_and_config_errors_give_one_line_errors(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    configs = {"bad.json": "{lead_time: 2", "list.json": "[1, 2]",
               "type.json": '{"lead_time": "two"}', "binary.json": b"\xff\xfe\x00"}
    for name, text in configs.items():
        path = tmp_path / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
    cases = [
        (["--set", "lr=abc"], "DSConfig.lr must be a number, got 'abc'"),
        (["--set", "epochs=nan"], "DSConfig.epochs must be an int, got nan"),
        (["--set", "epochs=true"], "DSConfig.epochs must be an int, got True"),
        (["--lr", "inf"], "DSConfig.lr must be finite"),
        (["--device", "meta"], "device must be cpu or cuda[:N], got 'meta'"),
        (["--device", "mps"], "device must be cpu or cuda[:N], got 'mps'"),
        (["--out", tmp_path / "file"], "is not a directory"),
        (["--out", "/dev/null"], "is not a directory"),
        (["--out", "/proc/self"], "cannot write into the output directory /proc/self"),
        (["--out", "/proc/deepstock/x"], "cannot create the output directory /proc/deepstock/x"),
        (["--instance", tmp_path / "bad.json"], "bad.json is not valid JSON"),
        (["--instance", tmp_path / "list.json"], "must hold a mapping of instance config "
                                                 "fields, not a list"),
        (["--instance", tmp_path / "type.json"], "type.json"),
        (["--instance", tmp_path / "binary.json"], "cannot read the instance file"),
    ]
    for extra, message in cases:
        line = one_error_line(*run_cli(["train", *QUICK, "--out", tmp_path / "out", *extra],
                                       capsys))
        assert message in line, (extra, line)
    assert not (tmp_path / "out").exists()  # nothing was started


def test_debug_shows_the_traceback(capsys):
    code, err = run_cli(["train", *QUICK, "--set", "lr=abc", "--debug"], capsys)
    assert code == 2 and "Traceback" in err and "DSConfig.lr must be a number" in err


def test_ds_divergence_gives_the_documented_message(tmp_path, capsys):
    code, err = run_cli(["train", *QUICK, "--lr", "1e30", "--out", tmp_path], capsys)
    line = one_error_line(code, err)
    assert code == 1 and "training diverged" in line and "last good checkpoint" in line


def test_a_second_run_into_the_same_directory_is_refused(tmp_path, capsys):
    with output_dir(tmp_path):  # as another process's run holds it
        line = one_error_line(*run_cli(["train", *QUICK, "--out", tmp_path], capsys))
    assert f"the output directory {tmp_path} is in use by another run (process {os.getpid()})" \
        in line
    assert run_cli(["train", *QUICK, "--out", tmp_path], capsys)[0] == 0  # released


def test_stale_temporaries_are_removed_and_results_survive_failed_references(
        tmp_path, capsys, monkeypatch):
    (tmp_path / "base").mkdir()
    stale = tmp_path / "base" / "checkpoint.ptk3j2_x.tmp"
    stale.write_bytes(b"half a checkpoint")
    keep = tmp_path / "base" / "notes.tmp"  # not ours
    keep.write_text("x")

    def fail(*args, **kwargs):
        raise RuntimeError("rollout: lead time 70 exceeds the limit of 64 days\nmore context")

    monkeypatch.setattr(cli.compare, "reference_rows", fail)
    assert run_cli(["train", *QUICK, "--out", tmp_path], capsys)[0] == 0
    assert not stale.exists() and keep.exists()
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["references_failed"] == {
        "references": "RuntimeError: rollout: lead time 70 exceeds the limit of 64 days",
        "gap_pct": "no baseline to compare with"}
    assert results["runs"]["base"]["test"]["average_cost"] > 0

    monkeypatch.setattr(cli.compare, "reference_rows", lambda *a, **k: [
        {"policy": "best base-stock", "cost": 0.0, "note": ""}])
    assert run_cli(["train", *QUICK, "--out", tmp_path, "--overwrite"], capsys)[0] == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["references_failed"] == {"gap_pct": "the best base-stock's cost is 0"}


def test_version_is_one_line_with_torch_and_cuda(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and out.count("\n") == 1
    assert out.startswith(f"deepstock {importlib.metadata.version('deepstock_fast')} (torch "
                          f"{torch.__version__}, CUDA ")


def test_every_flag_has_help_that_shows_its_default():
    parser = cli.parser()
    commands = parser._subparsers._group_actions[0].choices
    for name, command in commands.items():
        formatter = command._get_formatter()
        for action in command._actions:
            assert action.help, (name, action.dest)
            if action.option_strings and action.nargs != 0 and not action.required:
                assert "default" in formatter._get_help_string(action), (name, action.dest)
    help_text = commands["train"].format_help()
    assert "--epochs EPOCHS       DS: training epochs (default: DS 400)" in help_text
    assert "(default: 0)" in " ".join(commands["train"].format_help().split())
    fields = {f.name for f in dataclasses.fields(TRAINERS["ppo"].config)}
    assert "update_epochs" in fields and "epochs" not in fields  # one meaning per name


def test_a_run_directory_is_not_overwritten_silently(tmp_path, capsys):
    assert run_cli(["train", *QUICK, "--out", tmp_path], capsys)[0] == 0
    (tmp_path / "notes.txt").write_text("mine")
    before = (tmp_path / "base" / "policy.pt").read_bytes()
    line = one_error_line(*run_cli(["train", *QUICK, "--out", tmp_path], capsys))
    assert f"--out {tmp_path} already holds a run (results.json" in line
    assert "--resume" in line and "--overwrite" in line
    assert (tmp_path / "base" / "policy.pt").read_bytes() == before
    line = one_error_line(*run_cli(["train", *QUICK, "--out", tmp_path, "--resume",
                                    "--overwrite"], capsys))
    assert "--resume and --overwrite exclude each other" in line
    (tmp_path / "base" / "checkpoint.pt").write_bytes(b"spoilt")  # replaced, never read
    assert run_cli(["train", *QUICK, "--out", tmp_path, "--overwrite"], capsys)[0] == 0
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert load_file(tmp_path / "base" / "checkpoint.pt")["done"] == 5


def test_resume_may_extend_the_budget_and_names_other_changes(tmp_path, capsys):
    assert run_cli(["train", *QUICK, "--out", tmp_path], capsys)[0] == 0
    assert run_cli(["train", *QUICK, "--out", tmp_path, "--resume", "--epochs", "10"],
                   capsys)[0] == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["runs"]["base"]["result"]["iterations"] == 10
    rows = (tmp_path / "base" / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("iteration,train,validation_cost,best_validation_cost,lr")
    assert [r.split(",")[0] for r in rows[1:]] == ["0", "5", "10"]
    line = one_error_line(*run_cli(["train", *QUICK, "--out", tmp_path, "--resume", "--epochs",
                                    "10", "--lr", "0.01"], capsys))
    assert "config.lr: 0.003 there, 0.01 here" in line and "may change only epochs" in line


def test_train_plots_the_gap_and_eval_plots_the_policy(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    assert run_cli(["train", *QUICK, "--out", tmp_path], capsys)[0] == 0
    assert (tmp_path / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    code, err = run_cli(["eval", "--policy", tmp_path / "base" / "policy.pt", "--skus", "16",
                         "--plot", tmp_path / "policy.png"], capsys)
    assert code == 0 and "next to the optimal DP policy" in err
    assert (tmp_path / "policy.png").read_bytes()[:4] == b"\x89PNG"
    code, err = run_cli(["eval", "--policy", tmp_path / "base" / "policy.pt", "--skus", "16",
                         "--instance", "zipkin:L=1,p=4,horizon=40,warmup=10,max_order=9",
                         "--plot", tmp_path / "capped.png"], capsys)
    assert code == 0 and "next to the best base-stock policy" in err


def test_tensorboard_flag_writes_events(tmp_path, capsys):
    pytest.importorskip("torch.utils.tensorboard")
    assert run_cli(["train", *QUICK, "--out", tmp_path, "--tensorboard"], capsys)[0] == 0
    assert list((tmp_path / "base" / "tensorboard").glob("events.out.tfevents.*"))


def test_bench_writes_to_out_and_refuses_clearly_without_the_scripts(tmp_path, monkeypatch,
                                                                      capsys):
    monkeypatch.setenv("DEEPSTOCK_BENCH_DIR", str(tmp_path / "installed"))
    line = one_error_line(*run_cli(["bench", "zipkin"], capsys), "bench")
    assert "the benchmark scripts are not installed" in line and "pip install -e ." in line
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "zipkin.py").write_text(
        "import os, pathlib, sys\n"
        "pathlib.Path(os.environ['DEEPSTOCK_BENCH_OUT'], 'args').write_text(' '.join(sys.argv[1:]))\n")
    monkeypatch.setenv("DEEPSTOCK_BENCH_DIR", str(scripts))
    monkeypatch.delenv("DEEPSTOCK_BENCH_OUT", raising=False)
    (tmp_path / "out").mkdir()
    assert run_cli(["bench", "--out", tmp_path / "out", "zipkin", "--quick"], capsys)[0] == 0
    assert (tmp_path / "out" / "args").read_text() == "--quick"
    bench = pathlib.Path(__file__).resolve().parents[1] / "bench"
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import common; "
            "print(common.write_results('x', {'machine': {'device': 'cpu'}}))")
    r = subprocess.run([sys.executable, "-c", code, str(bench)], capture_output=True, text=True,
                       env={**os.environ, "DEEPSTOCK_BENCH_OUT": str(tmp_path / "new" / "dir")})
    assert r.returncode == 0 and r.stdout.startswith(str(tmp_path / "new" / "dir" / "x-cpu-"))
