"""Random streams derived per purpose, so that no two purposes ever share one.

A run's seed is never used as a generator seed directly: ``stream(seed, "train")`` and
``stream(seed, "test")`` hash the pair (NumPy's ``SeedSequence``) into independent 63-bit seeds.
The training demand of seed s therefore never equals the test demand of seed s or of any other
seed, across commands (``deepstock train``, ``eval``, ``baselines``) and seed sweeps; with
offsets such as ``seed + 2`` the run with seed s + 2 trained on the test demand of seed s.
"""

from __future__ import annotations

import numpy as np
import torch

#: Every purpose a stream is drawn for, in one place (the index is part of the hash: append only).
PURPOSES = (
    "train",         # training episodes (DS batches, PPO/DDPG environment)
    "validation",    # the fixed validation episode
    "test",          # test episodes: evaluation.evaluate, deepstock eval / baselines
    "baseline_fit",  # the training paths on which classical baselines are searched
    "normalizer",    # the episode the input normalisation is fitted on
    "reward_scale",  # the episode that sets PPO/DDPG's reward scale
    "weights",       # initial network weights
    "exploration",   # PPO's action noise, DDPG's exploration noise
    "minibatch",     # PPO's minibatch order, DDPG's replay sampling
    "dataset",       # the fixed training trajectories of a dataset instance (``trajectories``)
)


def stream(seed: int, purpose: str) -> int:
    """The seed of ``purpose``'s stream for a run seeded with ``seed`` (any int >= 0)."""
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {PURPOSES}, got {purpose!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    state = np.random.SeedSequence([int(seed), PURPOSES.index(purpose)]).generate_state(2)
    return (int(state[0]) << 32 | int(state[1])) >> 1  # 63 bits: fits torch's manual_seed


def generator(seed: int, purpose: str, device="cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``stream(seed, purpose)``."""
    return torch.Generator(device).manual_seed(stream(seed, purpose))
