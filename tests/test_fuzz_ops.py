"""Fuzz of every op in ``torch.ops.deepstock``: forward and backward ops, called through torch.ops
and through the ``deepstock_fast`` wrappers (autograd for the backward ops), with every argument
varied: shapes (0-size, mismatched, wrong rank), dtypes, devices (one meta tensor among CPU
ones), non-contiguous strides, NaN/inf/huge/negative values, out-of-range integers, policy names
and Python numbers where a wrapper takes them.

Property: the call raises RuntimeError/ValueError/TypeError whose message names the argument
that was made wrong (and, from C++, the op), or it returns and agrees with
``deepstock_fast.reference``; never a crash. A case that changes nothing must return. The cases
run in one persistent worker subprocess, so a crash fails the test naming the case.

The op list comes from the dispatcher: a new op without a case here fails ``test_every_op_is_fuzzed``.
"""

from __future__ import annotations

import math
import os
import pickle
import re
import struct
import subprocess
import sys

import numpy
import pytest
import torch
from hypothesis import given, strategies as st

import deepstock_fast as ds
from deepstock_fast import reference

from helpers import fuzz_settings

OPS = torch.ops.deepstock
FLOATS = (torch.float32, torch.float64)
INDEX = (torch.int32, torch.int64)
BAD_DTYPES = (torch.float16, torch.bfloat16, torch.int16, torch.uint8, torch.bool,
              torch.complex64)

# Each tensor argument's role: "v" [B], "b" [B] or one element, "m" [B, free columns],
# "c" [B, columns fixed by another argument], "r" [B or 1, n] (params), "i" [B] index, "p" a pmf.
STEP = dict(on_hand="v", pipeline="m", lead_time="i", order="v", demand="m", holding_cost="b",
            penalty_cost="b", order_cost="b")
STEP_GRADS = dict(grad_next_on_hand="v", grad_next_pipeline="c", grad_cost="c")
SPECS = {
    "inventory_step": dict(STEP),
    "inventory_step_backward": dict(STEP_GRADS, **STEP),
    "base_stock_order": dict(target="v", inventory_position="v", max_order="b"),
    "base_stock_order_backward": dict(grad_order="v", target="v", inventory_position="v",
                                      max_order="b"),
    "coeff_order": dict(coeff="c", features="c", max_order="b"),
    "coeff_order_backward": dict(grad_order="v", coeff="c", features="c", max_order="b"),
    "coeff_base_stock_order": dict(coeff="c", features="c", inventory_position="v",
                                   max_order="b"),
    "coeff_base_stock_order_backward": dict(grad_order="v", coeff="c", features="c",
                                            inventory_position="v", max_order="b"),
    "observation": dict(on_hand="v", pipeline="m", exogenous="m", scale="v"),
    "env_step": dict(STEP, exogenous="m", scale="v", cost_total="c", stats_total="c"),
    "rollout": dict(on_hand="v", pipeline="m", lead_time="i", demand="m", params="r",
                    holding_cost="b", penalty_cost="b", order_cost="b"),
    "lost_sales_dp": dict(demand_pmf="p", initial_value="dp"),
}
# Argument order of each op's schema (tensors and the rest).
SCHEMA = {name: [a.name for a in getattr(OPS, name).default._schema.arguments] for name in SPECS}


def registered_ops() -> list[str]:
    return sorted(n.split("::", 1)[1] for n in torch._C._dispatch_get_all_op_names()
                  if n.startswith("deepstock::"))


def test_every_op_is_fuzzed():
    assert registered_ops() == sorted(SPECS), "every deepstock op needs a fuzz case in SPECS"


# ---- the cases -------------------------------------------------------------------------------


def halves(g, shape, high, dtype):
    """Multiples of 0.5 in [0, high]: exact in float32, so kinks tie the same way everywhere."""
    return torch.randint(0, int(2 * high) + 1, shape, generator=g).to(dtype) / 2


@st.composite
def problems(draw):
    return dict(batch=draw(st.sampled_from([0, 1, 2, 3, 7, 300])), lead=draw(st.integers(0, 6)),
                days=draw(st.integers(1, 3)), dtype=draw(st.sampled_from(FLOATS)),
                index=draw(st.sampled_from(INDEX)), seed=draw(st.integers(0, 2**31 - 1)),
                per_env=draw(st.booleans()), lost_sales=draw(st.booleans()),
                features=draw(st.integers(1, 3)))


def valid_args(op: str, pr: dict, draw) -> dict:
    """Valid arguments of `op` (all of its schema) for the problem `pr`."""
    g = torch.Generator().manual_seed(pr["seed"])
    B, L, P, dt, m = pr["batch"], pr["lead"], pr["days"], pr["dtype"], pr["features"]
    cost = lambda hi: halves(g, (B if pr["per_env"] else 1,), hi, dt)  # noqa: E731
    lead = torch.randint(0, L + 1, (B,), generator=g).to(pr["index"])
    step = dict(on_hand=halves(g, (B,), 20, dt), pipeline=halves(g, (B, L), 8, dt),
                lead_time=lead, order=halves(g, (B,), 15, dt), demand=halves(g, (B, P), 10, dt),
                holding_cost=cost(2), penalty_cost=cost(10), order_cost=cost(1),
                lost_sales=pr["lost_sales"])
    if not pr["lost_sales"]:
        step["on_hand"] = step["on_hand"] - 5
    cap = halves(g, (B,) if pr["per_env"] else (1,), 20, dt)
    if draw(st.booleans()):
        cap = torch.full_like(cap, math.inf)
    signed = lambda *shape: halves(g, shape, 8, dt) - 4  # noqa: E731
    if op == "inventory_step":
        return step
    if op == "inventory_step_backward":
        return dict(grad_next_on_hand=signed(B), grad_next_pipeline=signed(B, L),
                    grad_cost=signed(B, 3), **step)
    proj = dict(target=halves(g, (B,), 30, dt), inventory_position=halves(g, (B,), 30, dt),
                coeff=signed(B, m), features=halves(g, (B, m), 10, dt), max_order=cap,
                grad_order=signed(B))
    if op.startswith(("base_stock_order", "coeff_")):
        return {k: proj[k] for k in SCHEMA[op]}
    extra = dict(exogenous=signed(B, draw(st.integers(0, 3))), scale=halves(g, (B,), 8, dt) + 0.5,
                 cost_total=halves(g, (B, 3), 50, dt), stats_total=halves(g, (B, 4), 50, dt),
                 accumulate=draw(st.booleans()))
    if op == "observation":
        return {k: (step | extra)[k] for k in SCHEMA[op]}
    if op == "env_step":
        return dict(step, **extra)
    if op == "rollout":
        policy = draw(st.sampled_from(list(ds.POLICIES)))
        params = halves(g, (B if draw(st.booleans()) else 1, len(ds.POLICIES[policy])), 20, dt)
        if policy == "s_S":
            params = params.sort(dim=1).values
        warmup = draw(st.integers(0, 3))
        return dict(on_hand=step["on_hand"], pipeline=step["pipeline"], lead_time=lead,
                    demand=halves(g, (B, warmup + draw(st.integers(1, 5))), 10, dt),
                    policy=policy, params=params, review_period=draw(st.integers(1, 3)),
                    warmup=warmup, holding_cost=step["holding_cost"],
                    penalty_cost=step["penalty_cost"], order_cost=step["order_cost"],
                    lost_sales=pr["lost_sales"])
    assert op == "lost_sales_dp", op
    n, lead_time, top = draw(st.integers(1, 4)), draw(st.integers(1, 2)), draw(st.integers(1, 4))
    pmf = torch.rand(n, generator=g, dtype=torch.float64) + 0.1
    shape = [top + 1] * lead_time
    return dict(demand_pmf=pmf / pmf.sum(), lead_time=lead_time, holding_cost=1.0,
                penalty_cost=float(draw(st.sampled_from([0.0, 4.0, 9.0]))), order_cost=0.0,
                max_position=top, tolerance=draw(st.sampled_from([1e-6, 1e-2, math.inf])),
                max_iterations=draw(st.integers(1, 4)),
                initial_value=None if draw(st.booleans()) else
                halves(g, shape, 10, torch.float64) - 5,
                review_period=draw(st.integers(1, 2)))


# Injected values: (value, for which dtypes).
FLOAT_VALUES = [math.nan, math.inf, -math.inf, -1.0, -0.5, 1e30, 1e300, -1e300, 0.0]
DP_NUMBERS = dict(lead_time=[0, -1, 17, 2**40], holding_cost=[-1.0, math.nan, math.inf, 1e308],
                  penalty_cost=[-1.0, math.nan, 1e308], order_cost=[-0.5, math.inf],
                  max_position=[0, -1, 10**9, 2**62], tolerance=[0.0, -1.0, math.nan],
                  max_iterations=[0, -1], review_period=[0, 366, -1])
ROLLOUT_NUMBERS = dict(review_period=[0, -1, 2**62, 1000], warmup=[-1, 2**62, 100],
                       policy=["newsvendor", "", "base_stock ", "S_s", "BASE_STOCK"])


@st.composite
def cases(draw, op: str, via: str):
    """(case dict, label). via: "ops" (torch.ops), "wrapper" (deepstock_fast), "autograd"."""
    pr = draw(problems())
    args = valid_args(op, pr, draw)
    spec = SPECS[op]
    case = dict(op=op, via=via, args=args, meta=[], noncontig=[], blame=[], must_raise=False,
                inplace=None)
    tensors = [k for k in spec if isinstance(args.get(k), torch.Tensor)]
    case["noncontig"] = draw(st.lists(st.sampled_from(tensors), unique=True, max_size=3)) \
        if tensors else []
    kinds = ["none", "value", "value", "dtype", "other_float", "batch", "rank", "cols", "meta",
             "missing", "number"]
    if via == "autograd":  # changes of the forward's inputs after the forward
        kinds = ["none", "inplace", "inplace"]
        tensors = [k for k in tensors if not k.startswith("grad_")]
    kind = draw(st.sampled_from(kinds))
    name = draw(st.sampled_from(tensors)) if tensors else None
    t = args.get(name)
    role = spec.get(name)
    B = pr["batch"]
    if kind == "value" and t is not None and t.numel():
        if t.dtype in INDEX:
            big = [10**6, 10**12] if t.dtype == torch.int64 else [2**31 - 1]
            v = draw(st.sampled_from([-1, pr["lead"] + 1, *big]))
        else:
            v = draw(st.sampled_from(FLOAT_VALUES))
            if t.dtype == torch.float32 and abs(v) > 3e38 and math.isfinite(v):
                v = math.copysign(math.inf, v)  # what 1e300 becomes in float32
        t = t.clone()
        t.view(-1)[draw(st.integers(0, t.numel() - 1))] = v
        args[name], case["blame"] = t, [name]
    elif kind == "dtype" and t is not None:
        dtype = draw(st.sampled_from(BAD_DTYPES + ((torch.float32,) if role == "i" else INDEX)))
        args[name] = t.to(dtype) if dtype != torch.bool else t != 0
        case["blame"], case["must_raise"] = [name], True
    elif kind == "other_float" and t is not None and t.dtype in FLOATS and role not in "pdp":
        args[name] = t.to(torch.float64 if t.dtype == torch.float32 else torch.float32)
        case["blame"], case["must_raise"] = [name], True
    elif kind == "batch" and t is not None and role in "vbmcri":
        rows = draw(st.sampled_from([B + 1, max(B - 1, 0), 0, 2]))
        if rows not in ((B, 1) if role in "br" else (B,)):
            args[name] = t.new_zeros((rows, *t.shape[1:]))
            case["blame"], case["must_raise"] = [name], True
    elif kind == "rank" and t is not None:
        args[name] = t.unsqueeze(-1)
        case["blame"], case["must_raise"] = [name], True
    elif kind == "cols" and t is not None and t.dim() == 2:
        cols = draw(st.sampled_from([0, t.shape[1] + 1, t.shape[1] + 5]))
        args[name] = t.new_zeros((t.shape[0], cols))
        # Free columns (pipeline, demand, exogenous) may be valid: either outcome is allowed.
        case["blame"], case["must_raise"] = [name, "lead_time"], role != "m"
    elif kind == "meta" and t is not None and len(tensors) > 1:  # all-meta is torch.compile's
        case["meta"], case["blame"], case["must_raise"] = [name], [name], True
    elif kind == "missing" and t is not None and role != "dp":
        args[name] = None
        # rollout's wrapper builds a missing state (the empty system)
        default = via == "wrapper" and op == "rollout" and name in ("on_hand", "pipeline")
        case["blame"], case["must_raise"] = [name], not default
    elif kind == "number":
        numbers = dict(DP_NUMBERS if op == "lost_sales_dp" else
                       ROLLOUT_NUMBERS if op == "rollout" else {})
        if via == "wrapper" and op in ("inventory_step", "env_step", "rollout"):
            numbers.update(lost_sales=[None, 0, 1, "yes", 1.0],
                           holding_cost=[2.0, 0, math.nan, -1.0, math.inf, True, None, "1"])
        if via == "wrapper" and op == "rollout":
            numbers.update(lead_time=[0, 2, 2.0, 2.7, math.nan, -1, True, None, "2"],
                           review_period=[2.0, 2.5, True, None], warmup=[1.5, math.inf])
        if via == "wrapper" and op.startswith(("base_stock_order", "coeff")):
            numbers.update(max_order=[0.0, 5.0, math.inf, -1.0, math.nan, None, "inf"])
        if numbers:
            key = draw(st.sampled_from(sorted(numbers)))
            value = draw(st.sampled_from(numbers[key]))
            if key == "lead_time" and op == "rollout":  # the wrapper builds the state
                args["on_hand"] = args["pipeline"] = None
            args[key] = value
            case["blame"] = [key]
            # Non-bool flags and non-numbers must be refused; other values either way.
            case["must_raise"] = (key == "lost_sales" or value is None or isinstance(value, str)
                                  or (isinstance(value, bool) and key != "lost_sales")
                                  or (key == "lead_time" and isinstance(value, float)
                                      and not float(value).is_integer()))
    elif kind == "inplace" and t is not None and t.numel():
        # Changed between the forward and the backward (e.g. memory shared with NumPy).
        if t.dtype in INDEX:
            v = draw(st.sampled_from([-1, pr["lead"] + 1, 10**6 if t.dtype == torch.int64 else 7]))
        else:
            v = draw(st.sampled_from(FLOAT_VALUES))
        case["inplace"] = (name, draw(st.integers(0, t.numel() - 1)), v)
        case["blame"] = [name]
    label = f"{op} via {via}: {kind} {name if kind not in ('none', 'number') else ''}" \
            f"{case['blame']} B={B} L={pr['lead']} {pr['dtype']} noncontig={case['noncontig']}"
    return case, label


# ---- the worker: runs a case, compares with the reference ------------------------------------


def noncontiguous(t: torch.Tensor) -> torch.Tensor:
    """The same values through strides that are not the contiguous ones."""
    if t.dim() == 2:
        return t.T.contiguous().T
    return torch.empty((*t.shape, 2), dtype=t.dtype)[..., 0].copy_(t)


WRAPPERS = dict(inventory_step=ds.inventory_step, base_stock_order=ds.base_stock_order,
                coeff_order=ds.coeff_order, coeff_base_stock_order=ds.coeff_base_stock_order,
                observation=ds.observation, env_step=ds.env_step)
FORWARD = {"inventory_step_backward": "inventory_step",
           "base_stock_order_backward": "base_stock_order", "coeff_order_backward": "coeff_order",
           "coeff_base_stock_order_backward": "coeff_base_stock_order"}
# The forward's differentiable inputs, in the order of the backward op's outputs.
DIFFERENTIABLE = {"inventory_step": ["on_hand", "pipeline", "order", "holding_cost",
                                     "penalty_cost", "order_cost"],
                  "base_stock_order": ["target", "inventory_position"],
                  "coeff_order": ["coeff", "features"],
                  "coeff_base_stock_order": ["coeff", "features", "inventory_position"]}


def call_rollout(rollout, a):
    """``rollout`` (the wrapper or the reference) on a case's arguments."""
    return rollout(a["demand"], a["policy"], a["params"], a["lead_time"],
                   on_hand=a["on_hand"], pipeline=a["pipeline"],
                   review_period=a["review_period"], warmup=a["warmup"],
                   holding_cost=a["holding_cost"], penalty_cost=a["penalty_cost"],
                   order_cost=a["order_cost"], lost_sales=a["lost_sales"])


def reference_of(op: str, a: dict):
    if op in FORWARD:
        fwd = FORWARD[op]
        inputs = {k: a[k] for k in SCHEMA[fwd] if k in a}
        grads = [a[k] for k in SCHEMA[op] if k.startswith("grad_")]
        wrt = []
        for k in DIFFERENTIABLE[fwd]:
            x = inputs[k]
            if k in ("holding_cost", "penalty_cost", "order_cost"):  # per environment, as the op
                x = x.reshape(-1).expand(a["on_hand"].shape[0])
            inputs[k] = x.detach().clone().requires_grad_()
            wrt.append(inputs[k])
        out = getattr(reference, fwd)(**inputs)
        outs = out[:3] if fwd == "inventory_step" else [out]
        return torch.autograd.grad(outs, wrt, grads, allow_unused=True)
    if op == "rollout":
        return call_rollout(reference.rollout, a)
    return getattr(reference, op)(**a)


def run_case(case: dict) -> dict:
    """Runs one case; returns {"raised": type, "message": ...} or {"problem": text or None}."""
    op, via, a = case["op"], case["via"], dict(case["args"])
    for k in case["noncontig"]:
        if isinstance(a[k], torch.Tensor):
            a[k] = noncontiguous(a[k])
    for k in case["meta"]:
        a[k] = a[k].to("meta")
    try:
        if via == "ops":
            out = getattr(OPS, op)(*[a[k] for k in SCHEMA[op]])
        elif via == "wrapper":
            out = call_rollout(ds.rollout, a) if op == "rollout" else WRAPPERS[op](**a)
        else:  # autograd: the forward wrapper, a change in place, then backward
            fwd = FORWARD[op]
            inputs = {k: a[k] for k in SCHEMA[fwd]}
            for k in DIFFERENTIABLE[fwd]:
                inputs[k] = inputs[k].detach().clone().requires_grad_()
            result = WRAPPERS[fwd](**inputs)
            outs = list(result[:3]) if fwd == "inventory_step" else [result]
            if case["inplace"]:  # through NumPy, as a user's shared array: no version bump
                name, i, v = case["inplace"]
                array = inputs[name].detach().numpy()
                with numpy.errstate(over="ignore"):
                    array[numpy.unravel_index(i, array.shape)] = v
                a[name] = inputs[name].detach()
            grads = [a[k] for k in SCHEMA[op] if k.startswith("grad_")]
            out = torch.autograd.grad(outs, [inputs[k] for k in DIFFERENTIABLE[fwd]], grads,
                                      allow_unused=True)
            if fwd == "inventory_step":  # autograd sums the broadcast costs' gradients
                out = list(out[:3]) + [None] * 3
    except (RuntimeError, ValueError, TypeError) as e:
        return dict(raised=type(e).__name__, message=str(e))
    except Exception as e:  # noqa: BLE001  (reported as a failure of the property)
        return dict(raised=type(e).__name__, message=str(e), problem=f"raised {e!r}")
    if case["must_raise"]:
        return dict(problem="returned for an argument that must be refused")
    try:
        if via == "wrapper" and op == "rollout" and a["on_hand"] is None:
            want = call_rollout(reference.rollout, a)
        else:
            want = reference_of(op, a)
    except Exception as e:  # noqa: BLE001
        return dict(problem=f"returned, but the reference raised {e!r}")
    got = [out] if isinstance(out, torch.Tensor) else list(out)
    want = [want] if isinstance(want, torch.Tensor) else list(want)
    for i, (x, y) in enumerate(zip(got, want)):
        if x is None or y is None:
            continue
        if x.shape != y.shape or x.dtype != y.dtype:
            return dict(problem=f"output {i}: {x.dtype}{list(x.shape)}, reference "
                                f"{y.dtype}{list(y.shape)}")
        if x.is_floating_point():
            tol = dict(rtol=1e-5, atol=1e-4) if x.dtype == torch.float32 else \
                dict(rtol=1e-9, atol=1e-9)
            ok = torch.allclose(x, y.detach(), equal_nan=True, **tol)
        else:
            ok = torch.equal(x, y)
        if not ok:
            return dict(problem=f"output {i} differs from the reference:\n{x}\n{y}")
    return dict(problem=None)


def worker_main() -> None:
    """The worker loop: length-prefixed pickles on stdin -> results on the original stdout.
    (pickle is safe here: both ends are this test and the child it started, over a pipe; no file
    or outside data is ever unpickled.)"""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints go to stderr, not into the protocol
    src = sys.stdin.buffer
    while header := src.read(8):
        case = pickle.loads(src.read(struct.unpack("<Q", header)[0]))
        data = pickle.dumps(run_case(case))
        out.write(struct.pack("<Q", len(data)) + data)
        out.flush()


class Worker:
    """One persistent subprocess running cases; restarted after it dies."""

    def __init__(self):
        self.proc = None

    def run(self, case: dict) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            here = os.path.dirname(os.path.abspath(__file__))
            code = f"import sys; sys.path.insert(0, {here!r}); import test_fuzz_ops; " \
                   "test_fuzz_ops.worker_main()"
            env = dict(os.environ, OMP_NUM_THREADS="1")
            self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, env=env)
        data = pickle.dumps(case)
        try:
            self.proc.stdin.write(struct.pack("<Q", len(data)) + data)
            self.proc.stdin.flush()
            header = self.proc.stdout.read(8)
        except BrokenPipeError:
            header = b""
        if len(header) < 8:
            code = self.proc.wait()
            self.proc = None
            return dict(crash=code)
        return pickle.loads(self.proc.stdout.read(struct.unpack("<Q", header)[0]))

    def close(self):
        if self.proc is not None:
            self.proc.stdin.close()
            self.proc.wait()
            self.proc = None


@pytest.fixture(scope="module")
def worker():
    w = Worker()
    yield w
    w.close()


def names(message: str, arg: str) -> bool:
    """Whether `message` names `arg` as a word (grad_next_on_hand does not name on_hand)."""
    return re.search(rf"(?<![\w.]){re.escape(arg)}(?![\w])", message) is not None


def check(worker: Worker, case: dict, label: str) -> None:
    result = worker.run(case)
    assert "crash" not in result, f"worker died (exit code {result.get('crash')}) on {label}"
    assert result.get("problem") is None, f"{label}: {result['problem']}"
    if "raised" in result:
        message = result["message"]
        assert case["blame"], f"{label}: valid input rejected: {message}"
        assert any(names(message, arg) for arg in case["blame"]), \
            f"{label}: the error does not name {case['blame']}: {message}"
        if result["raised"] == "RuntimeError" and case["via"] != "wrapper" \
                and "Expected a value of type" not in message:
            assert f"deepstock.{case['op']}:" in message or f"deepstock::{case['op']}" in message, \
                f"{label}: the error does not name the op: {message}"


OP_VIA = [(op, "ops") for op in sorted(SPECS)] + \
    [(op, "wrapper") for op in [*WRAPPERS, "rollout"]] + [(op, "autograd") for op in FORWARD]


@pytest.mark.parametrize("op,via", OP_VIA)
def test_fuzz(worker, op, via):
    @fuzz_settings(ci_examples=40)
    @given(cases(op, via))
    def run(drawn):
        check(worker, *drawn)

    run()
