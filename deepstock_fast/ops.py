"""Typed wrappers of ``torch.ops.deepstock.*``, with fake kernels and autograd.

Shapes: B environments, ``max_lead`` pipeline slots, P days per decision epoch, T days of a
rollout, m demand features. Every op accepts float32 and float64; lead times int32 or int64.
Per-environment costs and caps take shape [B] or a single element (broadcast), or a Python
number. The math of every op is also written in plain PyTorch in :mod:`deepstock_fast.reference`.

Subgradients at the kinks follow one rule, the right derivative (the side of more stock or a
larger order): a day whose inventory ends exactly at zero counts as stocked, and a projection
whose unclamped order is exactly 0 passes the gradient while one exactly at ``max_order`` does
not.
"""

from __future__ import annotations

import collections
import math
import numbers
from typing import NamedTuple

import torch
from torch import Tensor

_ops = torch.ops.deepstock

#: Classical policies of :func:`rollout`, with the meaning of their ``params`` columns.
POLICIES = {
    "base_stock": ("S",),             # order max(S - IP, 0)
    "capped_base_stock": ("S", "cap"),  # order min(max(S - IP, 0), cap)
    "constant": ("q",),               # order q
    "s_S": ("s", "S"),                # order S - IP when IP <= s
}


class StepResult(NamedTuple):
    next_on_hand: Tensor   # [B]
    next_pipeline: Tensor  # [B, max_lead]
    cost: Tensor           # [B, 3]: holding, shortage penalty, ordering (summed over the P days)
    stats: Tensor          # [B, 4]: units sold, units short, stockout days, end-inventory sum


class EnvStepResult(NamedTuple):
    next_on_hand: Tensor     # [B]
    next_pipeline: Tensor    # [B, max_lead]
    cost: Tensor             # [B, 3]: the epoch's, as from inventory_step
    stats: Tensor            # [B, 4]
    reward: Tensor           # [B]: minus the epoch's total cost
    obs: Tensor              # [B, 1 + max_lead + n]: observation of the next state
    cost_total: Tensor       # [B, 3]: the given totals, plus cost if accumulate
    stats_total: Tensor      # [B, 4]: likewise with stats


class RolloutResult(NamedTuple):
    average_cost: Tensor  # [B]: total cost per day after warm-up
    cost: Tensor          # [B, 3]: holding, shortage penalty, ordering, summed after warm-up
    stats: Tensor         # [B, 4]: units sold, units short, stockout days, end-inventory sum


def _param(value, like, name: str) -> Tensor:
    """A per-environment parameter as a tensor of ``like``'s dtype and device (float64 on the CPU
    when ``like`` is not a tensor: the op then names whichever is wrong)."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a tensor or a real number, got {type(value).__name__}")
    if not isinstance(like, Tensor):
        return torch.full((1,), float(value), dtype=torch.float64)
    return torch.full((1,), float(value), dtype=like.dtype, device=like.device)


def _common(*tensors):
    """The tensor whose dtype and device most of ``tensors`` share (the earliest on a tie), for
    the parameters given as numbers: made like it, they side with the majority, and the op names
    the tensor that differs instead of the one they were copied from."""
    keys = [(t.dtype, t.device) if isinstance(t, Tensor) else None for t in tensors]
    counts = collections.Counter(k for k in keys if k is not None)
    if not counts:
        return None
    best = max(counts, key=lambda k: (counts[k], -keys.index(k)))
    return tensors[keys.index(best)]


def check_flag(value, name: str) -> bool:
    """``value`` if it is a bool; anything else (None, 0, "yes") raises a TypeError naming it."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return value


def check_count(value, name: str, minimum: int | None = None) -> int:
    """An integer given as a Python number (lead time, review period, warm-up): 2.0 is 2, but
    2.7, NaN, True or a string raise naming ``name``; so does a value below ``minimum`` (the ops
    check their own ranges)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if not isinstance(value, numbers.Integral):
        if not (math.isfinite(value) and float(value).is_integer()):
            raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def initial_state(demand: Tensor, lead_time: Tensor | int, on_hand: Tensor | None = None,
                  pipeline: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """(lead_time [B], on_hand [B], pipeline [B, max_lead]) for B = demand.shape[0].

    An int lead time applies to every environment; a missing state is the empty system with
    max_lead = the largest lead time (reading it synchronises once on a GPU).
    """
    batch = demand.shape[0]
    if not isinstance(lead_time, Tensor):
        lead_time = torch.full((batch,), check_count(lead_time, "lead_time"), dtype=torch.int64,
                               device=demand.device)
    if pipeline is None:
        max_lead = int(lead_time.max()) if lead_time.numel() else 0
        pipeline = demand.new_zeros(batch, max(max_lead, 0))
    if on_hand is None:
        on_hand = demand.new_zeros(batch)
    return lead_time, on_hand, pipeline


def inventory_position(on_hand: Tensor, pipeline: Tensor) -> Tensor:
    """On-hand plus everything in the pipeline: [B], [B, max_lead] -> [B]."""
    return on_hand + pipeline.sum(dim=1)


def inventory_step(
    on_hand: Tensor,
    pipeline: Tensor,
    lead_time: Tensor,
    order: Tensor,
    demand: Tensor,
    holding_cost: Tensor | float,
    penalty_cost: Tensor | float,
    order_cost: Tensor | float = 0.0,
    lost_sales: bool = True,
) -> StepResult:
    """One decision epoch of P days for B independent environments.

    Args:
        on_hand: [B] stock on hand at the start of the epoch (negative = backorders, backlog only).
        pipeline: [B, max_lead]; ``pipeline[b, k]`` arrives k days from now (k = 0: today).
        lead_time: [B] int, each in 0..max_lead; an order arrives ``lead_time`` days after it is
            placed (0: in time for today's demand).
        order: [B] quantity ordered on the first day of the epoch (>= 0).
        demand: [B, P] demand of each day of the epoch (>= 0); P >= 1 is the review period.
        holding_cost, penalty_cost, order_cost: [B] or one element: h per unit of positive end
            inventory per day, p per unit short (lost, or backordered at the end of a day), c per
            unit ordered.
        lost_sales: True for lost sales, False for backlog.

    Returns:
        :class:`StepResult`. ``next_on_hand``, ``next_pipeline`` and ``cost`` are differentiable
        with respect to ``on_hand``, ``pipeline``, ``order`` and the three costs; ``stats`` is not.
    """
    like = _common(on_hand, pipeline, order, demand)
    return StepResult(
        *_ops.inventory_step(
            on_hand,
            pipeline,
            lead_time,
            order,
            demand,
            _param(holding_cost, like, "holding_cost"),
            _param(penalty_cost, like, "penalty_cost"),
            _param(order_cost, like, "order_cost"),
            check_flag(lost_sales, "lost_sales"),
        )
    )


def base_stock_order(
    target: Tensor, inventory_position: Tensor, max_order: Tensor | float = math.inf
) -> Tensor:
    """Base regularization: clamp(target - inventory_position, 0, max_order). [B], [B] -> [B]."""
    return _ops.base_stock_order(target, inventory_position,
                                 _param(max_order, _common(target, inventory_position),
                                        "max_order"))


def coeff_order(coeff: Tensor, features: Tensor, max_order: Tensor | float = math.inf) -> Tensor:
    """Coeff regularization: clamp(sum_j coeff[:, j] * features[:, j], 0, max_order).

    [B, m], [B, m] -> [B].
    """
    return _ops.coeff_order(coeff, features,
                            _param(max_order, _common(coeff, features), "max_order"))


def coeff_base_stock_order(
    coeff: Tensor,
    features: Tensor,
    inventory_position: Tensor,
    max_order: Tensor | float = math.inf,
) -> Tensor:
    """Both regularizations: clamp(coeff . features - inventory_position, 0, max_order).

    [B, m], [B, m], [B] -> [B].
    """
    return _ops.coeff_base_stock_order(coeff, features, inventory_position,
                                       _param(max_order, _common(coeff, features,
                                                                 inventory_position),
                                              "max_order"))


def observation(on_hand: Tensor, pipeline: Tensor, exogenous: Tensor, scale: Tensor) -> Tensor:
    """InventoryEnv's observation rows: [on_hand / scale, pipeline / scale, exogenous].

    [B], [B, max_lead], [B, n], [B] -> [B, 1 + max_lead + n]; differentiable in all four.
    """
    return _ops.observation(on_hand, pipeline, exogenous, scale)


def env_step(
    on_hand: Tensor,
    pipeline: Tensor,
    lead_time: Tensor,
    order: Tensor,
    demand: Tensor,
    holding_cost: Tensor | float,
    penalty_cost: Tensor | float,
    order_cost: Tensor | float,
    lost_sales: bool,
    exogenous: Tensor,
    scale: Tensor,
    cost_total: Tensor,
    stats_total: Tensor,
    accumulate: bool = True,
) -> EnvStepResult:
    """:class:`~deepstock_fast.envs.InventoryEnv`'s step in one pass: :func:`inventory_step`,
    the :func:`observation` of the next state, the reward and the episode's running totals.

    The first nine arguments are those of :func:`inventory_step`; ``exogenous`` [B, n] and
    ``scale`` [B] those of :func:`observation`; ``cost_total`` [B, 3] and ``stats_total`` [B, 4]
    the totals so far, to which this epoch's cost and stats are added when ``accumulate``.
    Equals those ops composed (bit for bit on CPU); not differentiable (``InventoryEnv.simulate``
    is the differentiable path).
    """
    like = _common(on_hand, pipeline, order, demand, exogenous, scale, cost_total, stats_total)
    return EnvStepResult(*_ops.env_step(
        on_hand, pipeline, lead_time, order, demand, _param(holding_cost, like, "holding_cost"),
        _param(penalty_cost, like, "penalty_cost"), _param(order_cost, like, "order_cost"),
        check_flag(lost_sales, "lost_sales"), exogenous, scale, cost_total, stats_total,
        check_flag(accumulate, "accumulate")))


def rollout(
    demand: Tensor,
    policy: str,
    params: Tensor,
    lead_time: Tensor | int,
    *,
    on_hand: Tensor | None = None,
    pipeline: Tensor | None = None,
    review_period: int = 1,
    warmup: int = 0,
    holding_cost: Tensor | float = 1.0,
    penalty_cost: Tensor | float = 9.0,
    order_cost: Tensor | float = 0.0,
    lost_sales: bool = True,
) -> RolloutResult:
    """Simulates a classical policy over T days for B environments in one fused call.

    Args:
        demand: [B, T] demand per day (any strides: a time-major [T, B] tensor passed as
            ``demand.T`` is read without a copy, which is the fast layout on a GPU).
        policy: one of :data:`POLICIES`.
        params: [B, n] or [1, n] policy parameters (n = 1 or 2, see :data:`POLICIES`).
        lead_time: [B] int in 0..max_lead, or one int for all.
        on_hand: [B] initial on-hand; default 0.
        pipeline: [B, max_lead] initial pipeline; default empty with max_lead = max lead time.
        review_period: an order is placed every ``review_period`` days, starting on day 0.
        warmup: the first ``warmup`` days are simulated but left out of costs and stats (< T).
        holding_cost, penalty_cost, order_cost, lost_sales: as in :func:`inventory_step`.

    Returns:
        :class:`RolloutResult`; not differentiable.
    """
    if not isinstance(demand, Tensor):
        raise TypeError(f"demand must be a tensor, got {type(demand).__name__}")
    if not isinstance(policy, str):
        raise TypeError(f"policy must be one of {list(POLICIES)}, got {policy!r}")
    lead_time, on_hand, pipeline = initial_state(demand, lead_time, on_hand, pipeline)
    like = _common(demand, on_hand, pipeline, params)
    return RolloutResult(
        *_ops.rollout(
            on_hand,
            pipeline,
            lead_time,
            demand,
            policy,
            params,
            check_count(review_period, "review_period"),
            check_count(warmup, "warmup"),
            _param(holding_cost, like, "holding_cost"),
            _param(penalty_cost, like, "penalty_cost"),
            _param(order_cost, like, "order_cost"),
            check_flag(lost_sales, "lost_sales"),
        )
    )


# ---- fake kernels: shapes only, for torch.compile and meta tensors ------------------------


def _check_same_device(op: str, **tensors) -> None:
    """The native ops check devices; fake kernels (meta, torch.compile) do it here, by the same
    rule: the argument off the device most arguments share is named, next to one on it. (A meta
    tensor among CPU ones dispatches to these kernels, so they are the only check it meets.)"""
    devices = {name: t.device for name, t in tensors.items() if isinstance(t, Tensor)}
    if not devices:
        return
    counts = collections.Counter(devices.values())
    common = max(counts, key=lambda d: (counts[d], -list(devices.values()).index(d)))
    like = next(name for name, d in devices.items() if d == common)
    for name, device in devices.items():
        torch._check(device == common,
                     lambda: f"deepstock.{op}: {name} is on {device} but {like} is on {common}")


@torch.library.register_fake("deepstock::inventory_step")
def _(on_hand, pipeline, lead_time, order, demand, holding_cost, penalty_cost, order_cost,
      lost_sales):
    _check_same_device("inventory_step", on_hand=on_hand, pipeline=pipeline, lead_time=lead_time,
                       order=order, demand=demand, holding_cost=holding_cost,
                       penalty_cost=penalty_cost, order_cost=order_cost)
    batch = on_hand.shape[0]
    return (
        on_hand.new_empty(batch),
        pipeline.new_empty(pipeline.shape),
        on_hand.new_empty(batch, 3),
        on_hand.new_empty(batch, 4),
    )


@torch.library.register_fake("deepstock::inventory_step_backward")
def _(grad_next_on_hand, grad_next_pipeline, grad_cost, on_hand, pipeline, lead_time, order,
      demand, holding_cost, penalty_cost, order_cost, lost_sales):
    _check_same_device("inventory_step_backward", on_hand=on_hand, pipeline=pipeline,
                       lead_time=lead_time, order=order, demand=demand,
                       holding_cost=holding_cost, penalty_cost=penalty_cost,
                       order_cost=order_cost, grad_next_on_hand=grad_next_on_hand,
                       grad_next_pipeline=grad_next_pipeline, grad_cost=grad_cost)
    batch = on_hand.shape[0]
    return (
        on_hand.new_empty(batch),
        pipeline.new_empty(pipeline.shape),
        on_hand.new_empty(batch),
        on_hand.new_empty(batch),
        on_hand.new_empty(batch),
        on_hand.new_empty(batch),
    )


@torch.library.register_fake("deepstock::base_stock_order")
def _(target, inventory_position, max_order):
    _check_same_device("base_stock_order", target=target, inventory_position=inventory_position,
                       max_order=max_order)
    return target.new_empty(target.shape)


@torch.library.register_fake("deepstock::base_stock_order_backward")
def _(grad_order, target, inventory_position, max_order):
    _check_same_device("base_stock_order_backward", grad_order=grad_order, target=target,
                       inventory_position=inventory_position, max_order=max_order)
    return target.new_empty(target.shape), target.new_empty(target.shape)


@torch.library.register_fake("deepstock::coeff_order")
def _(coeff, features, max_order):
    _check_same_device("coeff_order", coeff=coeff, features=features, max_order=max_order)
    return coeff.new_empty(coeff.shape[0])


@torch.library.register_fake("deepstock::coeff_order_backward")
def _(grad_order, coeff, features, max_order):
    _check_same_device("coeff_order_backward", grad_order=grad_order, coeff=coeff,
                       features=features, max_order=max_order)
    return coeff.new_empty(coeff.shape), coeff.new_empty(coeff.shape)


@torch.library.register_fake("deepstock::coeff_base_stock_order")
def _(coeff, features, inventory_position, max_order):
    _check_same_device("coeff_base_stock_order", coeff=coeff, features=features,
                       inventory_position=inventory_position, max_order=max_order)
    return coeff.new_empty(coeff.shape[0])


@torch.library.register_fake("deepstock::coeff_base_stock_order_backward")
def _(grad_order, coeff, features, inventory_position, max_order):
    _check_same_device("coeff_base_stock_order_backward", grad_order=grad_order, coeff=coeff,
                       features=features, inventory_position=inventory_position,
                       max_order=max_order)
    return coeff.new_empty(coeff.shape), coeff.new_empty(coeff.shape), coeff.new_empty(coeff.shape[0])


@torch.library.register_fake("deepstock::observation")
def _(on_hand, pipeline, exogenous, scale):
    _check_same_device("observation", on_hand=on_hand, pipeline=pipeline, exogenous=exogenous,
                       scale=scale)
    return on_hand.new_empty(on_hand.shape[0], 1 + pipeline.shape[1] + exogenous.shape[1])


@torch.library.register_fake("deepstock::env_step")
def _(on_hand, pipeline, lead_time, order, demand, holding_cost, penalty_cost, order_cost,
      lost_sales, exogenous, scale, cost_total, stats_total, accumulate):
    _check_same_device("env_step", on_hand=on_hand, pipeline=pipeline, lead_time=lead_time,
                       order=order, demand=demand, holding_cost=holding_cost,
                       penalty_cost=penalty_cost, order_cost=order_cost, exogenous=exogenous,
                       scale=scale, cost_total=cost_total, stats_total=stats_total)
    batch = on_hand.shape[0]
    return (on_hand.new_empty(batch), pipeline.new_empty(pipeline.shape),
            on_hand.new_empty(batch, 3), on_hand.new_empty(batch, 4), on_hand.new_empty(batch),
            on_hand.new_empty(batch, 1 + pipeline.shape[1] + exogenous.shape[1]),
            on_hand.new_empty(batch, 3), on_hand.new_empty(batch, 4))


@torch.library.register_fake("deepstock::rollout")
def _(on_hand, pipeline, lead_time, demand, policy, params, review_period, warmup, holding_cost,
      penalty_cost, order_cost, lost_sales):
    _check_same_device("rollout", on_hand=on_hand, pipeline=pipeline, lead_time=lead_time,
                       demand=demand, params=params, holding_cost=holding_cost,
                       penalty_cost=penalty_cost, order_cost=order_cost)
    batch = on_hand.shape[0]
    return on_hand.new_empty(batch), on_hand.new_empty(batch, 3), on_hand.new_empty(batch, 4)


@torch.library.register_fake("deepstock::lost_sales_dp")
def _(demand_pmf, lead_time, holding_cost, penalty_cost, order_cost, max_position, tolerance,
      max_iterations, initial_value=None, review_period=1):
    _check_same_device("lost_sales_dp", demand_pmf=demand_pmf, initial_value=initial_value)
    shape = [max_position + 1] * lead_time
    return (demand_pmf.new_empty(2), demand_pmf.new_empty(shape, dtype=torch.int64),
            demand_pmf.new_empty(shape), demand_pmf.new_empty((), dtype=torch.int64))


# ---- autograd: each backward is itself a custom op ----------------------------------------


def _sum_to(grad: Tensor, like: Tensor) -> Tensor:
    """Per-environment gradient [B] of a parameter broadcast from one element -> its shape."""
    if like.numel() == 1 and grad.numel() != 1:
        return grad.sum().reshape(like.shape)
    return grad.reshape(like.shape)


def _step_setup_context(ctx, inputs, output):
    *tensors, lost_sales = inputs
    ctx.save_for_backward(*tensors)
    ctx.lost_sales = lost_sales
    ctx.mark_non_differentiable(output[3])


def _step_backward(ctx, grad_next_on_hand, grad_next_pipeline, grad_cost, _grad_stats):
    saved = ctx.saved_tensors
    g_on_hand, g_pipeline, g_order, g_h, g_p, g_c = _ops.inventory_step_backward(
        grad_next_on_hand, grad_next_pipeline, grad_cost, *saved, ctx.lost_sales
    )
    holding_cost, penalty_cost, order_cost = saved[5:8]
    return (
        g_on_hand,
        g_pipeline,
        None,
        g_order,
        None,
        _sum_to(g_h, holding_cost),
        _sum_to(g_p, penalty_cost),
        _sum_to(g_c, order_cost),
        None,
    )


torch.library.register_autograd(
    "deepstock::inventory_step", _step_backward, setup_context=_step_setup_context
)


def _save_inputs(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _base_stock_backward(ctx, grad):
    g_target, g_ip = _ops.base_stock_order_backward(grad, *ctx.saved_tensors)
    return g_target, g_ip, None


def _coeff_backward(ctx, grad):
    g_coeff, g_features = _ops.coeff_order_backward(grad, *ctx.saved_tensors)
    return g_coeff, g_features, None


def _coeff_base_stock_backward(ctx, grad):
    g_coeff, g_features, g_ip = _ops.coeff_base_stock_order_backward(grad, *ctx.saved_tensors)
    return g_coeff, g_features, g_ip, None


torch.library.register_autograd(
    "deepstock::base_stock_order", _base_stock_backward, setup_context=_save_inputs
)
torch.library.register_autograd(
    "deepstock::coeff_order", _coeff_backward, setup_context=_save_inputs
)
torch.library.register_autograd(
    "deepstock::coeff_base_stock_order", _coeff_base_stock_backward, setup_context=_save_inputs
)


def _observation_backward(ctx, grad):
    on_hand, pipeline, scale = ctx.saved_tensors
    lead = pipeline.shape[1]
    inv = 1.0 / scale
    g_state, g_pipeline = grad[:, 0], grad[:, 1:1 + lead]
    g_scale = -(g_state * on_hand + (g_pipeline * pipeline).sum(1)) * inv * inv
    return (g_state * inv, g_pipeline * inv.unsqueeze(1), grad[:, 1 + lead:], g_scale)


def _observation_setup_context(ctx, inputs, output):
    on_hand, pipeline, _, scale = inputs
    ctx.save_for_backward(on_hand, pipeline, scale)


# plain tensor ops suffice here: the backward is a slice and a scaling
torch.library.register_autograd(
    "deepstock::observation", _observation_backward, setup_context=_observation_setup_context
)


def _env_step_backward(ctx, *grads):
    raise RuntimeError("deepstock.env_step is not differentiable: unroll with "
                       "InventoryEnv.simulate (inventory_step and observation) for gradients")


torch.library.register_autograd(
    "deepstock::env_step", _env_step_backward, setup_context=lambda ctx, inputs, output: None
)
