"""Environments on top of the native ops. For now: the functional, differentiable unroll."""

from .simulate import SimState, SimulationResult, simulate

__all__ = ["SimState", "SimulationResult", "simulate"]
