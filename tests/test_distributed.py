"""Data-parallel DS over SKU shards (torch.distributed, gloo on CPU): two processes with half the
batch each train the same policy as one process with the whole batch; rank 0 alone writes, and
a resumed two-process run ends where an uninterrupted one does."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from deepstock_fast import distributed
from deepstock_fast.policies import PolicyConfig
from deepstock_fast.trainers import DSConfig, train_ds

INSTANCE = "zipkin:L=2,p=9,horizon=60,warmup=10"


def config(epochs: int) -> DSConfig:
    return DSConfig(epochs=epochs, batch_size=16, validation_skus=16, eval_every=2,
                    checkpoint_every=2, lr=0.01)


def train(out_dir, epochs, resume=False):
    torch.set_num_threads(1)
    policy, result = train_ds(INSTANCE, PolicyConfig(hidden=(16,)), config(epochs),
                              out_dir=out_dir, resume=resume, progress=False)
    return policy, result


def worker(rank, world, port, out_dir, epochs, resume, result_file):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world),
                      RANK=str(rank), LOCAL_RANK=str(rank))
    ctx, device = distributed.init("cpu")
    assert ctx == distributed.Context(rank, world) and device == "cpu"
    try:
        policy, result = train(out_dir, epochs, resume)
        torch.save({"state": policy.state_dict(), "history": result.history},
                   f"{result_file}.{rank}")
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_two(tmp_path, out_dir, epochs, resume=False):
    result = tmp_path / "result"
    mp.spawn(worker, args=(2, free_port(), out_dir, epochs, resume, str(result)), nprocs=2)
    return [torch.load(f"{result}.{r}", weights_only=True) for r in range(2)]


def close(a: dict, b: dict) -> bool:
    return all(torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4) for k in a)


def test_two_processes_train_as_one_with_the_same_total_batch(tmp_path):
    single, single_result = train(None, 4)
    two = run_two(tmp_path, tmp_path / "two", 4)
    assert all(torch.equal(two[0]["state"][k], two[1]["state"][k]) for k in two[0]["state"])
    assert close(two[0]["state"], single.state_dict())
    costs = [h["validation_cost"] for h in two[0]["history"]]
    assert costs == pytest.approx([h["validation_cost"] for h in single_result.history],
                                  rel=1e-4)
    # rank 0 alone wrote the run's files
    assert sorted(p.name for p in (tmp_path / "two").iterdir() if not p.name.startswith(".")) \
        == ["checkpoint.pt", "metrics.csv", "policy.pt"]
    # resumed with a budget of 6 epochs, it ends as one process trained for 6
    resumed = run_two(tmp_path, tmp_path / "two", 6, resume=True)
    assert close(resumed[0]["state"], train(None, 6)[0].state_dict())


def test_unequal_shards_are_refused():
    with pytest.raises(ValueError, match="batch_size = 15 SKUs must be a multiple of the 2"):
        distributed.shard(15, distributed.Context(0, 2))
