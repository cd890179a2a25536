"""Trainers of regularized policies: DS (pathwise, through the differentiable simulator), PPO
and DDPG, all on the batched device environment with the same policy module and heads."""

from .common import RunResult
from .ddpg import DDPGConfig, train_ddpg
from .ds import DSConfig, train_ds
from .ppo import PPOConfig, train_ppo

__all__ = ["DDPGConfig", "DSConfig", "PPOConfig", "RunResult", "train_ddpg", "train_ds",
           "train_ppo"]
