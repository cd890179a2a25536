"""What every trainer shares: progress display, early stopping with the best weights kept,
atomic checkpoints, and the run's result record."""

from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import errno
import fcntl
import math
import os
import pathlib
import signal
import sys
import threading
import time
import types
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Union, get_args, get_origin, get_type_hints

import torch

from .. import cuda_value_checks, seeding
from ..compare import identical_skus
from ..checkpoint import TEMPORARY_SUFFIX, atomic_save, load_file
from ..envs import InstanceConfig, InventoryEnv
from ..ops import base_stock_order
from ..policies import Policy, PolicyConfig, initial_output

STOP_REASONS = ("completed", "early_stopped", "time_budget", "diverged", "interrupted",
                "callback")
#: Hyperparameters that only say when a run ends: a resumed run may change them (e.g. to train
#: a finished run further); any other change of the instance or hyperparameters is refused.
BUDGET_FIELDS = ("epochs", "total_steps", "time_budget", "patience")
#: Columns of ``metrics.csv``: one row per validation, the keys of the dict callbacks get.
METRICS = ("iteration", "train", "validation_cost", "best_validation_cost", "lr", "seconds",
           "cpu_seconds")


class Diverged(RuntimeError):
    """The loss or the gradient became NaN or infinite."""


class OutputDirError(RuntimeError):
    """An output directory that cannot be written, or that another run is using."""


#: The files a run writes into its output directory (their stale temporaries are removed).
RUN_FILES = ("checkpoint.pt", "policy.pt", "results.json", "metrics.csv")
LOCK_FILE = ".deepstock.lock"


@contextlib.contextmanager
def output_dir(path):
    """Claims ``path`` as a run's output directory for the ``with`` block: creates it, checks
    that a file can be written there (a probe, created and removed: better now than at the
    first checkpoint, minutes later), locks it against a second run (``flock`` on a lock file,
    released when the process ends, however it ends) and removes temporaries a killed save
    left behind. Raises :class:`OutputDirError` saying what is wrong."""
    path = pathlib.Path(path)
    if path.exists() and not path.is_dir():
        raise OutputDirError(f"the output directory {path} exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputDirError(f"cannot create the output directory {path}: "
                             f"{e.strerror or e}") from None
    probe = path / f".deepstock-probe-{os.getpid()}"
    try:
        with open(probe, "wb") as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise OutputDirError(f"cannot write into the output directory {path}: "
                             f"{e.strerror or e}") from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
    lock = open(path / LOCK_FILE, "a+")
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise OutputDirError(f"cannot lock the output directory {path}: "
                                     f"{e.strerror or e}") from None
            lock.seek(0)
            owner = lock.read().strip()
            raise OutputDirError(f"the output directory {path} is in use by another run"
                                 f"{f' (process {owner})' if owner else ''}; wait for it or "
                                 "choose another directory") from None
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        for name in RUN_FILES:  # ours alone now: no other run is writing these
            for tmp in path.glob(f"{name}*{TEMPORARY_SUFFIX}"):
                tmp.unlink(missing_ok=True)
        yield path
    finally:
        lock.close()  # releases the lock


class Interruption:
    """Ctrl-C (SIGINT) during a run, inside the ``with`` block: the first one only sets
    ``requested``, so that the loop ends the current iteration and stops at a consistent point;
    a second one raises ``KeyboardInterrupt`` at once. Only in the main thread (where Python
    delivers signals) and unless SIGINT is ignored; the previous handler is restored on exit."""

    def __init__(self):
        self.requested = False
        self.previous = None

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\ninterrupt: stopping after this iteration (Ctrl-C again to stop at once, "
              "keeping the last checkpoint)", file=sys.stderr, flush=True)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        return False


class Range(NamedTuple):
    """An interval of allowed values; ``open_low`` / ``open_high`` exclude the end."""
    low: float = -math.inf
    high: float = math.inf
    open_low: bool = False
    open_high: bool = False

    def __contains__(self, v) -> bool:
        return ((self.low < v if self.open_low else self.low <= v)
                and (v < self.high if self.open_high else v <= self.high))

    def __str__(self) -> str:
        low, high = (v if isinstance(v, int) else f"{v:g}" for v in (self.low, self.high))
        if self.high == math.inf:
            return f"{'>' if self.open_low else '>='} {low}"
        return f"in {'(' if self.open_low else '['}{low}, {high}{')' if self.open_high else ']'}"


POSITIVE = Range(0.0, open_low=True)
NON_NEGATIVE = Range(0.0)
UNIT = Range(0.0, 1.0)                  # a probability or a weight in [0, 1]
DISCOUNT = Range(0.0, 1.0, open_low=True)
#: Seeds: the trainers add offsets to them and multiply them, staying inside int64.
SEEDS = Range(0, 2 ** 40, open_high=True)
#: The default range of an int field (counts, sizes, periods) and of a float field.
DEFAULT_RANGES = {int: Range(1), float: POSITIVE}


def check_fields(config, **ranges: Range) -> None:
    """Validates every field of the dataclass ``config`` against its annotated type (``int``,
    ``float``, ``bool``, ``tuple[int, ...]``, optionally ``| None``) and range: ``ranges`` for
    the named fields, else ints >= 1 and floats > 0. Ints are ints (not bools), floats finite
    (ints accepted and converted), widths positive. Raises a ``ValueError`` naming the field."""
    hints = get_type_hints(type(config))
    for f in dataclasses.fields(config):
        kind, optional = hints[f.name], False
        if get_origin(kind) in (Union, types.UnionType):  # X | None
            optional, kind = True, next(a for a in get_args(kind) if a is not type(None))
        kind = get_origin(kind) or kind                      # tuple[int, ...] -> tuple
        value = getattr(config, f.name)
        if value is None and optional:
            continue
        problem = _field_problem(value, kind, ranges.get(f.name, DEFAULT_RANGES.get(kind)))
        if problem:
            raise ValueError(f"{type(config).__name__}.{f.name} {problem}"
                             f"{' or None' if optional else ''}, got {value!r}")
        if kind is float:
            setattr(config, f.name, float(value))
        elif kind is tuple:
            setattr(config, f.name, tuple(value))


def _field_problem(value, kind, allowed: Range | None) -> str:
    """What is wrong with ``value`` as a ``kind`` in ``allowed``, or ''."""
    if kind is bool:
        return "" if isinstance(value, bool) else "must be true or false"
    if kind is int or kind is float:
        if isinstance(value, bool) or not isinstance(value, int if kind is int else (int, float)):
            return f"must be {'an int' if kind is int else 'a number'}"
        if kind is float and not math.isfinite(value):
            return "must be finite"
        return "" if value in allowed else f"must be {allowed}"
    # tuple[int, ...]: network widths
    if not isinstance(value, (tuple, list)) or not value or any(
            isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in value):
        return "must be one or more positive int widths"
    return ""


@dataclass
class RunResult:
    best_validation: float          # the best validation cost (cost per SKU-day)
    best_iteration: int
    iterations: int                 # training iterations done (epochs, steps or updates)
    unit: str                       # what one iteration is
    seconds: float                  # training wall time, summed over resumed parts
    stopped: str                    # one of STOP_REASONS
    message: str = ""
    history: list[dict] = field(default_factory=list)  # one entry per evaluation


class EarlyStopping:
    """Tracks the best validation cost and its weights; ``should_stop`` after ``patience``
    evaluations without improvement (relative ``min_delta``)."""

    def __init__(self, patience: int, min_delta: float = 0.0):
        self.patience, self.min_delta = patience, min_delta
        self.best = math.inf
        self.best_epoch = -1
        self.best_state: dict | None = None
        self.bad_evaluations = 0

    def update(self, value: float, epoch: int, module) -> bool:
        """Records one evaluation; True when it is the best so far."""
        if value < self.best * (1 - self.min_delta) or self.best_state is None:
            self.best, self.best_epoch = value, epoch
            self.best_state = copy.deepcopy(module.state_dict())
            self.bad_evaluations = 0
            return True
        self.bad_evaluations += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_evaluations >= self.patience

    def state_dict(self) -> dict:
        return dict(best=self.best, best_epoch=self.best_epoch, best_state=self.best_state,
                    bad_evaluations=self.bad_evaluations)

    def load_state_dict(self, d: dict) -> None:
        self.best, self.best_epoch = d["best"], d["best_epoch"]
        self.best_state, self.bad_evaluations = d["best_state"], d["bad_evaluations"]


class Progress:
    """Progress on stderr with rate and ETA (tqdm's meter): on a terminal a bar redrawn at most
    every ``interval`` seconds; elsewhere (a log file, CI) one line at most every
    ``log_interval`` seconds and one at the end, so that a log stays short. Resumed runs start
    at ``initial``, so that the rate counts this process's iterations only."""

    def __init__(self, label: str, total: int, enabled: bool = True, interval: float = 0.5,
                 initial: int = 0, unit: str = "it", log_interval: float = 30.0):
        self.label, self.total, self.enabled, self.unit = label, total, enabled, unit
        self.initial, self.done, self.text = initial, initial, ""
        self.tty = sys.stderr.isatty()
        self.interval = interval if self.tty else log_interval
        self.start = time.perf_counter()
        self.last = -math.inf
        self.bar = None
        if enabled and self.tty:
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=initial, desc=label, unit=unit,
                            file=sys.stderr, dynamic_ncols=True, mininterval=interval,
                            leave=True)

    def update(self, done: int, text, force: bool = False) -> None:
        """``text``: a string, or a function making it (called only when the line is drawn, so
        that a device value is fetched only then)."""
        if not self.enabled:
            return
        self.done, self.text = done, text
        now = time.perf_counter()
        if not (force and self.tty) and now - self.last < self.interval:
            return
        self.last = now
        self._draw()

    def _draw(self) -> None:
        text = self.text() if callable(self.text) else self.text
        if self.bar is not None:
            self.bar.n = self.done
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.refresh()
            return
        from tqdm import tqdm
        print(tqdm.format_meter(self.done, self.total, time.perf_counter() - self.start,
                                prefix=self.label, postfix=text, unit=self.unit,
                                initial=self.initial, ncols=0), file=sys.stderr, flush=True)

    def close(self) -> None:
        """Draws the final state (in a log: the last line) and ends the bar."""
        if not self.enabled:
            return
        if self.bar is not None:
            self._draw()
            self.bar.close()
        elif self.text:
            self._draw()


#: Stop reasons of a run that its budget (or a callback) ended: resuming it goes on only when
#: the resumed run's budget allows more.
FINISHED = ("completed", "early_stopped", "time_budget", "callback")


def identity_changes(saved, current: dict, path: str = "") -> list[str]:
    """What differs between a checkpoint's identity and this run's, one ``field: value there,
    value here`` item per field (dotted paths), leaving out :data:`BUDGET_FIELDS` of the
    hyperparameters (``config.*``) when both have them."""
    if not isinstance(saved, dict) or not isinstance(current, dict):
        return [] if saved == current else [f"{path or 'identity'}: {saved!r} there, "
                                            f"{current!r} here"]
    changes = []
    for key in sorted(set(saved) | set(current), key=str):
        name = f"{path}.{key}" if path else str(key)
        if key not in saved or key not in current:
            there = f"{saved[key]!r}" if key in saved else "not a field"
            here = f"{current[key]!r}" if key in current else "not a field"
            changes.append(f"{name}: {there} there, {here} here")
        elif not ((path == "config" or path.endswith(".config")) and key in BUDGET_FIELDS):
            changes += identity_changes(saved[key], current[key], name)
    return changes


class MetricsCSV:
    """``metrics.csv``: one row per validation, columns :data:`METRICS`. Written from the
    run's history when the loop starts (a resumed run's file then matches its checkpoint),
    then appended to."""

    def __init__(self, path: pathlib.Path, history: list[dict]):
        self.path = path
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(METRICS)
            writer.writerows(self._row(entry) for entry in history)

    @staticmethod
    def _row(entry: dict) -> list:
        return ["" if entry.get(k) is None else entry[k] for k in METRICS]

    def append(self, entry: dict) -> None:
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow(self._row(entry))


class TensorBoard:
    """A callback that writes each validation's metrics as TensorBoard scalars (x: the
    iteration) into ``log_dir``; needs ``torch.utils.tensorboard`` (``pip install
    deepstock_fast[tensorboard]``). Events a killed run wrote after its last checkpoint are
    purged when the resumed run writes its first."""

    def __init__(self, log_dir):
        from torch.utils.tensorboard import SummaryWriter  # ImportError without tensorboard
        self.log_dir, self.writer_class, self.writer = str(log_dir), SummaryWriter, None

    def __call__(self, metrics: dict) -> None:
        step = metrics["iteration"]
        if self.writer is None:
            self.writer = self.writer_class(self.log_dir, purge_step=step)
        prefix = f"member-{metrics['member']}/" if "member" in metrics else ""  # populations
        for key in ("train", "validation_cost", "best_validation_cost", "lr"):
            if metrics[key] is not None:
                self.writer.add_scalar(prefix + key, metrics[key], step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class Checkpoint:
    """A run's checkpoint file: everything that determines the rest of the run. ``save``
    writes (atomically) the ``state_dict`` of every object in ``stateful``, the state of every
    generator, the early stopper, the loop's counters and history and ``identity`` (the
    instance and hyperparameters); ``restore`` loads it back into them, refusing a file written
    with another identity (naming each field that differs; :data:`BUDGET_FIELDS` may differ)."""

    def __init__(self, path: pathlib.Path, identity: dict, stateful: dict, generators: dict):
        self.path, self.identity = path, identity
        self.stateful, self.generators = stateful, generators

    def save(self, **loop_state) -> None:
        """``loop_state``: the loop's (:func:`run_members`'s) state of its members."""
        atomic_save({"identity": self.identity,
                     "stateful": {n: o.state_dict() for n, o in self.stateful.items()},
                     "generators": {n: g.get_state() for n, g in self.generators.items()},
                     **loop_state}, self.path)

    def restore(self) -> dict:
        """Loads the file into the stateful objects and generators; returns the loop's state
        (as given to :meth:`save`)."""
        if not self.path.exists():
            raise FileNotFoundError(f"resume: no checkpoint at {self.path}")
        state = load_file(self.path, what="checkpoint")
        changes = identity_changes(state.get("identity"), self.identity)
        if changes:
            raise ValueError(f"resume: {self.path} was written with other settings: "
                             f"{'; '.join(changes)} (a resumed run may change only "
                             f"{', '.join(BUDGET_FIELDS)})")
        for name, obj in self.stateful.items():
            obj.load_state_dict(state["stateful"][name])
        for name, g in self.generators.items():
            g.set_state(state["generators"][name])
        return state


@dataclass
class MemberPlan:
    """One member of :func:`run_members`: its budget and where its files go."""
    total: int                          # iterations
    patience: int                       # validations without improvement before it stops
    time_budget: float | None = None    # seconds of training
    dir: pathlib.Path | None = None     # its policy.pt and metrics.csv (None: no files)


class _Member:
    """:func:`run_members`'s record of one member: early stopper, counters, history and, once
    it stopped (is frozen), why."""

    def __init__(self, plan: MemberPlan):
        self.plan = plan
        self.stopper = EarlyStopping(plan.patience, min_delta=1e-5)
        self.done, self.history = 0, []
        self.seconds_before = self.cpu_before = 0.0
        self.saved_stop: str | None = None    # the stop reason its checkpoint holds
        self.stopped: str | None = None       # None while it trains
        self.message = ""
        self.ended_at: tuple[float, float] | None = None  # (seconds, cpu) when it stopped
        self.metrics: MetricsCSV | None = None

    def state_dict(self, seconds: float, cpu: float, stopped: str | None) -> dict:
        return dict(stopper=self.stopper.state_dict(), done=self.done, history=self.history,
                    seconds=seconds, cpu_seconds=cpu, stopped=stopped, message=self.message)

    def load_state_dict(self, state: dict) -> None:
        self.stopper.load_state_dict(state["stopper"])
        self.done, self.history = state["done"], state["history"]
        self.seconds_before, self.cpu_before = state["seconds"], state["cpu_seconds"]
        self.saved_stop, self.message = state["stopped"], state.get("message", "")


class SingleWeights:
    """:func:`run_members`'s view of one policy module as member 0 (a single run)."""

    def __init__(self, policy, instance):
        self.policy, self.instance = policy, instance

    def state(self, k: int) -> dict:
        return self.policy.state_dict()

    def load(self, k: int, state: dict) -> None:
        self.policy.load_state_dict(state)

    def save(self, k: int, path: pathlib.Path) -> None:
        self.policy.save(path, instance=self.instance)


class _StateOf:
    """Member k's weights as the ``module`` that :meth:`EarlyStopping.update` copies."""

    def __init__(self, weights, k: int):
        self.weights, self.k = weights, k

    def state_dict(self) -> dict:
        return self.weights.state(self.k)


@contextlib.contextmanager
def claimed(out_dir, callbacks=(), write: bool = True):
    """The ``with`` block of a run (one or several populations): ``out_dir`` claimed with
    :func:`output_dir` (when given and ``write``), Ctrl-C handled by the yielded :class:`Interruption`, and
    every callback with a ``close()`` closed at the end."""
    try:
        with (output_dir(out_dir) if out_dir is not None and write
              else contextlib.nullcontext()), Interruption() as interruption:
            yield interruption
    finally:
        for callback in callbacks:
            if callable(getattr(callback, "close", None)):
                callback.close()


def run_loop(*, label: str, total: int, iterate, validate, eval_every: int, patience: int,
             checkpoint_every: int, time_budget: float | None, policy, stateful: dict,
             generators: dict, identity: dict, out_dir=None, resume: bool = False,
             progress: bool = True, on_validation=None, unit: str = "epoch",
             healthy: Callable[[], bool] | None = None, callbacks=()) -> RunResult:
    """The loop of a single run: :func:`run_members` with one member. ``iterate(i)`` does one
    training iteration (an epoch, an environment step, a rollout and its update) and returns a
    number to display (a float or a 0-d tensor, read from the device only when shown or
    recorded); every ``eval_every`` iterations ``validate()`` gives the validation cost, which
    drives early stopping (best weights of ``policy`` kept and loaded at the end) and
    ``on_validation`` (e.g. a plateau scheduler). ``healthy()`` (e.g. a flag the trainer keeps
    on the device) is asked before every validation and checkpoint and when ``iterate`` raises
    a ``RuntimeError``: False stops the run as diverged. With ``out_dir`` (claimed with
    :func:`output_dir`), writes ``checkpoint.pt``, ``metrics.csv`` and, at the end,
    ``policy.pt`` there. The rest (resume, Ctrl-C, callbacks, the initial policy as the first
    candidate) is :func:`run_members`'s.
    """
    optimizers = [o for o in stateful.values() if isinstance(o, torch.optim.Optimizer)]
    with claimed(out_dir, callbacks) as interruption:
        return run_members(
            label=label, plans=[MemberPlan(total, patience, time_budget,
                                           None if out_dir is None else pathlib.Path(out_dir))],
            iterate=lambda done, active: ([iterate(done[0])], {}),
            validate=lambda active: [validate()], eval_every=eval_every,
            checkpoint_every=checkpoint_every, weights=SingleWeights(policy, identity["instance"]),
            stateful=stateful, generators=generators, identity=identity,
            checkpoint_path=None if out_dir is None else pathlib.Path(out_dir) / "checkpoint.pt",
            resume=resume, progress=progress,
            on_validation=None if on_validation is None else lambda k, v: on_validation(v),
            lrs=lambda: [optimizers[0].param_groups[0]["lr"] if optimizers else None],
            unit=unit, healthy=None if healthy is None else lambda: [healthy()],
            callbacks=list(callbacks), interruption=interruption)[0]


def _callback_stop(callbacks: list, entry: dict) -> str | None:
    """The name of the first callback that asks to stop after ``entry``, or None."""
    for callback in callbacks:
        name = getattr(callback, "__name__", type(callback).__name__)
        try:
            if callback(dict(entry)):
                return name
        except StopIteration:
            return name
    return None


def run_members(*, label: str, plans: list[MemberPlan], iterate, validate, eval_every: int,
                checkpoint_every: int, weights, stateful: dict, generators: dict,
                identity: dict, checkpoint_path: pathlib.Path | None, resume: bool,
                progress: bool, on_validation, lrs, unit: str, healthy, callbacks: list,
                interruption: Interruption, population: bool = False,
                member_ids: list[int] | None = None,
                check_every_iteration: bool = False, write: bool = True) -> list[RunResult]:
    """The loop every trainer runs, for K members trained together (a population; a single run
    is K = 1) that share the iterations but not their fate: each member has its own budget
    (``plans``), early stopping (its best weights kept and loaded at the end), history, files
    and stop reason, and a member that stops (early, diverged, its budget spent, a callback)
    is frozen while the others go on, until every member stopped.

    The trainer's side, for K members: ``iterate(done, active)`` does one training iteration
    of the active members (``done``: each member's iterations so far; ``active``: K bools) and
    returns (K numbers to display, a list or a tensor read only when shown, {member: what
    went wrong} for members whose iteration failed: they stop as diverged, the iteration not
    counted); ``validate(active)`` gives K validation costs (those of the active members are
    used); ``weights`` reads, loads and saves member k's weights (``state(k)``, ``load(k,
    state)``, ``save(k, path)``); ``healthy()`` (or None) gives K bools, asked before each
    validation and checkpoint (after every iteration with ``check_every_iteration``) and when
    ``iterate`` raises a ``RuntimeError``: an unhealthy member stops as diverged, its best
    weights loaded back at once so that no checkpoint or later iteration sees spoilt ones;
    ``on_validation(k, value)`` (e.g. member k's plateau schedule) and ``lrs()`` (K learning
    rates for the records) are optional. ``iterate`` raising :class:`Diverged` stops every
    active member as diverged.

    Every validation of a member gives one history entry, a dict with the keys
    :data:`METRICS` (plus ``member``: ``member_ids[k]``, default k, when ``population``),
    appended to its
    ``metrics.csv`` and passed (a copy) to each of ``callbacks`` in turn; a callback that
    returns a true value or raises ``StopIteration`` stops that member ("callback"). The
    initial policy is validated before the first iteration and competes for the best: no
    member returns a policy that validates worse than the one it started from, and its
    message says so when it returns the initial one.

    With ``checkpoint_path``, checkpoints (atomic, every ``checkpoint_every`` iterations, at the
    end and on Ctrl-C) hold the ``state_dict`` of every object in ``stateful``, the state of
    every generator in ``generators``, every member's loop state and ``identity``:
    ``resume=True`` refuses a checkpoint with another identity (naming each field that
    differs, except :data:`BUDGET_FIELDS` of a ``config``), continues an unfinished run
    exactly, and returns a finished member as it was unless its new budget allows more, in
    which case it trains on; a diverged member stays stopped. A single run (K = 1) never
    overwrites its last good checkpoint once it diverged. Ctrl-C (``interruption``) lets the
    current iteration finish, writes a checkpoint and stops every member as "interrupted"; a
    second Ctrl-C stops at once and writes nothing. At the end each member's best policy is
    saved to its ``plans[k].dir / "policy.pt"``. ``write=False`` (the ranks but 0 of a
    data-parallel run): files are only read (the checkpoint, on ``resume``), never written.
    """
    K = len(plans)
    ids = list(range(K)) if member_ids is None else list(member_ids)
    members = [_Member(plan) for plan in plans]
    checkpoint = Checkpoint(checkpoint_path, identity, stateful, generators) \
        if checkpoint_path is not None else None
    if resume:
        if checkpoint is None:
            raise FileNotFoundError("resume: no checkpoint without an output directory")
        state = checkpoint.restore()
        saved = state["members"] if "members" in state else [state]
        if len(saved) != K:
            raise ValueError(f"resume: {checkpoint.path} holds {len(saved)} members, this run "
                             f"has {K}")
        for m, s in zip(members, saved):
            m.load_state_dict(s)

    start, cpu_start = time.perf_counter(), time.process_time()
    elapsed = lambda m: m.seconds_before + time.perf_counter() - start  # noqa: E731
    cpu_elapsed = lambda m: m.cpu_before + time.process_time() - cpu_start  # noqa: E731
    for m in members:
        if m.plan.dir is not None and write:
            m.plan.dir.mkdir(parents=True, exist_ok=True)
            m.metrics = MetricsCSV(m.plan.dir / "metrics.csv", m.history)

    def active() -> list[bool]:
        return [m.stopped is None for m in members]

    def stop(k: int, reason: str, message: str) -> None:
        m = members[k]
        m.stopped, m.message = reason, message
        m.ended_at = (elapsed(m), cpu_elapsed(m))
        if reason == "diverged" and m.stopper.best_state is not None:
            weights.load(k, m.stopper.best_state)  # frozen on finite weights

    def record(k: int, train, value: float, lr) -> str | None:
        """Appends a validation's entry to member k's history and metrics; a callback's name
        when it asks to stop."""
        m = members[k]
        entry = {"iteration": m.done, "train": train, "validation_cost": value,
                 "best_validation_cost": m.stopper.best, "lr": lr, "seconds": elapsed(m),
                 "cpu_seconds": cpu_elapsed(m)}
        m.history.append(entry)
        if m.metrics is not None:
            m.metrics.append(entry)
        return _callback_stop(callbacks, {**entry, "member": ids[k]} if population else entry)

    def budget_end(m: _Member) -> tuple[str, str] | None:
        """(reason, message) when member m's budget allows no more iterations, else None."""
        if m.done >= m.plan.total:
            return "completed", f"all {m.plan.total} {unit}s done"
        if m.plan.time_budget is not None and elapsed(m) >= m.plan.time_budget:
            return "time_budget", f"time budget of {m.plan.time_budget:g}s used"
        if m.stopper.should_stop:
            return "early_stopped", f"no improvement in {m.plan.patience} evaluations"
        return None

    def save() -> None:
        """A checkpoint: the members' state, with the stop reason of those that stopped (an
        interrupted member is written as unfinished, to be resumed)."""
        if checkpoint is None or not write:
            return
        states = []
        for m in members:
            seconds, cpu = m.ended_at or (elapsed(m), cpu_elapsed(m))
            states.append(m.state_dict(seconds, cpu, None if m.stopped == "interrupted"
                                       else m.stopped))
        if population:
            checkpoint.save(members=states, done=max(m.done for m in members))
        else:
            states[0].pop("message")
            checkpoint.save(**states[0])

    def diverged_message(e) -> str:
        if population:
            return f"training diverged: {e}; this member's best policy so far is kept"
        return (f"training diverged: {e}; the last good checkpoint"
                f"{f' ({checkpoint.path})' if checkpoint else ''} and the best policy so far "
                "are kept")

    def check_healthy(before: bool) -> None:
        """Stops each active member that ``healthy()`` finds spoilt, as diverged."""
        if healthy is None:
            return
        for k, ok in enumerate(healthy()):
            m = members[k]
            if m.stopped is None and not ok:
                at = m.done + 1 if before else m.done
                stop(k, "diverged", diverged_message(
                    f"a loss or gradient was not finite before {unit} {at}"))

    for k, m in enumerate(members):
        if m.saved_stop in FINISHED:  # finished then; a larger budget now lets it go on
            end = budget_end(m)
            if end is not None:
                stop(k, end[0], f"resumed a finished run ({end[1]})")
        elif m.saved_stop == "diverged":
            m.stopped, m.ended_at = "diverged", (m.seconds_before, m.cpu_before)
    fresh = [k for k, m in enumerate(members) if m.done == 0 and not m.history]
    if fresh:  # the initial policy is the first candidate for the best
        values = validate(active())
        lr = lrs() if lrs is not None else [None] * K
        bad = [k for k in fresh if not math.isfinite(float(values[k]))]
        if bad:
            raise Diverged(f"the initial policy's validation cost is {float(values[bad[0]])}"
                           + (f" (member{'s' * (len(bad) > 1)} "
                              f"{', '.join(map(str, bad))})" if population else ""))
        for k in fresh:
            m = members[k]
            m.stopper.update(float(values[k]), 0, _StateOf(weights, k))
            by = record(k, None, float(values[k]), lr[k])
            if by is not None:
                stop(k, "callback", f"stopped by callback {by} at {unit} 0")
        try:  # a first checkpoint before any training: a full disk shows now, not minutes later
            save()
        except OSError as e:
            raise OutputDirError(f"cannot write the checkpoint {checkpoint.path}: "
                                 f"{e.strerror or e}") from None

    total = max(plan.total for plan in plans)
    bar = Progress(label, total, enabled=progress, initial=max(m.done for m in members),
                   unit=unit)

    def summary() -> str:
        live = [m for m in members if m.stopped is None] or members
        best = min(live, key=lambda m: m.stopper.best)
        text = f"best valid {best.stopper.best:.4f}"
        return text if K == 1 else f"{sum(active())}/{K} training, {text}"

    at_once = False  # stopped by a second Ctrl-C
    # On CUDA the ops then never wait for the host to check values: a NaN that reaches them
    # comes out as NaN costs, which the trainers' loss checks and the validation catch.
    with cuda_value_checks(False):
        try:
            while any(active()):
                running = active()
                try:
                    shown, problems = iterate([m.done for m in members], running)
                except Diverged as e:
                    for k, m in enumerate(members):
                        if m.stopped is None:
                            stop(k, "diverged", diverged_message(e))
                    break
                except RuntimeError:  # e.g. an op refusing NaN orders from spoilt weights
                    check_healthy(before=True)
                    if all(active()[k] for k in range(K) if running[k]):
                        raise  # every member is healthy: not a divergence
                    continue
                for k, problem in problems.items():
                    if members[k].stopped is None:
                        stop(k, "diverged", diverged_message(
                            f"{problem} at {unit} {members[k].done + 1}"))
                due_eval, due_save = [], False
                for k, m in enumerate(members):
                    if m.stopped is None:
                        m.done += 1
                        if m.done % eval_every == 0 or m.done == m.plan.total:
                            due_eval.append(k)
                        due_save |= m.done % checkpoint_every == 0
                if due_eval or due_save or check_every_iteration:
                    check_healthy(before=False)
                due_eval = [k for k in due_eval if members[k].stopped is None]
                if due_eval:
                    values = validate(active())
                    for k in due_eval:
                        m, value = members[k], float(values[k])
                        if not math.isfinite(value):
                            stop(k, "diverged", diverged_message(
                                f"validation cost is {value} at {unit} {m.done}"))
                            continue
                        train = float(shown[k])
                        m.stopper.update(value, m.done, _StateOf(weights, k))
                        if on_validation is not None:
                            on_validation(k, value)
                        by = record(k, train, value, lrs()[k] if lrs is not None else None)
                        if K == 1:
                            bar.update(m.done, f"train {train:.4f} valid {value:.4f} "
                                               f"(best {m.stopper.best:.4f})", force=True)
                        if by is not None:
                            stop(k, "callback", f"stopped by callback {by} at {unit} {m.done}")
                        elif m.stopper.should_stop:
                            stop(k, "early_stopped",
                                 f"no improvement in {m.plan.patience} evaluations")
                for k, m in enumerate(members):
                    if m.stopped is None and m.done >= m.plan.total:
                        stop(k, "completed", "")
                if K > 1 or not due_eval:
                    done = max(m.done for m in members)
                    bar.update(done, summary if K > 1 else
                               lambda: f"train {float(shown[0]):.4f} {summary()}")
                if due_save and any(active()):
                    save()
                for k, m in enumerate(members):
                    if m.stopped is None and m.plan.time_budget is not None \
                            and elapsed(m) >= m.plan.time_budget:
                        stop(k, "time_budget", f"time budget of {m.plan.time_budget:g}s used")
                # Ctrl-C: stop at this consistent point
                if any(active()) and interruption.requested:
                    for k, m in enumerate(members):
                        if m.stopped is None:
                            stop(k, "interrupted", f"interrupted after {unit} {m.done}" + (
                                "; resume with the same arguments and --resume"
                                if checkpoint else ""))
                    break
        except KeyboardInterrupt:  # a second Ctrl-C: the state is mid-iteration, write nothing
            at_once = True
            for k, m in enumerate(members):
                if m.stopped is None or m.stopped == "interrupted":
                    stop(k, "interrupted", f"interrupted during {unit} {m.done + 1}; nothing "
                         "was written" + (f": the last checkpoint ({checkpoint}) is kept; "
                                          "resume with the same arguments and --resume"
                                          if checkpoint else ""))
        finally:
            bar.close()
    if not at_once:  # stopped between two checks
        flagged = [k for k, m in enumerate(members) if m.stopped in ("interrupted",
                                                                     "time_budget")]
        if flagged and healthy is not None:
            for k, ok in enumerate(healthy()):
                if k in flagged and not ok:
                    stop(k, "diverged", diverged_message(
                        f"a loss or gradient was not finite before {unit} {members[k].done}"))
    if not at_once and not (not population and members[0].stopped == "diverged"):
        save()
    results = []
    for k, m in enumerate(members):
        if m.stopper.best_state is not None:
            weights.load(k, m.stopper.best_state)
        if m.stopper.best_epoch == 0 and m.done > 0 and m.stopped != "diverged":
            m.message = "; ".join(filter(None, [m.message, "no validation improved on the "
                                                "initial policy, which is returned"]))
        if m.plan.dir is not None and write and not at_once:
            weights.save(k, m.plan.dir / "policy.pt")
        seconds = m.ended_at[0] if m.ended_at else elapsed(m)
        results.append(RunResult(best_validation=m.stopper.best,
                                 best_iteration=m.stopper.best_epoch, iterations=m.done,
                                 unit=unit, seconds=seconds, stopped=m.stopped or "completed",
                                 message=m.message, history=m.history))
    return results


class Setup(NamedTuple):
    instance: InstanceConfig
    env: InventoryEnv           # the training environment
    valid_env: InventoryEnv
    validation: object          # the fixed validation Episode
    policy: Policy

    def validate(self) -> float:
        """The policy's average cost per SKU-day on the validation episode."""
        with torch.no_grad():
            return float(self.valid_env.simulate(self.policy, self.validation)
                         .average_cost.mean())


def setup(instance: InstanceConfig | str, policy_config: PolicyConfig, *,
          train_skus: int | None, validation_skus: int, seed: int, device,
          reset: bool = False) -> Setup:
    """What every trainer starts from: the training environment (``train_skus`` SKUs, or the
    instance's), the validation environment and its fixed episode, and the policy (initial
    weights from ``seed``) with its input normalisation fitted on :func:`reference_policy`'s
    states, the same for every head and algorithm. Each draws from its own stream of ``seed``
    (:mod:`deepstock_fast.seeding`)."""
    if isinstance(instance, str):
        instance = InstanceConfig.from_name(instance)
    env = InventoryEnv(instance if train_skus is None else instance.replace(num_skus=train_skus),
                       device, seed=seeding.stream(seed, "train"))
    if reset:
        env.reset()
    valid_env = validation_env(instance, validation_skus, seed, device)
    validation = valid_env.sample_episode()
    torch.manual_seed(seeding.stream(seed, "weights"))
    policy = Policy.for_instance(instance, policy_config, env.obs_names).to(device)
    policy.fit_normalizer(reference_observations(instance, seed, device))
    return Setup(instance, env, valid_env, validation, policy)


def validation_env(instance: InstanceConfig, validation_skus: int, seed: int,
                   device) -> InventoryEnv:
    """The environment whose first episode is the fixed validation episode of a run of
    ``seed``: a sales history's spans its validation period (else the instance's horizon); a
    catalog validates on a fixed subset of at most all its SKUs."""
    return InventoryEnv(instance.for_period("validation").replace(
        num_skus=min(validation_skus, instance.catalog_size or validation_skus)),
        device, seed=seeding.stream(seed, "validation"))


#: SKUs of the reference episode when an instance's SKUs are identical copies.
REFERENCE_SKUS = 256
#: At most this many SKUs of a catalog in the reference episode (its observations are kept).
CATALOG_REFERENCE_SKUS = 4096


def reference_policy(instance: InstanceConfig):
    """A classical policy that does not depend on the head being trained: base-stock at the
    Base head's initial level (mean demand over lead time + review period + 1 day, in units of
    each SKU's scale), within the instance's order cap. The input normalisation and the RL
    reward scale are fitted on its episodes, so every head and algorithm sees the same inputs
    and rewards (fitted on each head's own untrained policy, they were not: the None head's
    nearly constant orders left its pipeline columns almost constant)."""
    level = initial_output("base", instance)[0]
    cap = instance.max_order if instance.max_order is not None else math.inf
    return lambda state: base_stock_order(level * state.scale, state.inventory_position, cap)


@torch.no_grad()
def reference_episode(instance: InstanceConfig, seed: int, purpose: str, device, record=None):
    """:func:`reference_policy` over one episode of the instance's SKUs (:data:`REFERENCE_SKUS`
    of them when they are identical copies, whatever a trainer's batch size), drawn from
    ``seed``'s ``purpose`` stream; ``record(state)`` sees every state. Returns (the
    environment, the :class:`SimulationResult`)."""
    if identical_skus(instance):
        instance = instance.replace(num_skus=REFERENCE_SKUS)
    elif instance.catalog_size is not None:  # a random subset of a large catalog
        instance = instance.replace(num_skus=min(instance.num_skus, CATALOG_REFERENCE_SKUS))
    env = InventoryEnv(instance, device, seed=seeding.stream(seed, purpose))
    policy = reference_policy(instance)

    def act(state):
        if record is not None:
            record(state)
        return policy(state)

    return env, env.simulate(act, env.sample_episode())


def reference_observations(instance: InstanceConfig, seed: int, device) -> torch.Tensor:
    """Observations [E * B, obs_size] along a :func:`reference_episode`, for the input
    normalisation."""
    seen = []
    reference_episode(instance, seed, "normalizer", device, lambda s: seen.append(s.obs))
    return torch.cat(seen)


def reward_scale(instance: InstanceConfig, seed: int, device) -> float:
    """Mean cost per review period of a :func:`reference_episode`: PPO and DDPG divide rewards
    by it so that values and advantages are O(1) whatever the instance's cost scale, with the
    same scale for every head."""
    env, result = reference_episode(instance, seed, "reward_scale", device)
    c = env.config
    return max(float(result.cost.sum(1).mean()) / (c.horizon - c.warmup) * c.review_period,
               1e-6)


def objective_reward(env: InventoryEnv, reward: torch.Tensor, day: int) -> torch.Tensor:
    """The part of a step's reward [B] that the instance's objective counts: all of it for a
    long-run (truncated) instance, none of a warm-up day's for a ``finite_horizon`` one, whose
    cost is that of the days after warm-up (as DS and the evaluation count it)."""
    c = env.config
    return torch.zeros_like(reward) if c.finite_horizon and day < c.warmup else reward


class Scalars(torch.nn.Module):
    """Numbers a run fixes once and must keep across resumes (e.g. the reward scale)."""

    def __init__(self, **values: float):
        super().__init__()
        for k, v in values.items():
            self.register_buffer(k, torch.tensor(float(v), dtype=torch.float64))
