"""What every trainer shares: progress display, early stopping with the best weights kept,
atomic checkpoints, and the run's result record."""

from __future__ import annotations

import copy
import math
import sys
import time
from dataclasses import dataclass, field

STOP_REASONS = ("completed", "early_stopped", "time_budget", "diverged", "interrupted")


class Diverged(RuntimeError):
    """The loss or the gradient became NaN or infinite."""


@dataclass
class RunResult:
    best_validation: float          # the best validation cost (cost per SKU-day)
    best_epoch: int
    epochs: int                     # epochs (or iterations) done
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
    """One status line on stderr, redrawn at most every ``interval`` seconds (a new line each
    time when stderr is not a terminal, e.g. in CI logs, then at most every 10 s)."""

    def __init__(self, label: str, total: int, enabled: bool = True, interval: float = 0.5):
        self.label, self.total, self.enabled = label, total, enabled
        self.tty = sys.stderr.isatty()
        self.interval = interval if self.tty else 10.0
        self.start = time.perf_counter()
        self.last = -math.inf

    def update(self, done: int, text: str, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if not force and now - self.last < self.interval:
            return
        self.last = now
        width = 20
        filled = int(width * done / max(self.total, 1))
        line = (f"{self.label} [{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} "
                f"{text} {now - self.start:.0f}s")
        print(("\r" + line + "\033[K") if self.tty else line, end="" if self.tty else "\n",
              file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.enabled and self.tty:
            print(file=sys.stderr)
