"""The long fuzz run: every tests/test_fuzz_*.py with DEEPSTOCK_FUZZ_EXAMPLES random examples per
test (tests/helpers.py's fuzz_settings reads it), in a pytest subprocess, so that a crash is seen
as a crash and not as a dead benchmark.

It counts the examples each test ran from DEEPSTOCK_FUZZ_LOG (tests/helpers.py), each test's outcome from
pytest's JUnit XML, and sorts a failure by its message: a crash (the fuzz worker or pytest died),
a wrong result (the op returned something the reference does not), an unnamed rejection (an error
that does not name the wrong argument), or other. Prints a table and writes JSON with the machine
to bench/results/fuzz-<date>.json.

    OMP_NUM_THREADS=1 python bench/fuzz.py                      # >= 10,000 cases
    python bench/fuzz.py --examples-per-test 50 -k inventory     # a quick look
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # also under `python -P`
from common import RESULTS, machine, table  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent

def count_cases(log: pathlib.Path) -> dict[str, int]:
    """{test id: examples run} from the DEEPSTOCK_FUZZ_LOG file (tests/helpers.py)."""
    cases: dict[str, int] = {}
    if log.exists():
        for line in log.read_text().splitlines():
            test = line.split("\t", 1)[0]
            cases[test] = cases.get(test, 0) + 1
    return cases


def classify(message: str) -> str:
    """The kind of a failure, from its assertion message (tests/test_fuzz_ops.py's wording)."""
    if re.search(r"worker died \(exit code -?\d+\)|Fatal Python error", message):
        return "crash"
    if re.search(r"does not name \[|valid input rejected: ", message):
        return "unnamed rejection"
    if re.search(r"differs from the reference|: returned", message):
        return "wrong result"
    return "other"


def parse_junit(path: pathlib.Path) -> dict[str, tuple[str, str]]:
    """{test id: (outcome, failure kind or "")} from pytest's JUnit XML."""
    outcomes = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        module = case.get("classname", "").replace(".", "/")
        test = f"{module}.py::{case.get('name')}"
        failure = case.find("failure")
        if failure is None:
            failure = case.find("error")
        if failure is not None:
            outcomes[test] = ("failed", classify(failure.get("message", "")))
        elif case.find("skipped") is not None:
            outcomes[test] = ("skipped", "")
        else:
            outcomes[test] = ("passed", "")
    return outcomes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples-per-test", type=int, default=None,
                        help="examples per fuzz test (default: enough for --min-cases)")
    parser.add_argument("--min-cases", type=int, default=10_000,
                        help="total examples to reach when --examples-per-test is not given")
    parser.add_argument("-k", default=None, help="pytest -k expression (a subset of the tests)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds for the pytest run")
    args = parser.parse_args()

    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_fuzz_*.py"))
    if not files:
        print("no tests/test_fuzz_*.py found", file=sys.stderr)
        return 2
    select = ["-k", args.k] if args.k else []
    collected = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", *select,
                                *files], cwd=ROOT, capture_output=True, text=True)
    tests = [line for line in collected.stdout.splitlines() if "::" in line]
    if not tests:
        print(collected.stdout + collected.stderr, file=sys.stderr)
        return 2
    per_test = args.examples_per_test or -(-args.min_cases // len(tests))

    with tempfile.TemporaryDirectory() as tmp:
        junit, log = pathlib.Path(tmp) / "junit.xml", pathlib.Path(tmp) / "cases.log"
        env = dict(os.environ, DEEPSTOCK_FUZZ_EXAMPLES=str(per_test), DEEPSTOCK_FUZZ_LOG=str(log))
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               f"--junitxml={junit}", *select, *files]
        print(f"{len(tests)} fuzz tests x {per_test} examples: {' '.join(cmd[3:])}",
              file=sys.stderr)
        start = time.perf_counter()
        try:
            run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                                 timeout=args.timeout)
            output, code = run.stdout + run.stderr, run.returncode
        except subprocess.TimeoutExpired as e:
            output, code = (e.stdout or b"").decode() + (e.stderr or b"").decode(), "timeout"
        seconds = time.perf_counter() - start
        outcomes = parse_junit(junit) if junit.exists() else {}
        cases = count_cases(log)
    # pytest itself died (a signal) or hung: every test without an outcome counts as crashed.
    died = isinstance(code, str) or (isinstance(code, int) and code < 0)

    rows, records = [], []
    for test in tests:
        outcome, kind = outcomes.get(test, ("crashed" if died else "not run", "crash" if died else ""))
        n = cases.get(test, 0)
        records.append(dict(test=test, cases=n, outcome=outcome, failure=kind))
        rows.append(dict(test=test.replace("tests/", ""), cases=n,
                         failures=int(outcome != "passed"), crashes=int(kind == "crash"),
                         kind=kind))
    total = sum(r["cases"] for r in records)
    kinds = [r["failure"] for r in records]
    summary = dict(cases=total, failed_tests=sum(r["outcome"] != "passed" for r in records),
                   crashes=kinds.count("crash"), wrong_results=kinds.count("wrong result"),
                   unnamed_rejections=kinds.count("unnamed rejection"),
                   other_failures=kinds.count("other"), seconds=round(seconds, 1),
                   pytest_exit=code, examples_per_test=per_test)
    print(table(rows, [("test", "test", ""), ("cases", "cases", "d"), ("failures", "failures", "d"),
                       ("crashes", "crashes", "d"), ("kind", "failure kind", "")]))
    print(f"\n{total} cases in {seconds:.0f} s; " +
          ", ".join(f"{k} {v}" for k, v in summary.items() if k not in ("cases", "seconds")))
    if code not in (0, "timeout") and not outcomes:
        print(output[-4000:], file=sys.stderr)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"fuzz-{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(
        dict(machine=machine(), files=files, summary=summary, tests=records,
             omp_num_threads=os.environ.get("OMP_NUM_THREADS")), indent=1))
    print(f"wrote {path}")
    return 0 if summary["failed_tests"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
