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

import math
import pathlib
from dataclasses import dataclass

import torch

from .. import distributed
from ..envs import InstanceConfig
from ..policies import Policy, PolicyConfig
from . import TRAINERS, register
from .common import (NON_NEGATIVE, SEEDS, MemberPlan, Range, check_fields, run_members,
                     setup)
from .population import (PlateauLR, StackedAdam, StackedPolicy, StackedWeights,
                         clip_grad_norms_, concat_envs, concat_episodes, identity,
                         train_members, validation)


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

#: DSConfig fields that members of one population may differ in; the others (batch and
#: validation SKUs, the schedule of validations and checkpoints, a fixed training set) must
#: match, and lists mixing them are split into populations (:func:`~.population.train_members`).
PER_MEMBER = ("epochs", "lr", "lr_factor", "lr_patience", "min_lr", "grad_clip", "patience",
              "time_budget", "seed")


@register("ds", DSConfig, hidden=(64, 64))
def train_ds(instance: InstanceConfig | str,
             policy_config: PolicyConfig | list[PolicyConfig] | None = None,
             config: DSConfig | list[DSConfig] | None = None, *,
             device: str | torch.device = "cpu", out_dir: str | pathlib.Path | None = None,
             resume: bool = False, progress: bool = True, label: str = "DS", callbacks=(),
             threads: int | None = None):
    """Trains a policy on ``instance`` and returns (the best policy, the run's record).

    With ``out_dir``, writes ``checkpoint.pt`` (resumable), ``policy.pt`` (the best policy) and
    ``metrics.csv``; ``resume=True`` continues from ``out_dir/checkpoint.pt``. ``callbacks`` get
    each validation's metrics and may stop the run (:func:`~.common.run_members`).

    Population: given a list of K policy configs and/or K configs (a single one of either is
    used for every member), trains the K members together (:mod:`~.population`) and returns
    (K policies, K RunResults) in the input order; member k ends as ``train_ds`` of its
    configurations alone would. With ``out_dir``: ``member-<k>/policy.pt`` and
    ``member-<k>/metrics.csv`` per member and one checkpoint for all (``checkpoint-<g>.pt``
    for each further group of other shapes); callbacks' metrics then carry ``member``: k.
    ``threads``: torch threads (None: from the work's size, :func:`~.population.choose_threads`).

    Under ``torchrun`` (several processes), one configuration trains data-parallel over SKU
    shards (:mod:`deepstock_fast.distributed`): rank 0 writes the files.
    """
    ctx = distributed.context()
    if ctx.world > 1:
        if isinstance(config, (list, tuple)) or isinstance(policy_config, (list, tuple)):
            raise ValueError("config: a data-parallel run trains one configuration, not a "
                             "population")
        if config is not None and config.time_budget is not None:
            raise ValueError("time_budget: ranks would stop at different epochs; give a data-"
                             "parallel run a number of epochs")
    return train_members(
        "ds", _train_group, instance, policy_config, config, per_member=PER_MEMBER,
        default_policy=lambda: PolicyConfig(hidden=TRAINERS["ds"].hidden),
        config_class=DSConfig, device=device, out_dir=out_dir, resume=resume,
        progress=progress, label=label, callbacks=callbacks, threads=threads,
        skus=lambda c: c.batch_size or 128, write=ctx.writer)


def _train_group(instance: InstanceConfig, policy_configs: list[PolicyConfig],
                 configs: list[DSConfig], *, members, checkpoint_path, dirs, population,
                 resume, progress, label, callbacks, interruption, device, write=True):
    """One population of DS members of the same shapes: (K policies, K RunResults). Under
    torchrun, K = 1 and each rank simulates its shard of every episode."""
    K, first = len(configs), configs[0]
    ctx = distributed.context()
    runs = [setup(instance, pc, train_skus=c.batch_size, validation_skus=c.validation_skus,
                  seed=c.seed, device=device) for pc, c in zip(policy_configs, configs)]
    instance = runs[0].instance
    policy = StackedPolicy([r.policy for r in runs])
    distributed.shard(runs[0].env.num_envs, ctx)  # equal shards, or an error now
    params = list(policy.parameters())
    optimizer = StackedAdam(params, [c.lr for c in configs])
    scheduler = PlateauLR(optimizer, [c.lr_factor for c in configs],
                          [c.lr_patience for c in configs], [c.min_lr for c in configs])
    fixed = [r.env.sample_episode() if first.fixed_train_set else None for r in runs]
    envs: dict = {}  # the training environment of the members still training

    def epoch(done: list[int], active: list[bool]):
        # the members still training, on their SKUs alone: a stopped member costs nothing
        members = [k for k, a in enumerate(active) if a]
        if tuple(members) not in envs:
            envs.clear()
            envs[tuple(members)] = concat_envs([runs[k].env for k in members])
        episode = concat_episodes([fixed[k] if fixed[k] is not None else
                                   runs[k].env.sample_episode() for k in members])
        episode = distributed.shard_episode(episode, ctx)  # the whole episode in one process
        with policy.restricted(None if len(members) == K else members):
            cost = envs[tuple(members)].simulate(policy, episode).average_cost
        loss = cost.view(len(members), -1).mean(1)  # [K']
        finite = torch.isfinite(distributed.mean(loss, ctx))  # every rank decides alike
        optimizer.zero_grad()
        # each member's gradient is that of its own loss: the members share no weights (a
        # stopped member's gradient is 0, and its weights take no step)
        torch.where(finite, loss, 0.0).sum().backward()
        distributed.all_reduce_gradients(policy, ctx)
        norms = clip_grad_norms_(params, [c.grad_clip for c in configs]).tolist()
        losses = [math.nan] * K
        for k, value in zip(members, distributed.mean(loss.detach(), ctx).tolist()):
            losses[k] = value
        problems = {}
        for k in members:
            if not math.isfinite(losses[k]):
                problems[k] = f"loss is {losses[k]}"
            elif not math.isfinite(norms[k]):
                problems[k] = f"gradient norm is {norms[k]}"
        optimizer.step([a and k not in problems for k, a in enumerate(active)])
        return losses, problems

    results = run_members(
        label=label, plans=[MemberPlan(c.epochs, c.patience, c.time_budget, d)
                            for c, d in zip(configs, dirs)],
        iterate=epoch, validate=validation(runs, policy, ctx), eval_every=first.eval_every,
        checkpoint_every=first.checkpoint_every, weights=StackedWeights(policy, instance),
        stateful={"policy": policy, "optimizer": optimizer, "scheduler": scheduler},
        generators={f"train{'' if K == 1 else k}": r.env.generator
                    for k, r in enumerate(runs)},
        identity=identity("ds", instance, policy_configs, configs, members, population,
                          [r.policy for r in runs]),
        checkpoint_path=checkpoint_path, resume=resume, progress=progress and write,
        on_validation=scheduler.step, lrs=lambda: optimizer.lr, unit="epoch",
        healthy=policy.healthy, callbacks=callbacks if write else [],
        interruption=interruption, population=population, member_ids=members,
        check_every_iteration=True, write=write)
    return [policy.member(k) for k in range(K)], results


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
