"""Data-parallel training over SKU shards with ``torch.distributed`` (launched by ``torchrun``).

Every rank draws the same episode (the same seeded generator), simulates its own contiguous
shard of the SKUs, and the gradients are averaged over the ranks (all-reduce) before each
optimizer step: with equal shards that is the gradient of the whole batch's mean cost, so W
ranks of B / W SKUs train the same policy as one process of B SKUs (up to float rounding).
Validation costs are summed over the ranks' shards of the validation episode, so every rank
takes the same early-stopping and learning-rate decisions. Rank 0 alone writes checkpoints,
metrics and the policy; the other ranks read its checkpoint on resume.

    torchrun --nproc-per-node 2 -m deepstock_fast.cli train --sales sales.csv  # gloo on CPU
    torchrun --nproc-per-node 8 -m deepstock_fast.cli train --sales sales.parquet \\
        --device cuda --batch-size 65536                                      # NCCL, 8 GPUs

(docs/DATA.md: several machines.) A process not launched by ``torchrun`` is a world of one:
every function here is then a no-op.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch
from torch import Tensor

from .envs.env import EPISODE_SKU_DIM, SHARED_FIELDS


class Context(NamedTuple):
    rank: int = 0
    world: int = 1

    @property
    def writer(self) -> bool:
        """True on the rank that writes files (rank 0)."""
        return self.rank == 0


def launched() -> bool:
    """True in a process that ``torchrun`` started as one of several (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: str = "cpu") -> tuple[Context, str]:
    """Joins the process group ``torchrun`` describes (gloo on CPU, NCCL on CUDA) unless
    joined already; returns (the context, this rank's device: ``cuda:<LOCAL_RANK>`` for a CUDA
    device without an index). A process not launched by torchrun gets Context(0, 1) and
    ``device`` unchanged."""
    if not launched():
        return context(), device
    import torch.distributed as dist
    cuda = torch.device(device).type == "cuda"
    if cuda and torch.device(device).index is None:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    if cuda:
        torch.cuda.set_device(torch.device(device))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return context(), device


def context() -> Context:
    """This process's rank and the world size (0 and 1 outside a process group)."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return Context(dist.get_rank(), dist.get_world_size())
    return Context()


def shard(batch: int, ctx: Context) -> slice:
    """The rows of a batch of ``batch`` SKUs that rank ``ctx.rank`` simulates (equal shards)."""
    if batch % ctx.world:
        raise ValueError(f"batch_size = {batch} SKUs must be a multiple of the {ctx.world} "
                         "ranks of a data-parallel run (equal shards)")
    size = batch // ctx.world
    return slice(ctx.rank * size, (ctx.rank + 1) * size)


def shard_episode(episode, ctx: Context):
    """This rank's SKUs of an ``InventoryEnv`` episode (a view; shared [1] parameters stay)."""
    if ctx.world == 1:
        return episode
    rows = shard(episode.demand.shape[0], ctx)
    out = {}
    for name, value in episode._asdict().items():
        if value is None or (name in SHARED_FIELDS and value.numel() == 1):
            out[name] = value
        else:
            out[name] = value.narrow(EPISODE_SKU_DIM[name], rows.start, rows.stop - rows.start)
    return type(episode)(**out)


def all_reduce_gradients(module: torch.nn.Module, ctx: Context) -> None:
    """Averages the gradients of ``module`` over the ranks (one flat all-reduce)."""
    if ctx.world == 1:
        return
    import torch.distributed as dist
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= ctx.world
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def mean(value: Tensor, ctx: Context) -> Tensor:
    """The mean of a per-rank value over the ranks (the same on every rank)."""
    if ctx.world == 1:
        return value
    import torch.distributed as dist
    total = value.detach().clone().to(torch.float64)
    dist.all_reduce(total)
    return total / ctx.world

