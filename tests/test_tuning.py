"""Tuning studies (deepstock_fast.tuning, ``deepstock tune``): search spaces and their
validation, the protocol's re-run stage on a toy objective, failing trials, batched asks,
worker processes, reproducibility, resume after SIGKILL, the Ray backend and the CLI."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

optuna = pytest.importorskip("optuna")  # .ci/setup installs it: CI runs these tests

from deepstock_fast import cli, tuning  # noqa: E402
from deepstock_fast.envs import InstanceConfig  # noqa: E402
from deepstock_fast.tuning import Param, StudyConfig  # noqa: E402

INSTANCE = "zipkin:L=1,p=4"
#: A few-second DS trial.
TINY = {"epochs": 4, "eval_every": 2, "validation_skus": 32}


def rows(study_dir, head="base"):
    with open(study_dir / head / "trials.csv", newline="") as f:
        return list(csv.DictReader(f))


# ---- search spaces ------------------------------------------------------------------------------
def test_paper_spaces_are_valid_and_build_configs():
    instance = InstanceConfig.from_name("zipkin:L=2,p=9")
    for algo, space in tuning.SPACES.items():
        tuning.check_space(algo, space)
        for end in ("low", "high"):  # every corner of the space makes valid configs
            values = {k: (p.choices[-1] if p.choices else getattr(p, end))
                      for k, p in space.items()}
            policy_config, config = tuning.build_configs(algo, "base", instance, values)
            for k, v in values.items():
                if k == "hidden":
                    assert policy_config.hidden == tuning._widths(v)
                elif k != tuning.INITIAL_ACTION:
                    assert getattr(config, k) == v
    # DDPG's initial action at the middle of the paper's range starts where the head does
    pc, _ = tuning.build_configs("ddpg", "base", instance, {"initial_action": 0.45})
    assert pc.initial_output == pytest.approx(tuning.initial_output("base", instance))


@pytest.mark.parametrize("text, suffix, message", [
    ('{"foo": {"low": 1, "high": 2}}', ".json", "foo: unknown name"),
    ('{"lr": {"low": 0.1, "high": 0.01}}', ".json", "lr: low = 0.1 is greater than high"),
    ('{"lr": {"low": 0, "high": 0.01, "log": true}}', ".json", "lr: a log range needs low > 0"),
    ('{"hidden": {"choices": []}}', ".json", "hidden: choices must not be empty"),
    ('{"lr_factor": {"low": 0.5, "high": 1.5}}', ".json", "lr_factor: high"),
    ('{"batch_size": {"low": 1.5, "high": 4}}', ".json", "batch_size: low must be an int"),
    ('{"lr": {"low": 0.1}}', ".json", "lr: a range needs both low and high"),
    ('{"lr": {"lo": 0.1, "high": 1}}', ".json", "lr: unknown keys lo"),
    ("lr: [1, 2]", ".yaml", "lr: expected {low, high[, log]} or {choices}"),
    ("[1, 2]", ".yaml", "expected a mapping"),
    ("{lr: {low: 1", ".yaml", "not valid YAML"),
    ('{"extends": "none"}', ".json", "the search space is empty"),
])
def test_space_file_errors_name_the_key(tmp_path, text, suffix, message):
    path = tmp_path / f"space{suffix}"
    path.write_text(text)
    with pytest.raises(ValueError, match="--space .*" + message.replace("[", r"\[")
                       .replace("{", r"\{").replace("(", r"\(")):
        tuning.load_space(path, "ds")


def test_space_file_narrows_or_replaces(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("lr: {low: 1.0e-3, high: 1.0e-2, log: true}\nhidden: null\n"
                    "batch_size: {choices: [8, 16]}\n")
    space = tuning.load_space(path, "ds")
    assert space["lr"] == Param(1e-3, 1e-2, True)
    assert "hidden" not in space and space["batch_size"].choices == (8, 16)
    assert space["lr_factor"] == tuning.SPACES["ds"]["lr_factor"]
    path.write_text('{"extends": "none", "hidden": {"choices": [[16, 16], "32,32"]}}')
    assert tuning.load_space(path, "ds") == {"hidden": Param(choices=("16,16", "32,32"))}


def test_settings_fix_values_outside_the_search():
    config = StudyConfig("ds", ["base"], INSTANCE, settings={"lr": 1e-3, "epochs": 5})
    assert "lr" not in config.space and "batch_size" in config.space
    with pytest.raises(ValueError, match="--set tau: unknown name for --algo ds"):
        StudyConfig("ds", ["base"], INSTANCE, settings={"tau": 0.1})
    with pytest.raises(ValueError, match="--set lr_factor: .*lr_factor"):
        StudyConfig("ds", ["base"], INSTANCE, settings={"lr_factor": 2.0})
    with pytest.raises(ValueError, match="trials must be an int >= 1"):
        StudyConfig("ds", ["base"], INSTANCE, trials=0)


# ---- the protocol on a toy objective ------------------------------------------------------------
def toy(job):
    """A toy objective for the protocol: the search (seed 0) scores a configuration by lr,
    the re-runs (other seeds) by 1 - lr: the search's best is the re-runs' worst. Test cost
    100 + seed. lr >= 0.9 raises; ``threads``: the worker's torch threads."""
    out = []
    for m in job.members:
        lr, seed = m["values"]["lr"], m["seed"]
        if lr >= 0.9:
            raise RuntimeError("toy trial failed on purpose")
        value = lr if seed == 0 else (1 - lr) * 10 + 0.01 * seed
        out.append({"state": "complete", "value": value, "test_cost": 100.0 + seed,
                    "message": f"threads={torch.get_num_threads()} members="
                               f"{len(job.members)} pop={job.population_dir is not None}"})
    return out


def toy_config(**kw):
    kw = {"trials": 12, "top": 2, "seeds": 3, "settings": dict(TINY),
          "space": {"lr": Param(0.01, 1.0)}, **kw}
    return StudyConfig("ds", ["base"], INSTANCE, **kw)


def test_rerun_stage_keeps_the_best_mean_and_reports_its_median_seed(tmp_path):
    summary = tuning.run_study(toy_config(), tmp_path, train=toy, write_report=False)
    table = rows(tmp_path)
    search = [r for r in table if r["stage"] == "search"]
    reruns = [r for r in table if r["stage"] == "rerun"]
    assert [int(r["number"]) for r in search] == list(range(12))
    failed = [r for r in search if r["state"] == "fail"]
    assert all("toy trial failed on purpose" in r["message"] for r in failed)
    done = sorted((r for r in search if r["state"] == "complete"),
                  key=lambda r: float(r["value"]))
    assert len(failed) + len(done) == 12 and done
    first, second = (int(r["number"]) for r in done[:2])
    assert sorted({int(r["number"]) for r in reruns}) == sorted([first, second])
    assert sorted(int(r["seed"]) for r in reruns) == [1, 1, 2, 2, 3, 3]
    kept = summary["heads"]["base"]["kept"]
    assert kept["search_number"] == second  # the larger lr: the better re-run mean
    assert kept["median_seed"] == 2 and kept["test_cost"] == 102.0
    assert summary["heads"]["base"]["best_validation"] == float(done[0]["value"])
    # run again: nothing left to do, nothing repeated
    tuning.run_study(toy_config(), tmp_path, train=toy, write_report=False)
    assert rows(tmp_path) == table
    # with --top 1 the search's best is the only candidate left
    summary = tuning.run_study(toy_config(top=1), tmp_path, train=toy, write_report=False)
    assert summary["heads"]["base"]["kept"]["search_number"] == first


def test_failing_trials_do_not_stop_the_study(tmp_path):
    config = toy_config(trials=6, top=1, seeds=1, space={"lr": Param(choices=(0.95, 0.5))})
    tuning.run_study(config, tmp_path, train=toy, write_report=False)
    search = [r for r in rows(tmp_path) if r["stage"] == "search"]
    assert len(search) == 6
    assert {r["state"] for r in search} == {"fail", "complete"}


def test_population_asks_a_batch_and_trains_it_as_one_job(tmp_path):
    jobs = []

    def record(job):
        jobs.append(job)
        return toy(job)

    config = toy_config(trials=7, top=1, seeds=1, population=3)
    tuning.run_study(config, tmp_path, train=record, write_report=False)
    search_jobs = [j for j in jobs if j.test_seed is None]
    assert [len(j.members) for j in search_jobs] == [3, 3, 1]
    assert search_jobs[0].population_dir.endswith("populations/0000")
    assert [m["out_dir"].rsplit("/", 1)[1] for m in search_jobs[1].members] == \
        ["member-0", "member-1", "member-2"]
    search = [r for r in rows(tmp_path) if r["stage"] == "search"]
    assert [int(r["number"]) for r in search] == list(range(7))
    # the members of a batch got different parameters (constant liar)
    params = [json.loads(r["params"])["lr"] for r in search]
    assert len(set(params[:3])) == 3


def test_a_population_left_running_is_resumed_as_one_job(tmp_path):
    config = toy_config(trials=4, top=1, seeds=1, population=2)
    study = tuning.Study(config, "base", tmp_path, InstanceConfig.from_name(INSTANCE))
    study.ask(2)  # trials 0 and 1 asked, then the command was killed
    jobs = []

    def record(job):
        jobs.append(job)
        return toy(job)

    tuning.run_study(config, tmp_path, train=record, write_report=False)
    assert [m["number"] for m in jobs[0].members] == [0, 1] and jobs[0].resume
    assert jobs[0].population_dir.endswith("populations/0000")
    assert [m["number"] for m in jobs[1].members] == [2, 3] and not jobs[1].resume
    search = [r for r in rows(tmp_path) if r["stage"] == "search"]
    assert [r["number"] for r in search] == ["0", "1", "2", "3"]
    assert all(r["state"] in ("complete", "fail") for r in search)  # toy: lr >= 0.9 fails


def test_train_members_trains_each_member_in_its_folder(tmp_path):
    instance = InstanceConfig.from_name(INSTANCE)
    pcs, configs = zip(*[tuning.build_configs("ds", "base", instance,
                                              {**TINY, "lr": lr, "batch_size": 8})
                         for lr in (1e-3, 3e-3)])
    policies, results = tuning.train_members("ds", instance, list(pcs), list(configs),
                                             tmp_path)
    assert len(policies) == len(results) == 2
    assert all((tmp_path / f"member-{i}" / "metrics.csv").exists() for i in range(2))
    assert results[0].best_validation != results[1].best_validation
    # one population: one checkpoint for both members, and each member as its run alone
    assert (tmp_path / "checkpoint.pt").exists()
    alone, run = tuning.TRAINERS["ds"].train(instance, pcs[1], configs[1], progress=False)
    assert run.best_validation == pytest.approx(results[1].best_validation, rel=1e-4)


def test_a_gpu_study_trains_populations_by_default():
    assert toy_config().population == 1
    assert toy_config(device="cuda").population == tuning.GPU_POPULATION
    assert toy_config(device="cuda", population=2).population == 2


def test_workers_run_trials_in_processes_with_a_share_of_the_cores(tmp_path):
    config = toy_config(trials=4, top=1, seeds=1, workers=2)
    tuning.run_study(config, tmp_path, train=toy, write_report=False)
    table = rows(tmp_path)
    assert sorted(int(r["number"]) for r in table if r["stage"] == "search") == [0, 1, 2, 3]
    threads = tuning.worker_threads(2)  # never more threads than cores in all
    assert 1 <= threads <= max(1, len(os.sched_getaffinity(0)) // 2)
    done = [r for r in table if r["state"] == "complete"]
    assert done and all(f"threads={threads} " in r["message"] for r in done)


def test_pruning_callback_reports_validations_and_stops_hopeless_trials(tmp_path):
    journal = tmp_path / "journal.log"
    study = optuna.create_study(study_name="s", storage=tuning._storage(journal),
                                pruner=tuning.make_pruner("median"))
    for v in range(5):  # five finished trials whose curves sit at 1.0 + v / 10
        study.add_trial(optuna.trial.create_trial(
            value=1.0 + v / 10, intermediate_values={2: 1.0 + v / 10, 4: 1.0 + v / 10}))
    hopeless, promising = (study.ask().number for _ in range(2))
    stop = tuning._pruning_callback((str(journal), "s", "median"), hopeless)
    assert stop({"iteration": 0, "validation_cost": 9.0}) is False  # the untrained policy
    assert stop({"iteration": 2, "validation_cost": 9.0}) is True
    stop = tuning._pruning_callback((str(journal), "s", "median"), promising)
    assert stop({"iteration": 2, "validation_cost": 0.5}) is False
    assert study.trials[promising].intermediate_values == {2: 0.5}


def test_pruned_trials_are_recorded_as_pruned(tmp_path):
    def pruned_when_large(job):
        return [{**r, "state": "pruned"} if m["values"]["lr"] > 0.5 else r
                for m, r in zip(job.members, toy(job))]

    config = toy_config(trials=6, top=1, seeds=1, space={"lr": Param(choices=(0.6, 0.2))},
                        pruner="median")
    tuning.run_study(config, tmp_path, train=pruned_when_large, write_report=False)
    search = [r for r in rows(tmp_path) if r["stage"] == "search"]
    assert {r["state"] for r in search} == {"pruned", "complete"}
    assert all(r["value"] == "" for r in search if r["state"] == "pruned")


# ---- real trainers ------------------------------------------------------------------------------
def test_a_study_is_reproducible_with_its_seed(tmp_path):
    config = StudyConfig("ds", ["base"], INSTANCE, trials=3, top=1, seeds=1,
                         settings=TINY)
    results = []
    for name in ("a", "b"):
        tuning.run_study(config, tmp_path / name, write_report=False)
        results.append([{k: r[k] for k in ("number", "stage", "state", "params", "seed",
                                           "value", "test_cost")}
                        for r in rows(tmp_path / name)])
    assert results[0] == results[1]
    assert len(results[0]) == 4 and all(r["state"] == "complete" for r in results[0])
    assert len({r["params"] for r in results[0][:3]}) == 3
    # each trial's validation curve is in its folder
    assert (tmp_path / "a" / "base" / "trials" / "0000" / "metrics.csv").exists()


def test_a_killed_study_continues_without_losing_or_repeating_trials(tmp_path):
    study = tmp_path / "study"
    argv = ["tune", "--algo", "ds", "--instance", INSTANCE, "--trials", "2", "--top", "1",
            "--seeds", "1", "--study-dir", str(study), "--set", "epochs=30", "--set", "lr=1e-3",
            "--set", "eval_every=2", "--set", "checkpoint_every=2", "--set",
            "validation_skus=32", "--set", "batch_size=8"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "deepstock_fast.cli", *argv], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    running = None
    try:
        deadline = time.time() + 120
        while time.time() < deadline and running is None:
            time.sleep(0.2)
            try:
                table = rows(study)
            except (FileNotFoundError, KeyError):
                continue
            for r in table:  # a trial mid-way after a complete one, with a checkpoint
                if r["state"] == "running" and r["number"] != "0" and \
                        (study / "base" / "trials" / f"{int(r['number']):04d}" /
                         "checkpoint.pt").exists():
                    running = int(r["number"])
        assert running is not None, proc.stderr.read1().decode() if proc.poll() else "timeout"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert cli.main(argv) == 0
    table = rows(study)
    search = [r for r in table if r["stage"] == "search"]
    assert [int(r["number"]) for r in search] == [0, 1]
    assert all(r["state"] == "complete" for r in table)
    assert len([r for r in table if r["stage"] == "rerun"]) == 1
    trials = optuna.load_study(study_name="ds-base",
                               storage=tuning._storage(study / "journal.log")).trials
    assert [t.number for t in trials] == [0, 1]
    assert all(t.state.name == "COMPLETE" for t in trials)
    # the killed trial went on from its checkpoint: one metrics row per validation
    with open(study / "base" / "trials" / f"{running:04d}" / "metrics.csv") as f:
        iterations = [int(r["iteration"]) for r in csv.DictReader(f)]
    assert iterations == sorted(set(iterations))
    assert (study / "report.txt").exists() and (study / "sensitivity.png").exists()


def test_ray_backend_runs_a_small_study(tmp_path):
    ray = pytest.importorskip("ray")  # .ci/setup installs it: CI runs this test
    config = StudyConfig("ds", ["base"], INSTANCE, trials=4, top=1, seeds=1, workers=2,
                         settings=TINY)
    try:
        summary = tuning.run_study_ray(config, tmp_path, num_cpus=2, write_report=False)
    finally:
        ray.shutdown()
    table = rows(tmp_path)
    assert [int(r["number"]) for r in table if r["stage"] == "search"] == [0, 1, 2, 3]
    assert all(r["state"] == "complete" for r in table)
    assert summary["heads"]["base"]["kept"]["test_cost"] > 0


# ---- the command line ---------------------------------------------------------------------------
def test_cli_errors(tmp_path, capsys):
    base = ["tune", "--algo", "ds", "--instance", INSTANCE, "--study-dir", str(tmp_path / "s")]
    assert cli.main([*base, "--set", "foo=1"]) == 2
    assert "foo=1: expected key=value with key among" in capsys.readouterr().err
    (tmp_path / "space.json").write_text('{"lr": {"low": 1, "high": 0.1}}')
    assert cli.main([*base, "--space", str(tmp_path / "space.json")]) == 2
    assert "lr: low = 1 is greater than high = 0.1" in capsys.readouterr().err
    assert cli.main(["tune", "--instance", INSTANCE]) == 2
    assert "--algo and --instance are required" in capsys.readouterr().err
    assert cli.main(["tune", "report", str(tmp_path)]) == 2
    assert "not a study directory" in capsys.readouterr().err
    assert cli.main([*base, "--address", "x:1"]) == 2
    assert "--address needs --backend ray" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main([*base, "--trials", "0"])


def test_a_study_directory_refuses_another_study(tmp_path):
    tuning.run_study(toy_config(trials=2, top=1, seeds=1), tmp_path, train=toy,
                     write_report=False)
    with pytest.raises(ValueError, match="holds another study \\(space was"):
        tuning.run_study(toy_config(trials=2, top=1, seeds=1,
                                    space={"lr": Param(0.01, 0.5)}), tmp_path, train=toy)


def test_report_of_several_studies(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    for name in ("a", "b"):
        tuning.run_study(toy_config(trials=3, top=1, seeds=1), tmp_path / name, train=toy,
                         write_report=False)
    assert cli.main(["tune", "report", str(tmp_path / "a"), str(tmp_path / "b"),
                     "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert out.count("ds + base") == 2
    assert (tmp_path / "r" / "sensitivity.png").stat().st_size > 0
