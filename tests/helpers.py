"""Helpers shared by test modules (imported as ``from helpers import ...``; test modules never
import each other)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

#: Examples per fuzz test: ``DEEPSTOCK_FUZZ_EXAMPLES`` when set (bench/fuzz.py's long run),
#: else the test's own CI-sized count.
_FUZZ_EXAMPLES = int(os.environ.get("DEEPSTOCK_FUZZ_EXAMPLES", "0") or 0)


def fuzz_settings(ci_examples: int) -> settings:
    """Hypothesis settings for a fuzz test: ``ci_examples`` derandomized examples in CI (the
    same cases every run, bounded time), or ``DEEPSTOCK_FUZZ_EXAMPLES`` random ones."""
    return settings(max_examples=_FUZZ_EXAMPLES or ci_examples, deadline=None,
                    derandomize=not _FUZZ_EXAMPLES, database=None,
                    suppress_health_check=list(HealthCheck))
