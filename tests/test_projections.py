"""Regularizer projections: reference, closed forms, right-derivative kinks, gradcheck, opcheck."""

from __future__ import annotations

import math

import pytest
import torch

import deepstock_fast as ds
from deepstock_fast import reference

OPS = {
    "base_stock_order": (ds.base_stock_order, reference.base_stock_order),
    "coeff_order": (ds.coeff_order, reference.coeff_order),
    "coeff_base_stock_order": (ds.coeff_base_stock_order, reference.coeff_base_stock_order),
}


def make_args(name, batch=50, m=5, dtype=torch.float64, seed=0, max_order="per_env"):
    g = torch.Generator().manual_seed(seed)
    ip = torch.rand(batch, generator=g, dtype=dtype) * 40 - 5
    coeff = torch.randn(batch, m, generator=g, dtype=dtype) * 3
    features = torch.rand(batch, m, generator=g, dtype=dtype) * 10
    target = torch.rand(batch, generator=g, dtype=dtype) * 50
    cap = {"per_env": torch.rand(batch, generator=g, dtype=dtype) * 30 + 1,
           "scalar": 20.0, "inf": math.inf}[max_order]
    return {"base_stock_order": (target, ip, cap),
            "coeff_order": (coeff, features, cap),
            "coeff_base_stock_order": (coeff, features, ip, cap)}[name]


@pytest.mark.parametrize("max_order", ["per_env", "scalar", "inf"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", OPS)
def test_matches_reference(name, dtype, max_order):
    op, ref = OPS[name]
    for seed in range(3):
        args = make_args(name, dtype=dtype, seed=seed, max_order=max_order)
        got, want = op(*args), ref(*args)
        torch.testing.assert_close(got, want)
        assert (got >= 0).all()


def test_closed_forms():
    ip = torch.tensor([3.0, 10.0, -2.0, 0.0])
    target = torch.tensor([10.0, 4.0, 50.0, 0.0])
    assert ds.base_stock_order(target, ip, 40.0).tolist() == [7.0, 0.0, 40.0, 0.0]
    coeff = torch.tensor([[1.0, 2.0], [0.5, -1.0]])
    feats = torch.tensor([[3.0, 1.0], [4.0, 6.0]])
    assert ds.coeff_order(coeff, feats).tolist() == [5.0, 0.0]
    assert ds.coeff_base_stock_order(coeff, feats, torch.tensor([1.0, -10.0])).tolist() == [4.0, 6.0]


def test_right_derivative_at_kinks():
    # u = target - IP exactly 0 passes the gradient; exactly max_order does not.
    target = torch.tensor([5.0, 25.0, 10.0], requires_grad=True)
    ip = torch.tensor([5.0, 5.0, 0.0])
    for op in (ds.base_stock_order, reference.base_stock_order):
        (grad,) = torch.autograd.grad(op(target, ip, 20.0).sum(), target)
        assert grad.tolist() == [1.0, 0.0, 1.0]


@pytest.mark.parametrize("name", OPS)
def test_gradcheck(name):
    args = make_args(name, batch=20, m=3, seed=4)
    inputs = [a.clone().requires_grad_() for a in args if isinstance(a, torch.Tensor)][:-1]
    cap = args[-1]
    op = OPS[name][0]
    assert torch.autograd.gradcheck(lambda *x: op(*x, cap), inputs)


@pytest.mark.parametrize("name", OPS)
def test_backward_matches_reference_autograd(name):
    args = make_args(name, seed=9)
    grads = []
    for fn in OPS[name]:
        inputs = [a.clone().requires_grad_() for a in args[:-1]]
        out = fn(*inputs, args[-1])
        grads.append(torch.autograd.grad((out * torch.arange(out.numel())).sum(), inputs))
    for g, w in zip(*grads):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize("name", OPS)
def test_opcheck(name):
    args = make_args(name, batch=10, m=3)
    tensors = [a.requires_grad_() for a in args[:-1]] + [torch.tensor([15.0], dtype=torch.float64)]
    torch.library.opcheck(getattr(torch.ops.deepstock, name).default, tuple(tensors))
    args32 = [a.detach().float() for a in tensors]
    torch.library.opcheck(getattr(torch.ops.deepstock, name).default, tuple(args32))


@pytest.mark.parametrize("name", OPS)
def test_opcheck_backward_op(name):
    args = make_args(name, batch=10, m=3)
    tensors = tuple(args[:-1]) + (torch.tensor([15.0], dtype=torch.float64),)
    grad = torch.randn(10, dtype=torch.float64)
    torch.library.opcheck(getattr(torch.ops.deepstock, f"{name}_backward").default,
                          (grad,) + tensors)
