"""Every Python block of the README runs as written, in order, at small sizes."""

from __future__ import annotations

import math
import pathlib
import re

import torch

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"

#: The README's sizes and budgets -> small ones (each must appear: a README edit that drops one
#: fails here, so the list never goes stale).
SMALLER = {
    "B, L = 4096, 2": "B, L = 64, 2",
    "1_000_000": "1_000",
    "num_skus=4096": "num_skus=64",
    "DSConfig(epochs=400)": "DSConfig(epochs=2, batch_size=8, validation_skus=8)",
    "num_skus=1024,horizon=1000": "num_skus=16,horizon=100",
    "(100, 32, 365)": "(4, 4, 60)",
    "DSConfig(lr=lr, seed=s)": "DSConfig(lr=lr, seed=s, epochs=2, batch_size=8, validation_skus=8)",
    "range(4)]": "range(1)]",
}


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    text = README.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 5
    code = "\n".join(blocks)
    for big, small in SMALLER.items():
        assert big in code, f"README no longer has {big!r}: update SMALLER"
        code = code.replace(big, small)
    monkeypatch.chdir(tmp_path)  # the trainer example writes runs/ here
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)  # noqa: S102  (the README's own code)
    assert (tmp_path / "runs" / "l4p39" / "policy.pt").exists()
    assert math.isfinite(namespace["test"].average_cost_se)
    assert namespace["sol"].average_cost > 0


def test_readme_sales_workflow_runs(tmp_path, monkeypatch):
    """The shell commands of "From a sales file to a tested policy", at small sizes: the
    synthetic file, a run with its test report, and the data-parallel run (2 gloo ranks)."""
    import json
    import shlex
    import subprocess
    import sys

    from deepstock_fast import cli

    text = README.read_text().split("## From a sales file to a tested policy", 1)[1]
    block = re.search(r"```bash\n(.*?)```", text, re.S).group(1).replace("\\\n", " ")
    commands = [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]
    assert [c[0] for c in commands] == [".venv/bin/deepstock"] * 2 + [".venv/bin/torchrun"]
    monkeypatch.chdir(tmp_path)
    small = {"1000": "30"}
    quick = ["--epochs", "2", "--eval-every", "1", "--no-progress"]
    for command in commands:
        args = [small.get(a, a) for a in command[1:]]
        if command[0].endswith("deepstock"):
            assert cli.main(args + (quick if args[0] == "train" else [])) == 0
        else:
            torchrun = pathlib.Path(sys.executable).with_name("torchrun")
            subprocess.run([str(torchrun), *args, *quick], check=True, timeout=300,
                           env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    results = json.loads(next(tmp_path.glob("runs/sales-ds/results.json")).read_text())
    assert {r["policy"] for r in results["backtest"]["by_category"]} >= {
        "ds + none", "ds + base", "best base-stock per SKU"}
    assert len(results["rolling_origin"]) == 2
    assert (tmp_path / "runs" / "sales-2ranks" / "base" / "policy.pt").exists()
