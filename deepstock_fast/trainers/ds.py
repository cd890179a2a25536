"""DS: differentiable-simulator (pathwise, HDPO-style) training of a regularized policy.

Each epoch draws a batch of demand episodes, unrolls the policy over the horizon with autograd
through ``inventory_step`` and the projection ops (``InventoryEnv.simulate``), and takes one Adam
step on the average cost per SKU-day after warm-up. Every ``eval_every`` epochs the policy is
evaluated on a fixed validation episode; the learning rate drops on plateaus
(ReduceLROnPlateau), training stops after ``patience`` evaluations without improvement, and the
best weights are kept. Runs the same on CPU and CUDA.

Checkpoints (``out_dir/checkpoint.pt``, written atomically every ``checkpoint_every`` epochs, at
the end and on Ctrl-C) hold everything the loop needs, including the episode generator's state,
so an interrupted run resumed with ``resume=True`` ends exactly where an uninterrupted one would
(on CPU with a fixed seed). A NaN or infinite loss or gradient stops the run with a message and
leaves the last good checkpoint in place.
"""

from __future__ import annotations

import dataclasses
import pathlib
from dataclasses import dataclass

import torch

from .. import distributed
from ..envs import InstanceConfig
from ..policies import Policy, PolicyConfig
from . import TRAINERS, register
from .common import (NON_NEGATIVE, SEEDS, Diverged, Range, RunResult, check_fields, run_loop,
                     setup)


@dataclass
class DSConfig:
    """Hyperparameters (the paper's DS search space, docs/METHOD.md: lr in [4e-4, 0.1], hidden 32..128 wide,
    ReduceLROnPlateau factor in [0.5, 0.95], up to 3000 epochs, patience 30)."""

    epochs: int = 400
    batch_size: int | None = 128      # SKUs (trajectories) per epoch; None: the instance's
    lr: float = 3e-3
    lr_factor: float = 0.7            # ReduceLROnPlateau factor, on the validation cost
    lr_patience: int = 4              # evaluations without improvement before the lr drops
    min_lr: float = 1e-5
    grad_clip: float = 10.0           # max gradient norm
    eval_every: int = 5               # epochs between validations
    patience: int = 30                # evaluations without improvement before stopping
    validation_skus: int = 512
    fixed_train_set: bool = False     # True: the same training episode every epoch (small data)
    checkpoint_every: int = 20        # epochs
    time_budget: float | None = None  # seconds of training, then stop (keeping the best)
    seed: int = 0

    def __post_init__(self):
        check_fields(self, lr_factor=Range(0.0, 1.0, open_low=True, open_high=True),
                     min_lr=NON_NEGATIVE, seed=SEEDS)

@register("ds", DSConfig, hidden=(64, 64))
def train_ds(instance: InstanceConfig | str, policy_config: PolicyConfig | None = None,
             config: DSConfig | None = None, *, device: str | torch.device = "cpu",
             out_dir: str | pathlib.Path | None = None, resume: bool = False,
             progress: bool = True, label: str = "DS",
             callbacks=()) -> tuple[Policy, RunResult]:
    """Trains a policy on ``instance`` and returns (the best policy, the run's record).

    With ``out_dir``, writes ``checkpoint.pt`` (resumable), ``policy.pt`` (the best policy) and
    ``metrics.csv``; ``resume=True`` continues from ``out_dir/checkpoint.pt``. ``callbacks`` get
    each validation's metrics and may stop the run (:func:`~.common.run_loop`).
    """
    policy_config = policy_config or PolicyConfig(hidden=TRAINERS["ds"].hidden)
    config = config or DSConfig()
    # data-parallel under torchrun: this rank's shard of every episode (distributed.py)
    ctx = distributed.context()
    if ctx.world > 1 and config.time_budget is not None:
        raise ValueError("time_budget: ranks would stop at different epochs; give a data-"
                         "parallel run a number of epochs")
    run = setup(instance, policy_config, train_skus=config.batch_size,
                validation_skus=config.validation_skus, seed=config.seed, device=device)
    instance, train_env, policy = run.instance, run.env, run.policy
    distributed.shard(train_env.num_envs, ctx)  # equal shards, or an error now
    optimizer = torch.optim.Adam(policy.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=config.lr_factor, patience=config.lr_patience, min_lr=config.min_lr)
    fixed_episode = train_env.sample_episode() if config.fixed_train_set else None

    def epoch(i: int) -> float:
        episode = fixed_episode if fixed_episode is not None else train_env.sample_episode()
        episode = distributed.shard_episode(episode, ctx)
        loss = train_env.simulate(policy, episode).average_cost.mean()
        if not torch.isfinite(distributed.mean(loss, ctx)):  # every rank decides alike
            raise Diverged(f"loss is {float(loss.detach())} at epoch {i + 1}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        distributed.all_reduce_gradients(policy, ctx)
        norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), config.grad_clip)
        if not torch.isfinite(norm):
            raise Diverged(f"gradient norm is {float(norm)} at epoch {i + 1}")
        optimizer.step()
        return float(loss.detach())

    result = run_loop(
        label=label, total=config.epochs, iterate=epoch,
        validate=distributed.validator(run, ctx),
        eval_every=config.eval_every, patience=config.patience,
        checkpoint_every=config.checkpoint_every, time_budget=config.time_budget,
        policy=policy, stateful={"policy": policy, "optimizer": optimizer,
                                 "scheduler": scheduler},
        generators={"train": train_env.generator},
        identity={"algo": "ds", "instance": instance.to_dict(),
                  "config": dataclasses.asdict(config),
                  "policy_config": dataclasses.asdict(policy.config)},
        out_dir=out_dir, resume=resume, progress=progress and ctx.writer,
        callbacks=callbacks if ctx.writer else (), write=ctx.writer,
        on_validation=scheduler.step, healthy=lambda: healthy(policy))
    return policy, result


@torch.no_grad()
def healthy(policy: Policy) -> bool:
    """False when the weights, or the outputs on typical inputs (the normalisation's mean and
    one standard deviation either side), are not finite: a step too large for finite losses
    and gradients can still blow the network up, and the ops then refuse its orders."""
    if not all(bool(torch.isfinite(p).all()) for p in policy.parameters()):
        return False
    probe = policy.obs_mean + torch.tensor([[0.0], [1.0], [-1.0]]).to(policy.obs_std) \
        * policy.obs_std
    return bool(torch.isfinite(policy.raw(probe)).all())
