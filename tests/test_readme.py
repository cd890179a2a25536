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
