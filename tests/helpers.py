"""Helpers shared by test modules (imported as ``from helpers import ...``; test modules never
import each other)."""

from __future__ import annotations

import contextlib
import functools
import os

from hypothesis import HealthCheck, settings

#: Examples per fuzz test: ``DEEPSTOCK_FUZZ_EXAMPLES`` when set (bench/fuzz.py's long run),
#: else the test's own CI-sized count.
_FUZZ_EXAMPLES = int(os.environ.get("DEEPSTOCK_FUZZ_EXAMPLES", "0") or 0)


def fuzz_settings(ci_examples: int) -> settings:
    """Hypothesis settings for a fuzz test: ``ci_examples`` derandomized examples in CI (the
    same cases every run, bounded time), or ``DEEPSTOCK_FUZZ_EXAMPLES`` random ones."""
    chosen = settings(max_examples=_FUZZ_EXAMPLES or ci_examples, deadline=None,
                      derandomize=not _FUZZ_EXAMPLES, database=None,
                      suppress_health_check=list(HealthCheck))
    return _counting(chosen) if _FUZZ_LOG else chosen


#: bench/fuzz.py's case count: when set, every example a fuzz test runs appends a line
#: "<pytest test id>\t<passed|failed>" to this file.
_FUZZ_LOG = os.environ.get("DEEPSTOCK_FUZZ_LOG")


def _counting(chosen: settings):
    """``chosen`` as a decorator that also logs each example to ``DEEPSTOCK_FUZZ_LOG``, above or
    below ``@given`` (Hypothesis runs ``test.hypothesis.inner_test`` once per example)."""
    def count(fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            outcome = "failed"
            try:
                result = fn(*args, **kwargs)
                outcome = "passed"
                return result
            finally:
                test = os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" (", 1)[0]
                with open(_FUZZ_LOG, "a") as log:
                    log.write(f"{test}\t{outcome}\n")
        return run

    def apply(test):
        if hasattr(test, "hypothesis"):  # already @given
            test.hypothesis.inner_test = count(test.hypothesis.inner_test)
            return chosen(test)
        return chosen(count(test))

    return apply


@contextlib.contextmanager
def restored(registry: dict):
    """A registry (a dict filled by a ``register`` decorator) that a test may add to; its
    entries as they were come back afterwards."""
    saved = dict(registry)
    try:
        yield registry
    finally:
        registry.clear()
        registry.update(saved)
