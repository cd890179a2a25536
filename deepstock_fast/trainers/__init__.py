"""Trainers of regularized policies: DS (pathwise, through the differentiable simulator)."""

from .common import RunResult
from .ds import DSConfig, train_ds

__all__ = ["DSConfig", "RunResult", "train_ds"]
