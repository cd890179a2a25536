"""CUDA kernels: parity with the CPU kernels (the same per-element math), opcheck, bad input.

Skipped, with the reason, when there is no GPU or the extension was built without CUDA.
"""

from __future__ import annotations

import math

import pytest
import torch

import deepstock_fast as ds

from helpers import env_step_args, requires_cuda, step_args, step_inputs

pytestmark = requires_cuda


def to(kw, device):
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in kw.items()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("lost_sales", [True, False])
@pytest.mark.parametrize("max_lead,days", [(0, 1), (1, 1), (4, 2), (16, 3), (5, 70)])
def test_step_forward_and_backward_parity(max_lead, days, lost_sales, dtype):
    kw = step_inputs(batch=3001, max_lead=max_lead, days=days, lost_sales=lost_sales, dtype=dtype)
    names = ("on_hand", "pipeline", "order", "holding_cost", "penalty_cost", "order_cost")
    results = []
    for device in ("cpu", "cuda"):
        args = to(kw, device)
        inputs = [args[n].clone().requires_grad_() for n in names]
        out = ds.inventory_step(**dict(args, **dict(zip(names, inputs))))
        loss = out.next_on_hand.sum() + out.next_pipeline.sum() * 0.3 + out.cost.sum()
        grads = torch.autograd.grad(loss, inputs)
        results.append([t.detach().cpu() for t in (*out, *grads)])
    for cpu, cuda in zip(*results):
        torch.testing.assert_close(cuda, cpu)


@pytest.mark.parametrize("policy", list(ds.POLICIES))
@pytest.mark.parametrize("max_lead", [0, 1, 4, 9, 33])
def test_rollout_parity(policy, max_lead):
    g = torch.Generator().manual_seed(max_lead)
    batch, horizon = 4099, 50
    demand = torch.poisson(torch.full((batch, horizon), 5.0, dtype=torch.float64), generator=g)
    lead = torch.randint(0, max_lead + 1, (batch,), generator=g)
    params = {"base_stock": [[15.0]], "capped_base_stock": [[15.0, 7.0]], "constant": [[5.0]],
              "s_S": [[8.0, 20.0]]}[policy]
    kw = dict(review_period=2, warmup=4, holding_cost=1.0, penalty_cost=9.0, order_cost=0.1)
    cpu = ds.rollout(demand, policy, torch.tensor(params, dtype=torch.float64), lead,
                     pipeline=demand.new_zeros(batch, max_lead), **kw)
    cuda = ds.rollout(demand.cuda().T.contiguous().T, policy,
                      torch.tensor(params, dtype=torch.float64, device="cuda"), lead.cuda(),
                      pipeline=demand.new_zeros(batch, max_lead, device="cuda"), **kw)
    for c, g_ in zip(cpu, cuda):
        torch.testing.assert_close(g_.cpu(), c)


def test_projection_parity():
    g = torch.Generator().manual_seed(0)
    coeff = torch.randn(5000, 5, generator=g, dtype=torch.float64)
    feats = torch.rand(5000, 5, generator=g, dtype=torch.float64) * 10
    ip = torch.rand(5000, generator=g, dtype=torch.float64) * 20
    for device in ("cpu", "cuda"):
        c, f, i = (t.to(device).requires_grad_() for t in (coeff, feats, ip))
        out = ds.coeff_base_stock_order(c, f, i, 30.0)
        grads = torch.autograd.grad(out.sum(), (c, f, i))
        if device == "cpu":
            want = [out.detach(), *grads]
        else:
            for got, w in zip([out.detach(), *grads], want):
                torch.testing.assert_close(got.cpu(), w)


@pytest.mark.parametrize("max_lead,days", [(0, 1), (2, 1), (4, 1), (7, 1), (3, 2)])
def test_env_step_parity(max_lead, days):

    for dtype in (torch.float32, torch.float64):
        args = env_step_args(batch=3001, max_lead=max_lead, days=days, dtype=dtype)
        cpu = ds.env_step(*args)
        cuda = ds.env_step(*(a.cuda() if isinstance(a, torch.Tensor) else a for a in args))
        for name, c, g in zip(cpu._fields, cpu, cuda):
            torch.testing.assert_close(g.cpu(), c, msg=lambda m: f"{name}: {m}")


def test_opcheck_cuda():
    kw = to(step_inputs(batch=64, max_lead=3, days=2), "cuda")
    for n in ("on_hand", "pipeline", "order"):
        kw[n] = kw[n].requires_grad_()
    torch.library.opcheck(torch.ops.deepstock.inventory_step.default, step_args(kw))
    t = torch.rand(64, device="cuda", dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(torch.ops.deepstock.base_stock_order.default,
                          (t, torch.rand(64, device="cuda", dtype=torch.float64),
                           torch.tensor([0.5], device="cuda", dtype=torch.float64)))
    x = [torch.rand(shape, device="cuda", dtype=torch.float64, requires_grad=True)
         for shape in ((64,), (64, 3), (64, 5))]
    torch.library.opcheck(torch.ops.deepstock.observation.default,
                          (*x, torch.rand(64, device="cuda", dtype=torch.float64) + 0.5))

    torch.library.opcheck(torch.ops.deepstock.env_step.default,
                          env_step_args(batch=64, device="cuda"))


def test_mixed_devices_rejected():
    kw = to(step_inputs(batch=8), "cuda")
    kw["order"] = kw["order"].cpu()
    with pytest.raises(RuntimeError, match="order is on cpu"):
        ds.inventory_step(**kw)


def test_bad_values_raise_and_checks_off_gives_nan():
    kw = to(step_inputs(batch=8), "cuda")
    kw["order"][3] = math.nan
    with pytest.raises(RuntimeError, match="order must be non-negative"):
        ds.inventory_step(**kw)
    with ds.cuda_value_checks(False):
        out = ds.inventory_step(**kw)
    assert torch.isnan(out.cost[3]).all() and torch.isfinite(out.cost[torch.arange(8) != 3]).all()


# ---- the environment and the trainers on the device ------------------------------------------
def test_env_on_cuda_equals_cpu_on_the_same_episode_with_gradients():
    from deepstock_fast.envs import InstanceConfig, InventoryEnv
    config = InstanceConfig.from_name("zipkin:L=3,p=9,horizon=60,warmup=10,num_skus=256")
    config = config.replace(dtype="float64")
    cpu, gpu = InventoryEnv(config, "cpu", seed=3), InventoryEnv(config, "cuda", seed=3)
    episode = cpu.sample_episode()
    on_gpu = type(episode)(*(None if t is None else t.cuda() for t in episode))
    results = []
    for env, ep in ((cpu, episode), (gpu, on_gpu)):
        level = torch.tensor(22.0, dtype=torch.float64, device=env.device, requires_grad=True)
        out = env.simulate(lambda s: ds.base_stock_order(level.expand_as(s.on_hand),
                                                         s.inventory_position), ep)
        loss = out.average_cost.mean()
        loss.backward()
        results.append((loss.detach().cpu(), level.grad.cpu()))
    torch.testing.assert_close(results[1], results[0])


@pytest.mark.parametrize("algo", ["ds", "ppo", "ddpg"])
def test_trainers_run_on_cuda(algo):
    from deepstock_fast.policies import PolicyConfig
    from deepstock_fast.trainers import (DDPGConfig, DSConfig, PPOConfig, train_ddpg, train_ds,
                                         train_ppo)
    train, config = {
        "ds": (train_ds, DSConfig(epochs=6, batch_size=16, validation_skus=32, eval_every=2)),
        "ppo": (train_ppo, PPOConfig(total_steps=2048, num_envs=16, n_steps=256, batch_size=64,
                                     update_epochs=2, validation_skus=32, eval_every=2)),
        "ddpg": (train_ddpg, DDPGConfig(total_steps=1024, num_envs=16, batch_size=32,
                                        learning_starts=64, gradient_steps=2, validation_skus=32,
                                        eval_every=16, buffer_size=512)),
    }[algo]
    policy, result = train("zipkin:L=1,p=9,horizon=40,warmup=10", PolicyConfig(hidden=(16,)),
                           config, device="cuda", progress=False)
    assert result.stopped in ("completed", "early_stopped"), result.message
    assert math.isfinite(result.best_validation)
    assert all(p.is_cuda and torch.isfinite(p).all() for p in policy.parameters())
