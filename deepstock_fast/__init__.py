"""deepstock_fast: fast, differentiable inventory-control simulation for regularized deep RL.

Importing the package loads the native extension, which registers ``torch.ops.deepstock.*``.
"""

import contextlib

import torch

from . import _C  # registers torch.ops.deepstock.* (after torch, whose libraries it uses)
from . import ops, reference
from .ops import (
    POLICIES,
    EnvStepResult,
    RolloutResult,
    StepResult,
    base_stock_order,
    coeff_base_stock_order,
    coeff_order,
    env_step,
    inventory_position,
    inventory_step,
    observation,
    rollout,
)

__version__ = "0.1.0"


def build_info() -> dict:
    """How the extension was built: torch versions, the compilers (C++, nvcc's host), whether
    CUDA kernels were compiled and for which archs, and the CPU ops' SIMD loops on this machine
    (``cpu_simd``: "avx2", or "baseline" without AVX2 + FMA or with DEEPSTOCK_NO_AVX2 set)."""
    info = dict(_C.build_info())
    info["torch_version"] = torch.__version__
    info["cuda_available"] = torch.cuda.is_available()
    return info


@contextlib.contextmanager
def cuda_value_checks(enabled: bool):
    """Turn the value checks of the CUDA ops on or off inside a ``with`` block.

    With checks on (the default) a CUDA op synchronises once per call to raise on invalid input
    values (negative or NaN orders or demand, lead time out of range). With checks off nothing
    synchronises, and an environment with invalid inputs gets NaN outputs instead of an error.
    The CPU ops always check: it costs them nothing.
    """
    previous = _C.set_cuda_value_checks(enabled)
    try:
        yield
    finally:
        _C.set_cuda_value_checks(previous)


__all__ = [
    "POLICIES",
    "EnvStepResult",
    "RolloutResult",
    "StepResult",
    "base_stock_order",
    "build_info",
    "coeff_base_stock_order",
    "coeff_order",
    "cuda_value_checks",
    "env_step",
    "inventory_position",
    "inventory_step",
    "observation",
    "ops",
    "reference",
    "rollout",
]
