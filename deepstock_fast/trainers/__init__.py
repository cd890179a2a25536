"""Trainers of regularized policies: DS (pathwise, through the differentiable simulator), PPO
and DDPG, all on the batched device environment with the same policy module and heads.

:data:`TRAINERS` maps each algorithm (``deepstock train --algo``, the benchmarks) to its
:class:`Trainer`. A trainer module registers its train function with
``@register(name, ConfigClass, hidden=...)`` and is imported below.
"""

from __future__ import annotations

from typing import Callable, NamedTuple


class Trainer(NamedTuple):
    """config: the hyperparameter dataclass (its defaults are the algorithm's);
    train(instance, policy_config=None, config=None, *, device, out_dir, resume, progress,
    label) -> (the best Policy, RunResult);
    hidden: the hidden widths of the policy when none is given."""

    config: type
    train: Callable
    hidden: tuple[int, ...]


#: algorithm name -> :class:`Trainer`, in the order the command line lists them
TRAINERS: dict[str, Trainer] = {}


def register(name: str, config: type, hidden: tuple[int, ...]):
    """Function decorator: the train function of algorithm ``name``."""
    def add(train: Callable) -> Callable:
        if name in TRAINERS:
            raise ValueError(f"trainer {name!r} is registered already")
        TRAINERS[name] = Trainer(config, train, tuple(hidden))
        return train
    return add


# The trainer modules register themselves with the names above, so they are imported after them
# (in the order of TRAINERS).
from .common import RunResult  # noqa: E402
from .ds import DSConfig, train_ds  # noqa: E402
from .ppo import PPOConfig, train_ppo  # noqa: E402
from .ddpg import DDPGConfig, train_ddpg  # noqa: E402

__all__ = ["DDPGConfig", "DSConfig", "PPOConfig", "RunResult", "TRAINERS", "Trainer",
           "register", "train_ddpg", "train_ds", "train_ppo"]
