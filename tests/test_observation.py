"""The observation op: equals the reference, gradients (gradcheck), opcheck, bad input."""

from __future__ import annotations

import pytest
import torch

import deepstock_fast as ds
from deepstock_fast import reference


def args(batch=33, lead=3, width=5, dtype=torch.float64, seed=0, grad=False):
    g = torch.Generator().manual_seed(seed)
    x = [torch.rand(shape, generator=g, dtype=dtype) * 10 - 2
         for shape in ((batch,), (batch, lead), (batch, width))]
    scale = torch.rand(batch, generator=g, dtype=dtype) * 5 + 0.5
    return [t.requires_grad_(grad) for t in (*x, scale)]


@pytest.mark.parametrize("lead,width", [(0, 4), (1, 0), (2, 3), (3, 1), (4, 7), (6, 2)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_reference(dtype, lead, width):
    a = args(lead=lead, width=width, dtype=dtype)
    torch.testing.assert_close(ds.ops.observation(*a), reference.observation(*a),
                               rtol=0, atol=0)


def test_gradcheck_and_opcheck():
    a = args(batch=6, grad=True)
    assert torch.autograd.gradcheck(ds.ops.observation, a)
    torch.library.opcheck(torch.ops.deepstock.observation.default, args(batch=16, grad=True))


def test_non_contiguous_inputs():
    on_hand, pipeline, exogenous, scale = args(batch=20)
    wide = torch.rand(20, 10, dtype=torch.float64)
    torch.testing.assert_close(ds.ops.observation(on_hand, wide[:, ::3], exogenous, scale),
                               reference.observation(on_hand, wide[:, ::3], exogenous, scale))


@pytest.mark.parametrize("i,bad,message", [
    (1, torch.zeros(33, 3, dtype=torch.float32), "pipeline has dtype Float"),
    (2, torch.zeros(32, 5, dtype=torch.float64), "exogenous must have shape"),
    (3, torch.ones(33, 1, dtype=torch.float64), "scale must have shape"),
])
def test_bad_inputs(i, bad, message):
    a = args()
    a[i] = bad
    with pytest.raises(RuntimeError, match=message):
        ds.ops.observation(*a)
