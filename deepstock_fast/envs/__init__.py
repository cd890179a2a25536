"""Environments on top of the native ops: instance configs, the batched :class:`InventoryEnv`,
the functional differentiable unroll, and (optional extras) gymnasium and torchrl adapters."""

from .config import COEFF_FEATURES, EXTRA_OBSERVATIONS, InstanceConfig
from .env import Episode, InventoryEnv
from .features import demand_features
from .simulate import SimState, SimulationResult, simulate

__all__ = ["COEFF_FEATURES", "EXTRA_OBSERVATIONS", "Episode", "InstanceConfig", "InventoryEnv",
           "SimState", "SimulationResult", "demand_features", "simulate"]
