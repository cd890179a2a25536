"""Fuzzing the command line: random and invalid values for every flag of train, eval and
baselines, random ``--set`` items, damaged, malicious and unwritable files. Property: exit
status 0 with the expected outputs, or a non-zero status with one ``deepstock <command>:
error: ...`` line on stderr and no traceback; a malicious file never runs code."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import itertools
import pickle
import shutil

import pytest
from helpers import fuzz_settings
from hypothesis import given
from hypothesis import strategies as st

from deepstock_fast import cli
from deepstock_fast.trainers import DDPGConfig, DSConfig, PPOConfig

INSTANCE = "zipkin:L=1,p=4,horizon=40,warmup=10"
#: Every training stays tiny whatever the fuzzer adds: small networks, few SKUs and steps.
TRAIN = ["--instance", INSTANCE, "--epochs", "2", "--batch-size", "8", "--hidden", "8",
         "--validation-skus", "8", "--test-skus", "8", "--test-horizon", "20", "--eval-every",
         "1", "--no-progress"]
RL = ["--steps", "64", "--num-envs", "8", "--set", "critic_hidden=8"]
ALGO_ARGS = {"ds": [], "ppo": [*RL, "--set", "n_steps=16"], "ddpg": RL}

#: Values for any flag: valid small ones and invalid ones of every kind.
VALUES = st.sampled_from(["1", "2", "3", "8", "20", "0", "-1", "-7", "2.5", "1e-9", "nan",
                          "inf", "-inf", "1e400", "true", "none", "abc", "", " ", "8,8", "0,3",
                          "x,", "cpu", "cuda", "meta", "mps", "base", "none,base", "elu",
                          "ds", "ppo", "ddpg"]) | st.text(max_size=6)
NUMERIC_FLAGS = ["--epochs", "--steps", "--batch-size", "--num-envs", "--lr", "--eval-every",
                 "--patience", "--validation-skus", "--checkpoint-every", "--time-budget",
                 "--test-skus", "--test-horizon", "--test-warmup", "--seed"]
OTHER_FLAGS = ["--head", "--hidden", "--activation", "--algo", "--device", "--instance"]
SET_KEYS = sorted({f.name for c in (DSConfig, PPOConfig, DDPGConfig)
                   for f in dataclasses.fields(c)} | {"colour", "", "lr ", "=lr"})
INSTANCES = [INSTANCE, "zipkin:L=9,p=4", "zipkin:L=1,p=4,horizon=5,warmup=10",
             "zipkin:L=1,p=4,lost_sales=maybe", "zipkin:L=1,p=-4", "paper:setting=9", "nowhere",
             "nowhere.json", "zipkin:L=1,p=4,num_skus=0"]
examples = itertools.count()


def invoke(argv) -> tuple[int, str, str]:
    """``deepstock argv`` in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main([str(a) for a in argv])
        except SystemExit as e:  # argparse's errors
            code = e.code
    return code, out.getvalue(), err.getvalue()


def check(argv, expect_ok=None) -> int:
    """The property; ``expect_ok(stdout)`` checks a successful run's outputs."""
    code, stdout, stderr = invoke(argv)
    assert "Traceback" not in stderr, (argv, stderr)
    if code == 0:
        if expect_ok is not None:
            expect_ok(stdout)
        return code
    command = argv[0]
    errors = [line for line in stderr.splitlines()
              if line.startswith(f"deepstock {command}: error: ")]
    assert len(errors) == 1 and len(errors[0]) > len(f"deepstock {command}: error: ") + 5, \
        (argv, code, stderr)
    return code


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A finished tiny run: its policy and checkpoint."""
    out = tmp_path_factory.mktemp("saved")
    assert invoke(["train", *TRAIN, "--out", out])[0] == 0
    return out


def damaged(data: bytes, kind: str, at: float, junk: bytes, marker) -> bytes:
    """``data`` spoilt in one of several ways (``at`` in [0, 1] says where)."""
    cut = int(len(data) * at)
    return {"empty": b"", "truncated": data[:cut], "text": junk,
            "corrupted": data[:cut] + junk + data[cut + len(junk):],
            "appended": data + junk, "malicious": pickle.dumps(Payload(marker), protocol=2)}[kind]


class Payload:
    """Unpickling it would create ``marker``: a stand-in for arbitrary code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@fuzz_settings(ci_examples=30)
@given(algo=st.sampled_from(["ds", "ppo", "ddpg"]),
       flags=st.lists(st.tuples(st.sampled_from(NUMERIC_FLAGS + OTHER_FLAGS), VALUES),
                      max_size=3),
       settings=st.lists(st.tuples(st.sampled_from(SET_KEYS), VALUES), max_size=2),
       instance=st.sampled_from(INSTANCES), out=st.sampled_from(["fresh", "file", "/dev/null",
                                                                   "/proc/self"]),
       resume=st.booleans())
def test_train_arguments(tmp_path, algo, flags, settings, instance, out, resume):
    flags = [(f, v) for f, v in flags if f not in ("--epochs", "--steps", "--test-skus")
             or v in ("0", "-1", "nan", "abc", "", "1", "2")]  # invalid, or small
    target = {"fresh": tmp_path / f"run{next(examples)}", "file": tmp_path / "a-file"}.get(
        out, out)
    (tmp_path / "a-file").write_text("x")
    train = TRAIN if algo == "ds" else [a for a in TRAIN if a not in ("--epochs", "2")]
    argv = ["train", *train, "--algo", algo, "--instance", instance, "--out", target,
            *ALGO_ARGS[algo],
            *(x for flag, value in flags for x in (flag, value)),
            *(x for key, value in settings for x in ("--set", f"{key}={value}")),
            *(["--resume"] if resume else [])]
    if any(value in ("cuda", "mps") for _, value in flags):
        argv.append("--device=cpu")  # the property holds on a GPU too; keep CI's runs equal
    check(argv, lambda stdout: (target / "results.json").exists() and "cost / SKU-day" in stdout)


@fuzz_settings(ci_examples=25)
@given(what=st.sampled_from(["policy", "checkpoint"]),
       kind=st.sampled_from(["empty", "truncated", "text", "corrupted", "appended",
                             "malicious"]),
       at=st.floats(0, 1), junk=st.binary(min_size=1, max_size=64))
def test_damaged_files(saved, tmp_path, what, kind, at, junk):
    marker = tmp_path / "MARKER"
    if what == "policy":
        path = tmp_path / "policy.pt"
        path.write_bytes(damaged((saved / "base" / "policy.pt").read_bytes(), kind, at, junk,
                                 marker))
        argv = ["eval", "--policy", path, "--skus", "8", "--horizon", "20"]
    else:
        out = tmp_path / f"run{next(examples)}"
        shutil.copytree(saved, out)
        path = out / "base" / "checkpoint.pt"
        path.write_bytes(damaged(path.read_bytes(), kind, at, junk, marker))
        argv = ["train", *TRAIN, "--out", out, "--resume"]
    code = check(argv)
    assert not marker.exists()
    if kind in ("empty", "text", "malicious"):
        assert code == 2


@fuzz_settings(ci_examples=20)
@given(flags=st.lists(st.tuples(st.sampled_from(
    ["--skus", "--horizon", "--warmup", "--seed", "--device", "--instance", "--json"]), VALUES),
    max_size=3), command=st.sampled_from(["eval", "baselines"]))
def test_eval_and_baselines_arguments(saved, tmp_path, flags, command):
    flags = [(f, v) for f, v in flags if f not in ("--skus", "--horizon")
             or v in ("0", "-1", "nan", "abc", "", "1", "2", "8", "20")]
    flags = [(f, str(tmp_path / v) if f == "--json" and v.strip() else v) for f, v in flags]
    base = (["eval", "--policy", saved / "base" / "policy.pt"] if command == "eval"
            else ["baselines", "--instance", INSTANCE])
    check([*base, "--skus", "8", "--horizon", "20",
           *(x for flag, value in flags for x in (flag, value))],
          lambda stdout: "cost / SKU-day" in stdout)
