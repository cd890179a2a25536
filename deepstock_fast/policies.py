"""Regularized policies: an MLP whose output goes through one of the paper's projections.

Heads (docs/METHOD.md), with s = the SKU's demand scale (``state.scale``), IP = inventory position,
f = the Coeff features in demand units, ``net`` the MLP's pre-projection output:
    none:  order = clamp(net * s, 0, max_order)                  (the network orders directly)
    base:  order = clamp(net * s - IP, 0, max_order)              (net * s is an order-up-to level)
    coeff: order = clamp(net . f, 0, max_order)                   (coefficients on the features)
    both:  order = clamp(net . f - IP, 0, max_order)              (a Coeff-shaped level, then Base)
Every projection is a native op (``base_stock_order``, ``coeff_order``, ``coeff_base_stock_order``)
with its own backward. ``Policy(state)`` is the deterministic action; stochastic trainers perturb
the pre-projection output (``raw``) and call ``project``. :data:`HEADS` holds each head's rules
(output size, projection, initial output, bounds); a new head is one more entry there.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from .checkpoint import atomic_save, load_file
from .envs.config import InstanceConfig
from .envs.simulate import SimState
from .ops import base_stock_order, coeff_base_stock_order, coeff_order

ACTIVATIONS = {"elu": nn.ELU, "relu": nn.ReLU, "tanh": nn.Tanh}


@dataclass
class PolicyConfig:
    head: str = "base"
    hidden: tuple[int, ...] = (64, 64)
    activation: str = "elu"
    #: The pre-projection output at initialisation (default: see :func:`initial_output`).
    initial_output: list[float] | None = None
    #: (low, high): squash the pre-projection output into this range with a sigmoid (bounded
    #: actions, as DDPG needs); None: unbounded.
    output_bounds: tuple[float, float] | None = None

    def __post_init__(self):
        self.hidden = tuple(int(h) for h in self.hidden)
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {tuple(HEADS)}, got {self.head!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got "
                             f"{self.activation!r}")
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError(f"hidden must be one or more positive widths, got {self.hidden}")
        if self.output_bounds is not None:
            self.output_bounds = tuple(float(v) for v in self.output_bounds)
            if len(self.output_bounds) != 2 or not self.output_bounds[0] < self.output_bounds[1]:
                raise ValueError(f"output_bounds must be (low, high) with low < high, got "
                                 f"{self.output_bounds}")


def _cover(instance: InstanceConfig) -> float:
    """The mean demand over lead time + review period + 1 day, in units of the SKU's scale."""
    leads = instance.lead_time if isinstance(instance.lead_time, list) else [instance.lead_time]
    return float(sum(leads) / len(leads) + instance.review_period + 1)


def _on_features(multiple: float, instance: InstanceConfig) -> list[float]:
    """Coefficients that put ``multiple`` on the 28-day trailing mean (or the first demand
    feature; the constant's coefficient if there is none)."""
    out = [0.0] * len(instance.features)
    quantity = [i for i, f in enumerate(instance.features) if f != "constant"]
    if quantity:
        out[instance.features.index("trailing_28") if "trailing_28" in instance.features
            else quantity[0]] = multiple
    else:  # only the constant 1: its coefficient is an order in demand units
        scale = instance.obs_scale if isinstance(instance.obs_scale, (int, float)) else 1.0
        out[0] = multiple * scale
    return out


@dataclass(frozen=True)
class Head:
    """One regularization head: what the network outputs and how that becomes an order.

    per_feature: one output per Coeff feature (else one output).
    project(raw [B, k], state, cap) -> orders [B], clipped to [0, cap].
    initial(instance) -> the starting pre-projection output (k values, in its units).
    signed: its outputs may be negative (coefficients); bounded outputs then get
        (-top, top) instead of (0, top) (:func:`default_bounds`).
    """

    per_feature: bool
    project: Callable[[Tensor, SimState, float], Tensor]
    initial: Callable[[InstanceConfig], list[float]]
    signed: bool


#: head name -> :class:`Head`; ``PolicyConfig.head``, the CLI's ``--head`` and the tests take
#: their names from here.
HEADS: dict[str, Head] = {
    "none": Head(
        per_feature=False,
        project=lambda raw, s, cap: base_stock_order(raw[:, 0] * s.scale,
                                                     torch.zeros_like(s.on_hand), cap),
        initial=lambda inst: [float(inst.review_period)],  # the mean demand of a review period
        signed=False),
    "base": Head(
        per_feature=False,
        project=lambda raw, s, cap: base_stock_order(raw[:, 0] * s.scale,
                                                     s.inventory_position, cap),
        initial=lambda inst: [_cover(inst)],
        signed=False),
    "coeff": Head(
        per_feature=True,
        project=lambda raw, s, cap: coeff_order(raw, s.features, cap),
        initial=lambda inst: _on_features(float(inst.review_period), inst),
        signed=True),
    "both": Head(
        per_feature=True,
        project=lambda raw, s, cap: coeff_base_stock_order(raw, s.features,
                                                           s.inventory_position, cap),
        initial=lambda inst: _on_features(_cover(inst), inst),
        signed=True),
}


def initial_output(head: str, instance: InstanceConfig) -> list[float]:
    """A sensible starting point for each head, in the units of its output: none orders the mean
    demand of a review period; base targets the mean demand over lead time + review period + 1
    day; coeff / both put the same multiples on the 28-day trailing mean (or the first demand
    feature; the constant's coefficient if there is none)."""
    return HEADS[head].initial(instance)


def default_bounds(head: str, instance: InstanceConfig) -> tuple[float, float]:
    """A range for bounded outputs (DDPG's) that gives every head the same reachable policies:
    with C = the mean demand over lead time + review period + 1 day in units of the SKU's
    scale (the Base head's initial level), base-stock levels up to 3 C (base), orders up to
    3 C (none: a base-stock policy whose level is at most 3 C never orders more), and
    coefficients within +-3 C (coeff, both: levels or orders up to 3 C times a demand-mean
    feature). Bounds that differ by head made the heads' comparison one of their bounds: with
    none's orders capped at twice the initial order and base's levels at twice the initial level,
    the best policy under none's cap cost 68% more than the best base-stock policy."""
    top = 3.0 * _cover(instance)
    return (-top, top) if HEADS[head].signed else (0.0, top)


def mlp(sizes: list[int], activation: str, final_activation: bool = False) -> nn.Sequential:
    """Linear layers of the given sizes with ``activation`` between them (and after the last
    with ``final_activation``)."""
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), ACTIVATIONS[activation]()]
    return nn.Sequential(*(layers if final_activation else layers[:-1]))


class Policy(nn.Module):
    """MLP actor with a regularization head, for observations of one instance's layout.

    Args:
        obs_names: the environment's ``obs_names`` (the input layout, kept to check instances).
        features: the instance's Coeff feature names (the coeff/both output size).
        config: :class:`PolicyConfig`.
        max_order: the order cap (None: no cap).
    """

    def __init__(self, obs_names: list[str], features: tuple[str, ...], config: PolicyConfig,
                 max_order: float | None = None):
        super().__init__()
        self.config = config
        self.obs_names = list(obs_names)
        self.features = tuple(features)
        self.max_order = max_order
        out = len(self.features) if HEADS[config.head].per_feature else 1
        if out == 0:
            raise ValueError(f"head {config.head!r} needs at least one feature in the instance")
        n = len(self.obs_names)
        # input normalisation: fixed per-column shift and scale, fitted once (fit_normalizer)
        self.register_buffer("obs_mean", torch.zeros(n))
        self.register_buffer("obs_std", torch.ones(n))
        self.body = mlp([n, *config.hidden], config.activation, final_activation=True)
        self.head = nn.Linear(config.hidden[-1], out)
        init = config.initial_output if config.initial_output is not None else [1.0] * out
        if len(init) != out:
            raise ValueError(f"initial_output needs {out} values for head {config.head!r}, got "
                             f"{len(init)}")
        init = torch.tensor(init)
        if config.output_bounds is not None:  # the bias before the sigmoid
            low, high = config.output_bounds
            init = torch.logit(((init - low) / (high - low)).clamp(0.02, 0.98))
        with torch.no_grad():  # start near the initial output, with a small state dependence
            self.head.weight.mul_(0.1)
            self.head.bias.copy_(init)

    @classmethod
    def for_instance(cls, instance: InstanceConfig, config: PolicyConfig,
                     obs_names: list[str]) -> "Policy":
        if config.initial_output is None:
            config = dataclasses.replace(config, initial_output=initial_output(config.head,
                                                                               instance))
        return cls(obs_names, instance.features, config, instance.max_order)

    @torch.no_grad()
    def fit_normalizer(self, obs: Tensor) -> None:
        """Sets the input normalisation from observations [N, n]: mean and std per column (std
        floored at 1e-3 of the column's magnitude, so constant columns pass through)."""
        obs = obs.reshape(-1, obs.shape[-1]).to(self.obs_mean)
        self.obs_mean.copy_(obs.mean(0))
        floor = 1e-3 * obs.abs().mean(0).clamp(min=1.0)
        self.obs_std.copy_(obs.std(0).nan_to_num(0.0).maximum(floor))

    def raw(self, obs: Tensor) -> Tensor:
        """The pre-projection output [B, k] for observations [B, n]."""
        x = (obs.to(self.obs_mean.dtype) - self.obs_mean) / self.obs_std
        out = self.head(self.body(x))
        if self.config.output_bounds is not None:
            low, high = self.config.output_bounds
            out = low + (high - low) * torch.sigmoid(out)
        return out

    def project(self, raw: Tensor, state: SimState) -> Tensor:
        """Orders [B] from the pre-projection output [B, k] through the head's projection."""
        raw = raw.to(state.on_hand.dtype)
        cap = self.max_order if self.max_order is not None else math.inf
        return HEADS[self.config.head].project(raw, state, cap)

    def forward(self, state: SimState) -> Tensor:
        """The deterministic action: orders [B] for a :class:`SimState` (``env.state()``)."""
        return self.project(self.raw(state.obs), state)

    act = forward

    # ---- persistence -------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, **extra) -> None:
        """Weights, config, input layout and normalisation in one file (written atomically)."""
        payload = {"config": dataclasses.asdict(self.config), "obs_names": self.obs_names,
                   "features": list(self.features), "max_order": self.max_order,
                   "state_dict": self.state_dict(), **extra}
        atomic_save(payload, path)

    @classmethod
    def load(cls, path: str | os.PathLike, map_location="cpu") -> "Policy":
        """The policy saved at ``path`` (by :meth:`save`), read with :func:`load_file`."""
        return cls.from_payload(load_file(path, map_location, what="policy"), path)

    @classmethod
    def from_payload(cls, payload: dict, path: str | os.PathLike = "the payload") -> "Policy":
        """The policy of a payload :meth:`save` wrote (as :func:`load_file` returns it)."""
        try:
            policy = cls(payload["obs_names"], tuple(payload["features"]),
                         PolicyConfig(**payload["config"]), payload["max_order"])
            policy.load_state_dict(payload["state_dict"])
        except KeyError as e:
            raise ValueError(f"{path} is not a saved deepstock_fast policy (missing {e})") from None
        except (TypeError, ValueError, RuntimeError) as e:  # wrong shapes, types or fields
            raise ValueError(f"{path} is not a valid deepstock_fast policy: "
                             f"{str(e).splitlines()[0]}") from None
        return policy

    def check_instance(self, obs_names: list[str]) -> None:
        if list(obs_names) != self.obs_names:
            raise ValueError(f"the policy reads observations {self.obs_names}; this instance "
                             f"gives {list(obs_names)}")
