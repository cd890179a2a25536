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
    label, callbacks, threads) -> (the best Policy, RunResult), or, given lists of policy
    configs and/or configs (a population, :mod:`.population`), (K Policies, K RunResults);
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


def parse_settings(items: list[str], fields) -> dict:
    """``key=value`` items (``deepstock train --set``) with each key among ``fields`` (a
    config's field names), as config values: widths (keys ending in ``hidden``) as int tuples
    (``64,64``), anything else read as an instance field's value is. A ``ValueError`` names
    the item."""
    from ..envs.config import parse_value

    values = {}
    for item in items:
        key, eq, text = item.partition("=")
        if not eq or key not in fields:
            raise ValueError(f"{item}: expected key=value with key among "
                             f"{', '.join(sorted(fields))}")
        if key.endswith("hidden"):
            try:
                widths = tuple(int(w) for w in text.split(","))
            except ValueError:
                widths = ()
            if not widths or min(widths) < 1:
                raise ValueError(f"{item}: widths must be positive integers like 64,64")
            values[key] = widths
        else:
            values[key] = parse_value(text)
    return values


# The trainer modules register themselves with the names above, so they are imported after them
# (in the order of TRAINERS).
from .common import RunResult  # noqa: E402
from .ds import DSConfig, train_ds  # noqa: E402
from .ppo import PPOConfig, train_ppo  # noqa: E402
from .ddpg import DDPGConfig, train_ddpg  # noqa: E402

__all__ = ["DDPGConfig", "DSConfig", "PPOConfig", "RunResult", "TRAINERS", "Trainer",
           "parse_settings", "register", "train_ddpg", "train_ds", "train_ppo"]
