"""Hyperparameter tuning studies with the paper's protocol (``deepstock tune``).

A study tunes one algorithm with one regularization head on one instance:

1. search: ``trials`` configurations drawn by Optuna's TPE (10 random start-up trials, then
   TPE; ``constant_liar`` so that trials asked while others run stay spread out), each trained
   by the algorithm's trainer (``trainers.TRAINERS[algo].train``); the objective is the
   validation cost of the run's best checkpoint (``RunResult.best_validation``), never a test
   cost;
2. re-run: the ``top`` best configurations are trained again with ``seeds`` other seeds each;
   the configuration with the best mean validation cost is kept, and the test cost (on the
   held-out test episode) of its median seed (by validation cost) is reported, with its gap to
   the instance's reference (the DP optimum for Zipkin instances, else the best base-stock
   policy).

Several heads make one study each, on the same instance, budget and seeds. A study lives in its
directory (:func:`run_study`): the Optuna storage (``journal.log``, a file several processes
may share), ``study.json`` (what the study is: a later command must agree), and per head
``trials.csv`` (one row per trial, rewritten after every trial), ``trials/<number>/`` and
``rerun/<number>-seed<seed>/`` (each trial's checkpoint, ``metrics.csv`` with its validation
curve, ``policy.pt``). Killing a study and running the same command again continues it: every
finished trial is kept, a trial that was running goes on from its last checkpoint under its own
number. ``summary.json``, ``report.txt`` and ``sensitivity.png`` are written at the end
(:func:`report`).

Search spaces (:data:`SPACES`) are the paper's, by search name: a field of the algorithm's
config, a :class:`~deepstock_fast.policies.PolicyConfig` field (``hidden``, ``activation``), or
``initial_action`` (DDPG's initial action bias, see :func:`build_configs`). :data:`FIXED` holds
the settings of the paper's protocol that are not searched. ``--space FILE`` narrows or
replaces a space (:func:`load_space`); ``--set key=value`` fixes a value.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import csv
import dataclasses
import io
import json
import math
import multiprocessing
import os
import pathlib
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, get_type_hints

import torch

from . import compare
from .envs import InstanceConfig
from .policies import PolicyConfig, initial_output
from .trainers import TRAINERS
from .trainers.common import OutputDirError, output_dir


# ---- search spaces ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Param:
    """A searched hyperparameter: a range ``[low, high]`` (log-uniform with ``log``; ints when
    the field is an int) or a list of ``choices`` (widths as ``"64,64"`` strings)."""

    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple | None = None

    def to_dict(self) -> dict:
        if self.choices is not None:
            return {"choices": list(self.choices)}
        return {"low": self.low, "high": self.high, "log": self.log}


#: The paper's search space of each algorithm (search name -> :class:`Param`). Where the paper
#: names a hyperparameter by another name, the nearest field: DS "batch" is ``batch_size`` (SKU
#: trajectories per epoch), PPO "epochs" ``update_epochs``, DDPG "final lr" ``lr_final`` and
#: "initial action bias" ``initial_action`` (:func:`build_configs`).
SPACES: dict[str, dict[str, Param]] = {
    "ds": {
        "batch_size": Param(choices=(5, 10)),
        "lr": Param(4e-4, 0.1, log=True),
        "hidden": Param(choices=("32,32", "64,64", "128,128")),
        "lr_factor": Param(0.5, 0.95),
    },
    "ppo": {
        "lr": Param(5e-5, 9e-3, log=True),
        "clip": Param(0.1, 0.3),
        "batch_size": Param(choices=(128, 256, 512)),
        "n_steps": Param(choices=(1024, 2048, 4096)),
        "update_epochs": Param(choices=(1, 3, 5, 10)),
        "ent_coef": Param(1e-4, 0.5, log=True),
        "gamma": Param(0.98, 1.0),
        "gae_lambda": Param(0.5, 1.0),
    },
    "ddpg": {
        "lr": Param(3e-4, 9e-3, log=True),
        "tau": Param(1e-3, 1e-2, log=True),
        "batch_size": Param(choices=(128, 256, 512)),
        "buffer_size": Param(choices=(20_000, 50_000, 100_000)),
        "train_freq": Param(choices=(1, 14)),
        "learning_starts": Param(choices=(100, 500, 1000)),
        "lr_final": Param(6e-5, 3e-4, log=True),
        "initial_action": Param(0.2, 0.7),
        "gamma": Param(0.98, 1.0),
    },
}

#: The paper's settings that are not searched (``--set`` overrides them): DS up to 3000 epochs
#: with patience 30; RL runs of 200k environment steps whose learning rate decays linearly
#: (PPO: to 0; DDPG searches its final rate), early stopping after 10 evaluations without
#: improvement (the trainers' default), PPO with 256x256 networks, DDPG 64x64 without noise
#: (the trainers' defaults).
FIXED: dict[str, dict[str, Any]] = {
    "ds": {"epochs": 3000, "patience": 30},
    "ppo": {"total_steps": 200_000, "lr_final": 0.0, "patience": 10},
    "ddpg": {"total_steps": 200_000, "patience": 10},
}

#: Search names that are not fields of the algorithm's config.
POLICY_FIELDS = ("hidden", "activation")
INITIAL_ACTION = "initial_action"
#: ``initial_action`` at which the actor starts from its head's default initial output.
INITIAL_ACTION_MIDDLE = 0.45


def search_names(algo: str) -> list[str]:
    """Every name a space or ``--set`` may use for ``algo`` (not ``seed``: the study's seeds
    set it)."""
    return [f.name for f in dataclasses.fields(TRAINERS[algo].config) if f.name != "seed"] + \
        [*POLICY_FIELDS, INITIAL_ACTION]


def _kind(algo: str, name: str) -> type:
    """int, float, str or tuple: what the values of search name ``name`` are."""
    if name == INITIAL_ACTION:
        return float
    if name in POLICY_FIELDS:
        return tuple if name == "hidden" else str
    hint = get_type_hints(TRAINERS[algo].config)[name]
    for kind in (bool, int, float, tuple):
        if hint is kind or kind in getattr(hint, "__args__", ()) or \
                getattr(hint, "__origin__", None) is kind:
            return kind
    return str


def _widths(value) -> tuple[int, ...]:
    if isinstance(value, str):
        value = value.replace("x", ",").split(",")
    return tuple(int(w) for w in value)


def build_configs(algo: str, head: str, instance: InstanceConfig, values: dict):
    """(PolicyConfig, the algorithm's config) for ``values`` (search name -> value, on top of
    :data:`FIXED` and the configs' defaults). ``initial_action`` b (the paper's initial action
    bias, in [0.2, 0.7]) scales the head's default initial output by b / 0.45, so that the
    middle of the paper's range starts where the head's default does. Raises ``ValueError``
    naming the field for a bad value."""
    values = {**FIXED[algo], **values}
    policy = {"head": head, "hidden": TRAINERS[algo].hidden}
    for name in POLICY_FIELDS:
        if name in values:
            policy[name] = values.pop(name)
    if "hidden" in policy:
        policy["hidden"] = _widths(policy["hidden"])
    if INITIAL_ACTION in values:
        scale = float(values.pop(INITIAL_ACTION)) / INITIAL_ACTION_MIDDLE
        if not scale > 0:
            raise ValueError(f"{INITIAL_ACTION} must be > 0, got {scale * INITIAL_ACTION_MIDDLE}")
        policy["initial_output"] = [v * scale for v in initial_output(head, instance)]
    return PolicyConfig(**policy), TRAINERS[algo].config(**values)


def _check_value(algo: str, name: str, value, where: str) -> None:
    try:
        build_configs(algo, "base", InstanceConfig.from_name("zipkin:L=1,p=4"), {name: value})
    except (ValueError, TypeError) as e:
        raise ValueError(f"{where}: {e}") from None


def check_space(algo: str, space: dict[str, Param], where: str = "space") -> None:
    """Raises ``ValueError`` naming the key when a name is unknown for ``algo``, a range is
    empty, inverted or log with low <= 0, a list of choices is empty, or an end or a choice is
    not a valid value of its field."""
    known = search_names(algo)
    for name, p in space.items():
        at = f"{where}: {name}"
        if name not in known:
            raise ValueError(f"{at}: unknown name for --algo {algo}; expected one of "
                             f"{', '.join(known)}")
        kind = _kind(algo, name)
        if p.choices is not None:
            if not p.choices:
                raise ValueError(f"{at}: choices must not be empty")
            for c in p.choices:
                _check_value(algo, name, c, f"{at}: choice {c!r}")
            continue
        if kind not in (int, float):
            raise ValueError(f"{at}: a {kind.__name__} takes choices, not a range")
        for end in ("low", "high"):
            v = getattr(p, end)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{at}: {end} must be a finite number, got {v!r}")
            if kind is int and v != int(v):
                raise ValueError(f"{at}: {end} must be an int, got {v!r}")
        if p.low > p.high:
            raise ValueError(f"{at}: low = {p.low} is greater than high = {p.high}")
        if p.log and p.low <= 0:
            raise ValueError(f"{at}: a log range needs low > 0, got low = {p.low}")
        for end in ("low", "high"):
            _check_value(algo, name, kind(getattr(p, end)), f"{at}: {end}")


def _param(name: str, spec, where: str) -> Param | None:
    """A :class:`Param` from a space file's entry (None: a fixed value, returned apart)."""
    if not isinstance(spec, dict):
        raise ValueError(f"{where}: {name}: expected {{low, high[, log]}} or {{choices}}, "
                         f"got {spec!r}")
    extra = set(spec) - {"low", "high", "log", "choices"}
    if extra:
        raise ValueError(f"{where}: {name}: unknown keys {', '.join(sorted(extra))} (expected "
                         "low, high, log or choices)")
    if "choices" in spec:
        if set(spec) != {"choices"}:
            raise ValueError(f"{where}: {name}: choices exclude low, high and log")
        choices = spec["choices"]
        if not isinstance(choices, list):
            raise ValueError(f"{where}: {name}: choices must be a list, got {choices!r}")
        choices = [",".join(map(str, c)) if isinstance(c, list) else c for c in choices]
        return Param(choices=tuple(choices))
    if "low" not in spec or "high" not in spec:
        raise ValueError(f"{where}: {name}: a range needs both low and high")
    if not isinstance(spec.get("log", False), bool):
        raise ValueError(f"{where}: {name}: log must be true or false")
    low, high = (float(v) if isinstance(v, str) and _is_number(v) else v
                 for v in (spec["low"], spec["high"]))
    return Param(low, high, bool(spec.get("log", False)))


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def load_space(path, algo: str) -> dict[str, Param]:
    """The search space of ``algo`` from a JSON or YAML file: ``name: {low, high[, log]}`` or
    ``name: {choices: [...]}`` entries replace the paper's for that name, ``name: null`` drops
    it from the search; ``extends: none`` starts from an empty space instead of the paper's
    (:data:`SPACES`). Raises ``ValueError`` naming the file and the key."""
    path = pathlib.Path(path)
    where = f"--space {path}"
    try:
        text = path.read_text()
    except OSError as e:
        raise ValueError(f"{where}: cannot read it: {e.strerror or e}") from None
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml
            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except ImportError:
        raise ValueError(f"{where}: reading YAML needs PyYAML (pip install pyyaml)") from None
    except Exception as e:  # noqa: BLE001  (json or yaml syntax)
        raise ValueError(f"{where}: not valid {'YAML' if path.suffix != '.json' else 'JSON'}: "
                         f"{str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping of names to ranges, got "
                         f"{type(data).__name__}")
    data = dict(data)
    extends = data.pop("extends", "paper")
    if extends not in ("paper", "none"):
        raise ValueError(f"{where}: extends must be paper or none, got {extends!r}")
    space = dict(SPACES[algo]) if extends == "paper" else {}
    for name, spec in data.items():
        if spec is None:
            if name not in search_names(algo):
                raise ValueError(f"{where}: {name}: unknown name for --algo {algo}; expected "
                                 f"one of {', '.join(search_names(algo))}")
            space.pop(name, None)
        else:
            space[name] = _param(name, spec, where)
    check_space(algo, space, where)
    if not space:
        raise ValueError(f"{where}: the search space is empty")
    return space


def _distribution(algo: str, name: str, p: Param):
    import optuna.distributions as d
    if p.choices is not None:
        return d.CategoricalDistribution(list(p.choices))
    if _kind(algo, name) is int:
        return d.IntDistribution(int(p.low), int(p.high), log=p.log)
    return d.FloatDistribution(float(p.low), float(p.high), log=p.log)


def distributions(algo: str, space: dict[str, Param]) -> dict:
    """Optuna distributions of a space, by search name."""
    return {name: _distribution(algo, name, p) for name, p in space.items()}


# ---- one trial ---------------------------------------------------------------------------------
@dataclass
class Job:
    """One training run to do, in this process or a worker: ``members`` are the trials trained
    together (one, or a population of ``--population`` trials); each is a dict with
    ``number``, ``values`` (search name -> value, the settings included), ``seed`` and
    ``out_dir``. ``test_seed``: also cost the best policy on the held-out test episode of this
    seed (re-runs). ``prune``: (journal path, study name, pruner name) for pruning."""

    algo: str
    head: str
    instance: dict
    members: list[dict]
    device: str = "cpu"
    resume: bool = False
    test_seed: int | None = None
    prune: tuple | None = None
    population_dir: str | None = None


def train_members(algo: str, instance: InstanceConfig, policy_configs: list, configs: list,
                  out_dir, *, device="cpu", resume=False, progress=False, callbacks=None,
                  label=""):
    """Trains the members (``policy_configs[i]``, ``configs[i]``) together as one population
    (members of other shapes in further populations, one after another) into ``out_dir``
    (``member-<i>/`` and the population's checkpoint) and returns (their best policies, their
    RunResults). ``callbacks[i]``: the callbacks of member i."""
    callbacks = callbacks or [[] for _ in configs]

    def route(metrics: dict) -> bool:  # each member's validations to its own callbacks
        return any(bool(c(metrics)) for c in callbacks[metrics["member"]])

    out = pathlib.Path(out_dir)
    return TRAINERS[algo].train(instance, list(policy_configs), list(configs), device=device,
                                out_dir=out, resume=resume and (out / "checkpoint.pt").exists(),
                                progress=progress, label=label,
                                callbacks=[route] if any(callbacks) else ())


def _pruning_callback(prune: tuple | None, number: int):
    """A trainer callback that reports each validation to the study's trial ``number`` and asks
    to stop when the pruner says so (None without pruning)."""
    if prune is None:
        return None
    import optuna
    journal, study_name, pruner = prune
    study = optuna.load_study(study_name=study_name, storage=_storage(journal),
                              pruner=make_pruner(pruner))
    trial = optuna.trial.Trial(study, _trial_id(study, number))

    def prune_trial(entry: dict) -> bool:
        if entry["iteration"] == 0:  # the untrained policy: not a point of the curve
            return False
        trial.report(entry["validation_cost"], entry["iteration"])
        return bool(trial.should_prune())
    return prune_trial


def _trial_id(study, number: int) -> int:
    """The storage's id of ``study``'s trial ``number`` (a Trial object needs it)."""
    return study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)


def _one_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}"


def train_job(job: Job) -> list[dict]:
    """Runs a job's members with the trainer; one result dict per member: ``state``
    (complete, pruned, failed or interrupted), ``value`` (the best validation cost),
    ``iterations``, ``message``, ``test_cost`` and ``test_cost_se`` (with ``test_seed``).
    A member that diverges is failed with the message."""
    instance = InstanceConfig.from_dict(job.instance)
    configs = [build_configs(job.algo, job.head, instance, {**m["values"], "seed": m["seed"]})
               for m in job.members]
    callbacks = [[c] if (c := _pruning_callback(job.prune, m["number"])) else []
                 for m in job.members]
    if job.population_dir is None:
        (m,), ((pc, config),) = job.members, configs
        out = pathlib.Path(m["out_dir"])
        policy, result = TRAINERS[job.algo].train(
            instance, pc, config, device=job.device, out_dir=out,
            resume=job.resume and (out / "checkpoint.pt").exists(), progress=False,
            label=f"{job.algo}+{job.head} #{m['number']}", callbacks=callbacks[0])
        policies, results = [policy], [result]
    else:
        policies, results = train_members(
            job.algo, instance, [c[0] for c in configs], [c[1] for c in configs],
            job.population_dir, device=job.device, resume=job.resume, callbacks=callbacks,
            label=f"{job.algo}+{job.head}")
    out = []
    for policy, result in zip(policies, results):
        state = {"diverged": "failed", "callback": "pruned",
                 "interrupted": "interrupted"}.get(result.stopped, "complete")
        row = {"state": state, "value": result.best_validation, "iterations": result.iterations,
               "stopped": result.stopped, "message": result.message}
        if state == "complete" and not math.isfinite(result.best_validation):
            row.update(state="failed", message=f"best validation cost {result.best_validation}")
        if state == "complete" and job.test_seed is not None:
            from .evaluation import evaluate
            ev = evaluate(policy, compare.held_out_instance(instance), seed=job.test_seed,
                          device=job.device)
            row.update(test_cost=ev.average_cost, test_cost_se=ev.average_cost_se)
        out.append(row)
    return out


def run_job(job: Job, train: Callable[[Job], list[dict]] = train_job) -> list[dict]:
    """``train(job)`` with each member's wall and CPU seconds (the job's, shared by its
    members); a job that raises fails each member with the message (the study goes on)."""
    start, cpu = time.perf_counter(), time.process_time()
    try:
        rows = train(job)
    except Exception as e:  # noqa: BLE001  (a trial that raises fails; the study goes on)
        rows = [{"state": "failed", "message": _one_line(e)} for _ in job.members]
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return [{**r, "wall_seconds": wall, "cpu_seconds": cpu} for r in rows]


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def worker_threads(workers: int) -> int:
    """Threads per worker process: the cores this process may use divided among the workers,
    at least one (never more threads than cores in all), and no more than OMP_NUM_THREADS."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = max(1, (cores or 1) // workers)
    env = os.environ.get("OMP_NUM_THREADS", "")
    return min(threads, int(env)) if env.isdigit() and int(env) > 0 else threads


class InlineExecutor:
    """Runs each job at once in this process (one worker: no process start-up, and Ctrl-C
    reaches the trainer, which stops at a consistent point)."""

    def submit(self, fn, *args):
        future = cf.Future()
        try:
            future.set_result(fn(*args))
        except BaseException as e:  # noqa: BLE001  (KeyboardInterrupt included)
            future.set_exception(e)
        return future

    def shutdown(self, cancel_futures=False):
        pass


def make_executor(workers: int):
    """The executor of the local backend: inline for one worker, else ``workers`` spawned
    processes with :func:`worker_threads` torch threads each."""
    if workers == 1:
        return InlineExecutor()
    return cf.ProcessPoolExecutor(max_workers=workers,
                                  mp_context=multiprocessing.get_context("spawn"),
                                  initializer=_init_worker, initargs=(worker_threads(workers),))


# ---- the study ---------------------------------------------------------------------------------
def _storage(journal):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    return JournalStorage(JournalFileBackend(str(journal)))


PRUNERS = ("none", "median", "halving")


def make_pruner(name: str):
    import optuna
    if name not in PRUNERS:
        raise ValueError(f"pruner must be one of {', '.join(PRUNERS)}, got {name!r}")
    return {"none": optuna.pruners.NopPruner,
            "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=5,
                                                          n_warmup_steps=1),
            "halving": optuna.pruners.SuccessiveHalvingPruner}[name]()


def make_sampler(seed: int, asked: int):
    """TPE as the paper ran it (10 random start-up trials), seeded from the study's seed and
    the number of trials asked before, so that a resumed or repeated study asks the same."""
    import optuna
    import numpy as np
    state = np.random.SeedSequence([seed, asked]).generate_state(1)
    return optuna.samplers.TPESampler(n_startup_trials=10, seed=int(state[0]),
                                      constant_liar=True)


#: The columns of ``trials.csv``.
COLUMNS = ("number", "stage", "state", "params", "seed", "value", "best_validation",
           "test_cost", "test_cost_se", "iterations", "wall_seconds", "cpu_seconds", "message",
           "out_dir")


#: Trials asked at once and trained as one population on a GPU, unless told otherwise.
GPU_POPULATION = 16


@dataclass
class StudyConfig:
    """What a study is and how it runs. ``settings``: fixed values (``--set``), removed from
    the search. Changing ``algo``, ``instance``, ``space``, ``settings`` or ``seed`` makes
    another study: a directory holding one refuses it; ``trials``, ``top``, ``seeds`` (larger
    budgets continue the study), ``workers``, ``device``, ``pruner`` and ``population`` may
    change between commands."""

    algo: str
    heads: list[str]
    instance: str
    trials: int = 30
    top: int = 5
    seeds: int = 5
    seed: int = 0
    space: dict[str, Param] | None = None
    settings: dict = dataclasses.field(default_factory=dict)
    workers: int = 1
    device: str = "cpu"
    pruner: str = "none"
    population: int | None = None  # None: GPU_POPULATION trials at once on a GPU, else 1

    def __post_init__(self):
        if self.population is None:
            self.population = GPU_POPULATION if str(self.device).startswith("cuda") else 1
        if self.algo not in TRAINERS:
            raise ValueError(f"algo must be one of {', '.join(TRAINERS)}, got {self.algo!r}")
        from .policies import HEADS
        bad = [h for h in self.heads if h not in HEADS]
        if not self.heads or bad:
            raise ValueError(f"heads must be among {', '.join(HEADS)}, got {self.heads}")
        for name in ("trials", "top", "seeds", "workers", "population"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if self.pruner not in PRUNERS:
            raise ValueError(f"pruner must be one of {', '.join(PRUNERS)}, got "
                             f"{self.pruner!r}")
        space = dict(SPACES[self.algo] if self.space is None else self.space)
        check_space(self.algo, space)
        unknown = [k for k in self.settings if k not in search_names(self.algo)]
        if unknown:
            raise ValueError(f"--set {unknown[0]}: unknown name for --algo {self.algo}; "
                             f"expected one of {', '.join(search_names(self.algo))}")
        for name, value in self.settings.items():
            _check_value(self.algo, name, value, f"--set {name}")
        self.space = {k: p for k, p in space.items() if k not in self.settings}
        if not self.space:
            raise ValueError("every searched name is fixed by --set: nothing to search")

    def identity(self) -> dict:
        return {"algo": self.algo, "instance": self.instance, "seed": self.seed,
                "space": {k: p.to_dict() for k, p in sorted(self.space.items())},
                "settings": {k: list(v) if isinstance(v, tuple) else v
                             for k, v in sorted(self.settings.items())}}


def _rerun_seeds(config: StudyConfig) -> list[int]:
    """The re-run seeds: after the search's seed, so that a re-run is a fresh draw."""
    return [config.seed + 1 + i for i in range(config.seeds)]


class Study:
    """One head's study in its directory: the search and re-run Optuna studies in the shared
    journal, ``trials.csv``, and the trials' folders."""

    def __init__(self, config: StudyConfig, head: str, root: pathlib.Path, instance):
        import optuna
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.config, self.head, self.instance = config, head, instance
        self.dir = root / head
        self.journal = root / "journal.log"
        storage = _storage(self.journal)
        self.name = f"{config.algo}-{head}"
        self.search = optuna.create_study(study_name=self.name, storage=storage,
                                          direction="minimize", load_if_exists=True,
                                          pruner=make_pruner(config.pruner))
        self.rerun = optuna.create_study(study_name=f"{self.name}-rerun", storage=storage,
                                         direction="minimize", load_if_exists=True)
        self.distributions = distributions(config.algo, config.space)
        self.started = time.perf_counter()
        self.done_here = 0

    # -- bookkeeping
    def trial_dir(self, number: int) -> pathlib.Path:
        return self.dir / "trials" / f"{number:04d}"

    def searched(self) -> list:
        """Search trials that ended (complete, pruned or failed), by number."""
        from optuna.trial import TrialState
        return [t for t in self.search.get_trials(deepcopy=False)
                if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)]

    def best(self):
        from optuna.trial import TrialState
        done = [t for t in self.search.get_trials(deepcopy=False)
                if t.state == TrialState.COMPLETE]
        return min(done, key=lambda t: (t.value, t.number)) if done else None

    def write_csv(self) -> None:
        """Rewrites ``trials.csv`` (atomically) from the storage."""
        rows = []
        for stage, study in (("search", self.search), ("rerun", self.rerun)):
            for t in study.get_trials(deepcopy=False):
                a = t.user_attrs
                rows.append({
                    "number": a.get("search_number", t.number) if stage == "rerun"
                    else t.number, "stage": stage, "state": t.state.name.lower(),
                    "params": json.dumps(t.params, sort_keys=True), "seed": a.get("seed"),
                    "value": t.value, "best_validation": t.value,
                    **{k: a.get(k) for k in ("test_cost", "test_cost_se", "iterations",
                                             "wall_seconds", "cpu_seconds", "message",
                                             "out_dir")}})
        self.dir.mkdir(parents=True, exist_ok=True)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        tmp = self.dir / "trials.csv.tmp"
        tmp.write_text(buffer.getvalue())
        tmp.replace(self.dir / "trials.csv")

    def progress(self, what: str, row: dict) -> None:
        self.done_here += 1
        best = self.best()
        per = (time.perf_counter() - self.started) / self.done_here
        value = row.get("value")
        print(f"{self.name}: {what} {row['state']}"
              f"{f' valid {value:.4f}' if row['state'] == 'complete' else ''}"
              f"{'' if row['state'] == 'complete' else ' (' + str(row.get('message')) + ')'}; "
              f"{len(self.searched())}/{self.config.trials} searched, best "
              f"{'-' if best is None else f'{best.value:.4f} (trial {best.number})'}, "
              f"{per:.1f} s/trial", file=sys.stderr, flush=True)

    # -- the search stage
    def job(self, members: list[dict], resume: bool, population_dir=None,
            test_seed=None) -> Job:
        prune = (str(self.journal), self.name, self.config.pruner) \
            if self.config.pruner != "none" and test_seed is None else None
        return Job(self.config.algo, self.head, self.instance.to_dict(), members,
                   device=self.config.device, resume=resume, test_seed=test_seed,
                   prune=prune, population_dir=population_dir)

    def member(self, trial) -> dict:
        """The member dict of a search trial (frozen or running)."""
        return {"number": trial.number, "values": {**self.config.settings, **trial.params},
                "seed": self.config.seed, "out_dir": str(self.trial_dir(trial.number))}

    def stale_jobs(self) -> list[Job]:
        """Jobs that re-run the trials a killed command left running (from their checkpoints),
        populations together."""
        from optuna.trial import TrialState
        groups: dict[str | None, list] = {}
        for t in self.search.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            groups.setdefault(t.user_attrs.get("population_dir"), []).append(t)
        jobs = []
        for pop, trials in groups.items():
            if pop is None:
                jobs += [self.job([self.member(t)], resume=True) for t in trials]
            else:
                trials.sort(key=lambda t: t.user_attrs["member"])
                jobs.append(self.job([self.member(t) for t in trials], True, pop))
        return jobs

    def ask(self, k: int) -> Job:
        """A job of ``k`` new trials asked at once (the constant liar keeps them apart)."""
        trials = []
        for _ in range(k):
            self.search.sampler = make_sampler(self.config.seed,
                                               len(self.search.get_trials(deepcopy=False)))
            trials.append(self.search.ask(self.distributions))
        pop = None
        if k > 1:
            pop = str(self.dir / "populations" / f"{trials[0].number:04d}")
        members = []
        for i, t in enumerate(trials):
            member = self.member(t)
            if pop is not None:
                member["out_dir"] = str(pathlib.Path(pop) / f"member-{i}")
                t.set_user_attr("population_dir", pop)
                t.set_user_attr("member", i)
            t.set_user_attr("seed", self.config.seed)
            t.set_user_attr("out_dir", member["out_dir"])
            members.append(member)
        self.write_csv()  # shows the running trials
        return self.job(members, resume=False, population_dir=pop)

    def tell(self, job: Job, rows: list[dict]) -> bool:
        """Records a search job's results; False when a member was interrupted (it stays
        running, for the next command to go on with)."""
        import optuna
        from optuna.trial import TrialState
        for m, row in zip(job.members, rows):
            if row["state"] == "interrupted":
                return False
        for m, row in zip(job.members, rows):
            trial = optuna.trial.Trial(self.search, _trial_id(self.search, m["number"]))
            for k in ("iterations", "wall_seconds", "cpu_seconds", "message"):
                if row.get(k) is not None:
                    trial.set_user_attr(k, row[k])
            state = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED,
                     "failed": TrialState.FAIL}[row["state"]]
            self.search.tell(m["number"], row["value"] if state == TrialState.COMPLETE
                             else None, state=state, skip_if_finished=True)
            self.progress(f"trial {m['number']}", row)
        self.write_csv()
        return True

    # -- the re-run stage
    def candidates(self) -> list:
        """The ``top`` best complete search trials."""
        from optuna.trial import TrialState
        done = sorted((t for t in self.search.get_trials(deepcopy=False)
                       if t.state == TrialState.COMPLETE), key=lambda t: (t.value, t.number))
        return done[:self.config.top]

    def rerun_jobs(self) -> list[Job]:
        """One job per (candidate, seed) not recorded yet; each goes on from its checkpoint."""
        recorded = {(t.user_attrs["search_number"], t.user_attrs["seed"])
                    for t in self.rerun.get_trials(deepcopy=False)}
        jobs = []
        for t in self.candidates():
            for seed in _rerun_seeds(self.config):
                if (t.number, seed) in recorded:
                    continue
                out = self.dir / "rerun" / f"{t.number:04d}-seed{seed}"
                member = {**self.member(t), "seed": seed, "out_dir": str(out)}
                jobs.append(self.job([member], resume=True, test_seed=self.config.seed))
        return jobs

    def tell_rerun(self, job: Job, rows: list[dict]) -> bool:
        import optuna
        from optuna.trial import TrialState
        (m,), (row,) = job.members, rows
        if row["state"] == "interrupted":
            return False
        source = self.search.trials[m["number"]]
        state = TrialState.COMPLETE if row["state"] == "complete" else TrialState.FAIL
        attrs = {"search_number": m["number"], "seed": m["seed"], "out_dir": m["out_dir"],
                 **{k: row[k] for k in ("test_cost", "test_cost_se", "iterations",
                                        "wall_seconds", "cpu_seconds", "message")
                    if row.get(k) is not None}}
        self.rerun.add_trial(optuna.trial.create_trial(
            state=state, value=row["value"] if state == TrialState.COMPLETE else None,
            params=source.params, distributions=source.distributions, user_attrs=attrs))
        self.progress(f"re-run of trial {m['number']} seed {m['seed']}", row)
        self.write_csv()
        return True


def _drain(executor, pending: dict, on_done) -> bool:
    """Waits for one of ``pending`` (future -> job), hands it to ``on_done(job, rows)``;
    returns its answer (False: stop the study)."""
    done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
    ok = True
    for future in done:
        job = pending.pop(future)
        ok = on_done(job, future.result()) and ok
    return ok


def _run_stage(executor, slots: int, jobs, on_done, train) -> bool:
    """Runs ``jobs`` (an iterator, asked for a job only when a slot is free) with at most
    ``slots`` in flight; False when interrupted."""
    pending: dict = {}
    ok = True
    try:
        while ok:
            while len(pending) < slots:
                job = next(jobs, None)
                if job is None:
                    break
                pending[executor.submit(run_job, job, train)] = job
            if not pending:
                return True
            ok = _drain(executor, pending, on_done)
        while pending:  # let the running ones finish or stop
            _drain(executor, pending, on_done)
        return False
    except KeyboardInterrupt:
        return False


def run_study(config: StudyConfig, study_dir, *, train: Callable[[Job], list[dict]] = train_job,
              executor=None, write_report: bool = True) -> dict:
    """Runs (or continues) the study of every head of ``config`` in ``study_dir``, one head
    after the other: the search, then the re-run stage, then the report. ``train(job)``
    trains a job's members (:func:`train_job`; tests inject a toy objective). Returns the
    summary (:func:`summarize`); ``summary["interrupted"]`` when Ctrl-C stopped it (run the
    same command again to continue)."""
    root = pathlib.Path(study_dir)
    instance = InstanceConfig.load(config.instance)
    try:
        with output_dir(root):
            _check_identity(root, config)
            own = executor is None
            executor = executor or make_executor(config.workers)
            slots = config.workers
            try:
                interrupted = False
                for head in config.heads:
                    study = Study(config, head, root, instance)
                    study.write_csv()
                    if not _search(study, executor, slots, train) or \
                            not _run_stage(executor, slots, iter(study.rerun_jobs()),
                                           study.tell_rerun, train):
                        interrupted = True
                        break
            finally:
                if own:
                    executor.shutdown(cancel_futures=True)
            return _finish(root, config, instance, interrupted, write_report)
    except OutputDirError as e:
        raise ValueError(f"--study-dir: {e}") from None


def _finish(root, config: StudyConfig, instance, interrupted: bool, write_report: bool) -> dict:
    """The summary of a study that ran (written with the report unless interrupted)."""
    summary = summarize(root, instance=instance, costs=write_report and not interrupted,
                        device=config.device)
    summary["interrupted"] = interrupted
    if write_report and not interrupted:
        print(report([root], root, summaries=[summary]), file=sys.stderr)
        print(f"wrote {root / 'report.txt'}, {root / 'sensitivity.png'}", file=sys.stderr)
    return summary


# ---- the Ray backend ---------------------------------------------------------------------------
def _ray_run_job(threads: int, fn, *args):
    torch.set_num_threads(threads)
    return fn(*args)


class RayExecutor:
    """Runs jobs as Ray tasks of ``cpus`` CPUs (as many torch threads) and ``gpus`` GPUs (a
    fraction: several trials share one GPU)."""

    def __init__(self, cpus: int, gpus: float):
        import ray
        self.cpus = cpus
        self.task = ray.remote(num_cpus=cpus, num_gpus=gpus)(_ray_run_job)

    def submit(self, fn, *args):
        return self.task.remote(self.cpus, fn, *args).future()

    def shutdown(self, cancel_futures=False):
        pass


def _ray_trainable(params: dict, *, root: str, config: StudyConfig, head: str, instance: dict,
                   cpus: int, train):
    """A Ray Tune trial: one search trial of ``params``, reported as ``validation`` (NaN for a
    trial that failed: Optuna's searcher records it as failed) with its row."""
    from ray import tune
    torch.set_num_threads(cpus)
    trial_id = tune.get_context().get_trial_id()
    out = pathlib.Path(root) / head / "ray-trials" / trial_id
    job = Job(config.algo, head, instance, [{"number": -1, "values": {**config.settings,
                                                                     **params},
                                             "seed": config.seed, "out_dir": str(out)}],
              device=config.device, resume=True)
    (row,) = run_job(job, train)
    value = row.get("value") if row["state"] == "complete" else None
    tune.report({**{k: v for k, v in row.items() if k != "value"}, "out_dir": str(out),
                 "validation": float("nan") if value is None else value})


def _record_ray(study: Study, results) -> None:
    """Adds Ray Tune's finished trials (``(trial_id, params, last result or {}, error)``, in
    the order Ray created them) that the search has not recorded yet to the search study."""
    import optuna
    from optuna.trial import TrialState
    seen = {t.user_attrs.get("ray_trial_id") for t in study.search.get_trials(deepcopy=False)}
    for trial_id, params, result, error in results:
        if trial_id in seen:
            continue
        value = result.get("validation")
        ok = error is None and value is not None and math.isfinite(value)
        state = TrialState.COMPLETE if ok else TrialState.FAIL
        attrs = {"ray_trial_id": trial_id, "seed": study.config.seed,
                 **{k: result[k] for k in ("out_dir", "iterations", "wall_seconds",
                                           "cpu_seconds", "message") if result.get(k) is not None}}
        if error is not None:
            attrs["message"] = str(error).strip().splitlines()[-1][:300]
        study.search.add_trial(optuna.trial.create_trial(
            state=state, value=value if ok else None, params=params,
            distributions=study.distributions, user_attrs=attrs))
        study.progress(f"trial {len(seen)}", {"state": state.name.lower(), "value": value,
                                             "message": attrs.get("message")})
        seen.add(trial_id)
    study.write_csv()


def run_study_ray(config: StudyConfig, study_dir, *, address: str | None = None,
                  gpus_per_trial: float | None = None, num_cpus: int | None = None,
                  train: Callable[[Job], list[dict]] = train_job,
                  write_report: bool = True) -> dict:
    """:func:`run_study` on a Ray cluster (``address``; default: a local Ray of ``num_cpus``
    CPUs): the search by Ray Tune with Optuna's TPE searcher (``OptunaSearch``, seeded, 10
    start-up trials, constant liar), at most ``workers`` trials at once, each with the
    cluster's CPUs // workers CPUs (as many torch threads) and ``gpus_per_trial`` of a GPU
    (default 1 / workers on cuda); then the re-run stage as Ray tasks. Trials are recorded in
    the study's journal and ``trials.csv`` as Ray finishes them. A killed study continues from
    Ray's experiment state (``DIR/ray``) when run again."""
    try:
        import ray
        from ray import tune
        from ray.tune.search.optuna import OptunaSearch
    except ImportError:
        raise ValueError("--backend ray needs Ray Tune: pip install 'deepstock_fast[ray]'") \
            from None
    if config.pruner != "none" or config.population != 1:
        raise ValueError("--pruner and --population need --backend local")
    import optuna
    root = pathlib.Path(study_dir).resolve()
    instance = InstanceConfig.load(config.instance)
    try:
        with output_dir(root):
            _check_identity(root, config)
            if not ray.is_initialized():
                ray.init(address=address, num_cpus=num_cpus, include_dashboard=False,
                         log_to_driver=False, configure_logging=False)
            cpus = max(1, int(ray.cluster_resources().get("CPU", 1)) // config.workers)
            gpus = 0.0 if not config.device.startswith("cuda") else \
                (gpus_per_trial or 1.0 / config.workers)
            for head in config.heads:
                study = Study(config, head, root, instance)
                done = len(study.searched())
                if done < config.trials:
                    _ray_search(study, root, cpus, gpus, train, tune, OptunaSearch, optuna)
                if not _run_stage(RayExecutor(cpus, gpus), config.workers,
                                  iter(study.rerun_jobs()), study.tell_rerun, train):
                    return _finish(root, config, instance, True, write_report)
            return _finish(root, config, instance, False, write_report)
    except OutputDirError as e:
        raise ValueError(f"--study-dir: {e}") from None


def _ray_search(study: Study, root: pathlib.Path, cpus: int, gpus: float, train, tune,
                OptunaSearch, optuna) -> None:
    import functools
    config = study.config
    trainable = tune.with_resources(
        functools.partial(_ray_trainable, root=str(root), config=config, head=study.head,
                          instance=study.instance.to_dict(), cpus=cpus, train=train),
        {"cpu": cpus, "gpu": gpus})
    experiment = root / "ray" / study.head
    if tune.Tuner.can_restore(str(experiment)):
        tuner = tune.Tuner.restore(str(experiment), trainable, resume_unfinished=True,
                                   restart_errored=False)
    else:
        searcher = OptunaSearch(
            space=study.distributions, metric="validation", mode="min",
            sampler=optuna.samplers.TPESampler(n_startup_trials=10, seed=config.seed,
                                               constant_liar=True))
        tuner = tune.Tuner(trainable, tune_config=tune.TuneConfig(
            search_alg=searcher, num_samples=config.trials,
            max_concurrent_trials=config.workers),
            run_config=tune.RunConfig(name=study.head, storage_path=str(root / "ray"),
                                      verbose=0))
    grid = tuner.fit()
    results = []
    for r in grid:
        trial_id = pathlib.Path(r.path).name if r.path else ""
        metrics = r.metrics or {}
        results.append((metrics.get("trial_id", trial_id), dict(r.config), metrics, r.error))
    _record_ray(study, results)


def _search(study: Study, executor, slots: int, train) -> bool:
    config = study.config

    def jobs():
        yield from study.stale_jobs()
        while True:
            from optuna.trial import TrialState
            asked = len(study.search.get_trials(deepcopy=False, states=(
                TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)))
            left = config.trials - asked
            if left <= 0:
                return
            yield study.ask(min(config.population, left))
    return _run_stage(executor, slots, jobs(), study.tell, train)


def _check_identity(root: pathlib.Path, config: StudyConfig) -> None:
    """Writes ``study.json`` for a new study; refuses a study that differs from the one in
    ``root`` (naming the first field that differs)."""
    path = root / "study.json"
    ours = config.identity()
    if path.exists():
        saved = json.loads(path.read_text())
        for key, value in ours.items():
            if saved.get(key) != value:
                raise ValueError(f"--study-dir {root} holds another study ({key} was "
                                 f"{saved.get(key)!r}, now {value!r}): choose another "
                                 "directory, or repeat the study's arguments to continue it")
    # the protocol of the latest command: the summary keeps its top and seeds
    ours["protocol"] = {"trials": config.trials, "top": config.top,
                        "rerun_seeds": _rerun_seeds(config)}
    path.write_text(json.dumps(ours, indent=1))


# ---- summaries and the report ------------------------------------------------------------------
def _read_csv(path: pathlib.Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _number(text):
    return float(text) if text not in (None, "") else None


def reference(instance: InstanceConfig, seed: int, device="cpu") -> dict:
    """The instance's reference for gaps: (name, cost, per-SKU test costs or None, note) of the
    DP optimum where it applies (its policy on the same test demand for paired gaps), else the
    best base-stock policy; empty cost when none can be costed."""
    test = compare.held_out_instance(instance)
    rows = {r["policy"]: r for r in compare.reference_rows(instance, test, seed=seed,
                                                           device=device)}
    for name in ("DP optimum", "best base-stock"):
        r = rows.get(name)
        if r is not None and r["cost"] is not None:
            paired = rows.get("DP policy, test episode") if name == "DP optimum" else r
            return {"name": name, "cost": r["cost"], "note": r["note"],
                    "per_sku": paired["per_sku"] if paired else None}
    return {"name": None, "cost": None, "per_sku": None,
            "note": "; ".join(f"{k}: {r['note']}" for k, r in rows.items())}


def summarize(root, instance: InstanceConfig | None = None, *, costs: bool = True,
              device="cpu") -> dict:
    """The study directory's summary per head, from ``trials.csv``: the search's values in
    trial order, the best validation cost, the kept configuration with its test cost and
    the gaps to the reference (paired, on the same test demand, against the DP policy or the
    best base-stock policy; and against the exact DP optimum). Also written to
    ``summary.json``. ``costs=False``: no reference and no gaps (no test episode run)."""
    from .evaluation import evaluate, paired_gap
    from .policies import Policy
    root = pathlib.Path(root)
    ident = json.loads((root / "study.json").read_text())
    instance = instance or InstanceConfig.load(ident["instance"])
    ref = None
    heads = {}
    for csv_path in sorted(root.glob("*/trials.csv")):
        rows = _read_csv(csv_path)
        search = sorted((r for r in rows if r["stage"] == "search"),
                        key=lambda r: int(r["number"]))
        values = [_number(r["value"]) if r["state"] == "complete" else None for r in search]
        done = [v for v in values if v is not None]
        head = {"trials": len(search), "values": values,
                "states": [r["state"] for r in search],
                "best_validation": min(done) if done else None,
                "wall_seconds": sum(_number(r["wall_seconds"]) or 0 for r in rows),
                "cpu_seconds": sum(_number(r["cpu_seconds"]) or 0 for r in rows)}
        kept = _kept_from_rows(rows, **ident.get("protocol", {}))
        if kept is not None:
            head["kept"] = kept
        if costs and kept is not None and kept.get("test_cost") is not None:
            if ref is None:
                ref = reference(instance, ident["seed"], device)
            if ref["cost"]:
                head["gap_vs_reference_pct"] = 100 * (kept["test_cost"] / ref["cost"] - 1)
            if ref["per_sku"] is not None and (pathlib.Path(kept["out_dir"])
                                               / "policy.pt").exists():
                policy = Policy.load(pathlib.Path(kept["out_dir"]) / "policy.pt")
                ev = evaluate(policy, compare.held_out_instance(instance), seed=ident["seed"],
                              device=device)
                head["paired_gap_pct"], head["paired_gap_se"] = paired_gap(
                    ev.per_sku.average_cost, ref["per_sku"])
        heads[csv_path.parent.name] = head
    summary = {"algo": ident["algo"], "instance": ident["instance"], "heads": heads,
               "reference": None if ref is None else {k: v for k, v in ref.items()
                                                      if k != "per_sku"}}
    (root / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _kept_from_rows(rows: list[dict], top: int | None = None, rerun_seeds=None,
                    trials=None) -> dict | None:
    """The kept configuration from ``trials.csv`` rows: among the re-runs of the ``top`` best
    complete search trials (with ``rerun_seeds``), the configuration with the best mean
    validation cost, and the re-run of its median seed by validation cost (the lower middle
    one for an even count)."""
    search = sorted(((float(r["value"]), int(r["number"])) for r in rows
                     if r["stage"] == "search" and r["state"] == "complete"))
    candidates = {n for _, n in search[:top]}
    runs: dict[int, list] = {}
    for r in rows:
        if r["stage"] == "rerun" and r["state"] == "complete" and \
                int(r["number"]) in candidates and \
                (rerun_seeds is None or int(r["seed"]) in rerun_seeds):
            runs.setdefault(int(r["number"]), []).append(r)
    if not runs:
        return None
    mean = {n: statistics.fmean(float(r["value"]) for r in rs) for n, rs in runs.items()}
    number = min(runs, key=lambda n: (mean[n], n))
    seeds = sorted(runs[number], key=lambda r: (float(r["value"]), int(r["seed"])))
    median = seeds[(len(seeds) - 1) // 2]
    return {"search_number": number, "params": json.loads(median["params"]),
            "mean_validation": mean[number], "seeds": len(seeds),
            "median_seed": int(median["seed"]), "out_dir": median["out_dir"],
            "test_cost": _number(median["test_cost"]),
            "test_cost_se": _number(median["test_cost_se"])}


def best_so_far(values: list) -> list:
    """The running minimum of a study's values (None for trials not complete)."""
    out, best = [], None
    for v in values:
        if v is not None and (best is None or v < best):
            best = v
        out.append(best)
    return out


def report(dirs: list, out_dir=None, *, plot: bool = True, summaries=None) -> str:
    """The table of the studies in ``dirs`` (summaries made from their ``trials.csv``, or
    ``summaries``), written with the sensitivity figure (best validation so far against the
    trial number per (algo, head), the reference as a line; and the quantiles of every
    trial's validation cost per (algo, head)) to ``out_dir`` (report.txt, sensitivity.png).
    Returns the table."""
    from .report import sensitivity_plot, table
    rows, curves, spreads, ref = [], {}, {}, None
    for i, d in enumerate(map(pathlib.Path, dirs)):
        if not (d / "study.json").exists():
            raise ValueError(f"{d}: not a study directory (no study.json)")
        summary = summaries[i] if summaries else summarize(d)
        ref = ref or summary.get("reference")
        for head, h in summary["heads"].items():
            label = f"{summary['algo']} + {head}"
            kept = h.get("kept") or {}
            rows.append({"study": label, "instance": summary["instance"],
                         "trials": h["trials"], "best": h["best_validation"],
                         "kept": kept.get("search_number"), "mean": kept.get("mean_validation"),
                         "test": kept.get("test_cost"), "se": kept.get("test_cost_se"),
                         "gap": h.get("paired_gap_pct"), "gap_se": h.get("paired_gap_se"),
                         "exact": h.get("gap_vs_reference_pct"),
                         "hours": h["wall_seconds"] / 3600})
            curves[label] = best_so_far(h["values"])
            spreads[label] = [v for v in h["values"] if v is not None]
    ref_name = (ref or {}).get("name") or "-"
    text = table(rows, [("study", "study", "s"), ("instance", "instance", "s"),
                        ("trials", "trials", "d"), ("best", "best valid", ".4f"),
                        ("kept", "kept trial", "d"), ("mean", "kept valid mean", ".4f"),
                        ("test", "test cost", ".4f"), ("se", "+-", ".4f"),
                        ("gap", f"gap % vs {ref_name} (paired)", "+.2f"),
                        ("gap_se", "+-", ".2f"), ("exact", f"gap % vs {ref_name}", "+.2f"),
                        ("hours", "wall h", ".2f")])
    if ref is None or ref.get("cost") is None:
        text += "\n(no reference cost: " + ((ref or {}).get("note") or "none computed") + ")"
    if out_dir is not None:
        out_dir = pathlib.Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "report.txt").write_text(text + "\n")
        if plot:
            with contextlib.suppress(ImportError):
                sensitivity_plot(curves, spreads, ref_name if ref and ref.get("cost") else None,
                                 (ref or {}).get("cost"), out_dir / "sensitivity.png",
                                 title=", ".join(sorted({r["instance"] for r in rows})))
    return text
