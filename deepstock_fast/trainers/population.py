"""Population training: K configurations of one trainer advanced together on one device.

Each member keeps what a single run of its configuration has: its seed's random streams (its
own training and validation environments, initial weights, normaliser), its weights, optimizer
state, learning-rate schedule, early stopping, best weights and stop reason. What is shared is
the work: the members' SKUs are laid side by side in one environment of K x B SKUs, so that
every native op runs once over all of them, and the network is one :class:`StackedPolicy` whose
weights [K, in, out] are applied with batched matrix products, member k on its own B SKUs.
Nothing mixes members: the loss is the sum of the members' losses, each member's gradient is
that of its own loss, and :class:`StackedAdam`, :func:`clip_grad_norms_` and
:class:`PlateauLR` do per member what ``torch.optim.Adam``, ``clip_grad_norm_`` and
``ReduceLROnPlateau`` do for one run. A member therefore ends as its configuration trained
alone would (tests/test_population.py).

:func:`train_members` is the entry point the trainers share: it takes one configuration or
lists of them, splits the lists into groups of members with the same shapes (those that can
share one batched network and environment) and trains the groups one after another.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import os
import pathlib
from typing import Callable

import torch
from torch import Tensor, nn

from ..envs import InstanceConfig, InventoryEnv
from ..envs.env import concat_episodes
from ..policies import ACTIVATIONS, HEADS, Policy, PolicyConfig, mlp
from .common import claimed, reward_scale, setup

#: PolicyConfig fields that members of one population may differ in (they leave shapes alone).
POLICY_PER_MEMBER = ("initial_output", "output_bounds")


# ---- the batched network --------------------------------------------------------------------
class StackedMLP(nn.Module):
    """K MLPs of one shape (Linear layers with ``activation`` between them) as one module:
    layer i's weight [K, in, out] (member k's ``nn.Linear`` weight transposed, so that
    ``x @ weight[k]`` needs no transposed operand) and bias [K, out], applied with batched
    matrix products.

    Args:
        modules: the members' networks (any modules whose ``nn.Linear`` layers, in order, are
            the MLP's); their weights are copied.
        activation: a name in ``policies.ACTIVATIONS``.
    """

    def __init__(self, modules: list[nn.Module], activation: str):
        super().__init__()
        self.names = [n for n, m in modules[0].named_modules() if isinstance(m, nn.Linear)]
        layers = [dict(m.named_modules()) for m in modules]
        self.weight = nn.ParameterList(
            [nn.Parameter(torch.stack([m[n].weight.detach().T for m in layers]).contiguous())
             for n in self.names])
        self.bias = nn.ParameterList(
            [nn.Parameter(torch.stack([m[n].bias.detach() for m in layers]).clone())
             for n in self.names])
        self.activation = ACTIVATIONS[activation]()

    def forward(self, x: Tensor, index: Tensor | None = None) -> Tensor:
        """[K, N, in] -> [K, N, out]; with ``index`` (K' member indices), the members
        ``index`` only: [K', N, in] -> [K', N, out] (gradients reach their weights alone)."""
        last = len(self.weight) - 1
        for i, (w, b) in enumerate(zip(self.weight, self.bias)):
            if index is not None:
                w, b = w.index_select(0, index), b.index_select(0, index)
            x = torch.baddbmm(b.unsqueeze(1), x, w)
            if i < last:
                x = self.activation(x)
        return x

    def member_state(self, k: int, prefix: str = "") -> dict:
        """Member k's Linear weights under their names in the members' modules (copies)."""
        out = {}
        for name, w, b in zip(self.names, self.weight, self.bias):
            out[f"{prefix}{name}.weight"] = w[k].detach().T.clone()
            out[f"{prefix}{name}.bias"] = b[k].detach().clone()
        return out

    @torch.no_grad()
    def load_member_state(self, k: int, state: dict, prefix: str = "") -> None:
        for name, w, b in zip(self.names, self.weight, self.bias):
            w[k].copy_(state[f"{prefix}{name}.weight"].T)
            b[k].copy_(state[f"{prefix}{name}.bias"])


class StackedPolicy(nn.Module):
    """K :class:`~deepstock_fast.policies.Policy` networks of one shape as one module: a
    :class:`StackedMLP` of their layers, the input normalisation [K, n] and the output bounds
    [K, 2] stacked over members. ``raw`` / ``forward`` take the K members' SKUs side by side
    ([K * B, ...], member k's B SKUs at rows k B .. (k + 1) B - 1).

    Args:
        policies: the members' policies (same head, widths, activation, input layout and
            order cap); their weights are copied, and they serve as the templates that
            :meth:`member` fills.
    """

    def __init__(self, policies: list[Policy]):
        super().__init__()
        first = policies[0]
        for k, p in enumerate(policies):
            for name in ("head", "hidden", "activation"):
                if getattr(p.config, name) != getattr(first.config, name):
                    raise ValueError(f"policy {k}: {name} {getattr(p.config, name)!r} differs "
                                     f"from member 0's {getattr(first.config, name)!r}")
            if (p.obs_names, p.features, p.max_order) != (first.obs_names, first.features,
                                                          first.max_order):
                raise ValueError(f"policy {k} is for another instance layout than member 0")
            if (p.config.output_bounds is None) != (first.config.output_bounds is None):
                raise ValueError(f"policy {k}: output_bounds must be given for every member "
                                 "or none")
        self.templates = [copy.deepcopy(p) for p in policies]
        self.config = first.config
        self.max_order = first.max_order
        self.net = StackedMLP(policies, first.config.activation)
        self.register_buffer("obs_mean", torch.stack([p.obs_mean for p in policies]).clone())
        self.register_buffer("obs_std", torch.stack([p.obs_std for p in policies]).clone())
        bounds = [p.config.output_bounds for p in policies]
        self.register_buffer("bounds", None if bounds[0] is None else
                             torch.tensor(bounds, dtype=self.obs_mean.dtype,
                                          device=self.obs_mean.device))
        self.index: Tensor | None = None  # see :meth:`restricted`
        # members whose outputs were not finite since their weights were last loaded
        self.register_buffer("spoilt", torch.zeros(len(policies), dtype=torch.bool,
                                                   device=self.obs_mean.device),
                             persistent=False)

    @contextlib.contextmanager
    def restricted(self, members: list[int] | None):
        """Inside the block, ``raw`` / ``forward`` run the given members only, on their SKUs
        side by side (None: all), so that stopped members cost nothing."""
        self.index = None if members is None else torch.tensor(members,
                                                               device=self.obs_mean.device)
        try:
            yield self
        finally:
            self.index = None

    @property
    def members(self) -> int:
        return self.obs_mean.shape[0]

    def raw(self, obs: Tensor) -> Tensor:
        """The pre-projection outputs [K * B, k] for observations [K * B, n]. A member's
        non-finite outputs are replaced by 0 and the member marked ``spoilt`` (``healthy``
        then stops it): the ops, which refuse NaN orders, would otherwise fail every member."""
        x = self.normalize(obs)
        x = self.net(x, self.index)
        if self.bounds is not None:
            bounds = self.bounds if self.index is None else self.bounds[self.index]
            low, high = bounds[:, :1, None], bounds[:, 1:, None]
            x = low + (high - low) * torch.sigmoid(x)
        return self._finite(x).reshape(-1, x.shape[-1])

    def _finite(self, x: Tensor) -> Tensor:
        """``x`` [K', ...] (the members of :meth:`restricted`) with non-finite values replaced
        by 0, their members marked ``spoilt`` (no host synchronisation: ``healthy`` reads it
        back)."""
        finite = torch.isfinite(x)
        with torch.no_grad():
            bad = ~finite.flatten(1).all(1)
            if self.index is None:
                self.spoilt |= bad
            else:
                self.spoilt.index_copy_(0, self.index, self.spoilt[self.index] | bad)
        return torch.where(finite, x, torch.zeros_like(x))

    def normalize(self, obs: Tensor) -> Tensor:
        """Observations [K * B, n] as each member's network input [K, B, n] (the members of
        :meth:`restricted` only)."""
        mean, std = ((self.obs_mean, self.obs_std) if self.index is None else
                     (self.obs_mean[self.index], self.obs_std[self.index]))
        x = obs.to(mean.dtype).view(mean.shape[0], -1, obs.shape[-1])
        return (x - mean.unsqueeze(1)) / std.unsqueeze(1)

    def project(self, raw: Tensor, state) -> Tensor:
        """Orders [K * B] from the pre-projection outputs [K * B, k] (the head's projection,
        once over every member's SKUs)."""
        raw = raw.to(state.on_hand.dtype)
        cap = self.max_order if self.max_order is not None else math.inf
        return HEADS[self.config.head].project(raw, state, cap)

    def forward(self, state) -> Tensor:
        """The deterministic actions [K * B] of the members for a K * B-SKU state. Finite
        outputs can still make an infinite order (a None head's output times the demand
        scale overflows): such a member is spoilt too, its orders 0."""
        orders = self.project(self.raw(state.obs), state)
        members = self.members if self.index is None else self.index.numel()
        return self._finite(orders.view(members, -1)).view(-1)

    # ---- one member at a time ------------------------------------------------------------
    def member_state(self, k: int) -> dict:
        """Member k's weights as a :class:`Policy` ``state_dict`` (copies)."""
        return {"obs_mean": self.obs_mean[k].clone(), "obs_std": self.obs_std[k].clone(),
                **self.net.member_state(k)}

    @torch.no_grad()
    def load_member_state(self, k: int, state: dict) -> None:
        """Writes a :class:`Policy` ``state_dict`` into member k."""
        self.obs_mean[k].copy_(state["obs_mean"])
        self.obs_std[k].copy_(state["obs_std"])
        self.net.load_member_state(k, state)
        self.spoilt[k] = False

    def member(self, k: int) -> Policy:
        """Member k as a stand-alone :class:`Policy` (a copy)."""
        policy = copy.deepcopy(self.templates[k]).to(self.obs_mean.device)
        policy.load_state_dict(self.member_state(k))
        return policy

    @torch.no_grad()
    def healthy(self) -> list[bool]:
        """Per member: its weights, its outputs on typical inputs (the normalisation's mean
        and one standard deviation either side) and every output since its weights were loaded
        are finite (as ``ds.healthy`` for one)."""
        K = self.members
        ok = ~self.spoilt
        for p in self.parameters():
            ok &= torch.isfinite(p).flatten(1).all(1)
        steps = torch.tensor([0.0, 1.0, -1.0]).to(self.obs_std)
        probe = self.obs_mean.unsqueeze(1) + steps.view(1, 3, 1) * self.obs_std.unsqueeze(1)
        self.raw(probe.reshape(K * 3, -1))  # marks a member spoilt on non-finite outputs
        return (ok & ~self.spoilt).tolist()


# ---- the optimizer, clipping and schedule, per member ---------------------------------------
class StackedAdam:
    """``torch.optim.Adam`` (no weight decay, no amsgrad) over parameters whose first dimension
    is the member, with a learning rate and a step count per member: member k's slices follow
    exactly the arithmetic of ``torch.optim.Adam`` on that member alone. ``step(active)``
    updates only the members marked True (the others keep weights and statistics).

    Args:
        params: tensors [K, ...] with ``.grad``.
        lrs: K learning rates (``lr[k]`` may be changed between steps, e.g. by
            :class:`PlateauLR`).
    """

    def __init__(self, params, lrs: list[float], betas=(0.9, 0.999), eps: float = 1e-8):
        self.params = list(params)
        self.lr = [float(v) for v in lrs]
        self.betas, self.eps = betas, eps
        self.steps = [0] * len(self.lr)
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, active: list[bool]) -> None:
        members = [k for k, a in enumerate(active) if a]
        if not members:
            return
        beta1, beta2 = self.betas
        for k in members:
            self.steps[k] += 1
        # Python floats, as torch.optim.Adam computes them, then one number per member
        step_size = [self.lr[k] / (1 - beta1 ** self.steps[k]) for k in members]
        bias2_sqrt = [(1 - beta2 ** self.steps[k]) ** 0.5 for k in members]
        every = len(members) == len(self.lr)
        index = None if every else torch.tensor(members, device=self.params[0].device)
        for p, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq):
            grad = p.grad if every else p.grad.index_select(0, index)
            pm, mm, vm = (p, m, v) if every else (t.index_select(0, index) for t in (p, m, v))
            shape = (len(members),) + (1,) * (p.dim() - 1)
            neg_step = torch.tensor([-s for s in step_size], dtype=p.dtype,
                                    device=p.device).view(shape)
            denom_scale = torch.tensor(bias2_sqrt, dtype=p.dtype, device=p.device).view(shape)
            mm.lerp_(grad, 1 - beta1)
            vm.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (vm.sqrt() / denom_scale).add_(self.eps)
            pm.add_(neg_step * mm / denom)  # addcdiv's (value * t1) / t2
            if not every:
                for full, part in ((p, pm), (m, mm), (v, vm)):
                    full.index_copy_(0, index, part)

    def state_dict(self) -> dict:
        return {"lr": list(self.lr), "steps": list(self.steps), "exp_avg": self.exp_avg,
                "exp_avg_sq": self.exp_avg_sq}

    def load_state_dict(self, state: dict) -> None:
        self.lr, self.steps = list(state["lr"]), list(state["steps"])
        for mine, saved in zip(self.exp_avg + self.exp_avg_sq,
                               state["exp_avg"] + state["exp_avg_sq"]):
            mine.copy_(saved)


@torch.no_grad()
def clip_grad_norms_(params: list[Tensor], max_norms: list[float]) -> Tensor:
    """``torch.nn.utils.clip_grad_norm_`` per member: the gradients [K, ...] of member k are
    scaled by min(1, max_norms[k] / (norm_k + 1e-6)), norm_k the 2-norm of all of member k's
    gradients. Returns the norms [K] (before clipping)."""
    grads = [p.grad for p in params if p.grad is not None]
    K = grads[0].shape[0]
    norms = torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(g.reshape(K, -1), 2, dim=1) for g in grads]),
        2, dim=0)
    top = torch.tensor(max_norms, dtype=norms.dtype, device=norms.device)
    coef = torch.clamp(top / (norms + 1e-6), max=1.0)
    for g in grads:
        g.mul_(coef.view((K,) + (1,) * (g.dim() - 1)))
    return norms


class PlateauLR:
    """``torch.optim.lr_scheduler.ReduceLROnPlateau`` (mode min, relative threshold 1e-4, no
    cooldown) on each member's learning rate in a :class:`StackedAdam`: ``step(k, value)`` is
    member k's ``scheduler.step(value)``."""

    threshold, eps = 1e-4, 1e-8

    def __init__(self, optimizer: StackedAdam, factors: list[float], patiences: list[int],
                 min_lrs: list[float]):
        self.optimizer = optimizer
        self.factors, self.patiences, self.min_lrs = factors, patiences, min_lrs
        self.best = [math.inf] * len(factors)
        self.bad = [0] * len(factors)

    def step(self, k: int, value: float) -> None:
        if value < self.best[k] * (1 - self.threshold):
            self.best[k], self.bad[k] = value, 0
        else:
            self.bad[k] += 1
        if self.bad[k] > self.patiences[k]:
            old = self.optimizer.lr[k]
            new = max(old * self.factors[k], self.min_lrs[k])
            if old - new > self.eps:
                self.optimizer.lr[k] = new
            self.bad[k] = 0

    def state_dict(self) -> dict:
        return {"best": list(self.best), "bad": list(self.bad)}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.bad = list(state["best"]), list(state["bad"])


# ---- K environments as one ----------------------------------------------------------------
def concat_envs(envs: list[InventoryEnv]) -> InventoryEnv:
    """One environment over the SKUs of ``envs`` (of one instance) side by side, for
    :meth:`InventoryEnv.simulate` on :func:`concat_episodes` (its generator is not used)."""
    out = copy.copy(envs[0])
    out.num_envs = sum(e.num_envs for e in envs)
    if envs[0].lead_time is None:  # a catalog's: each episode carries its SKUs' parameters
        return out
    out.lead_time = torch.cat([e.lead_time for e in envs])
    for name in ("holding_cost", "penalty_cost", "order_cost"):
        parts = [getattr(e, name) for e in envs]
        if parts[0].numel() > 1:  # per-SKU values
            setattr(out, name, torch.cat([p.expand(e.num_envs) for p, e in zip(parts, envs)]))
    return out


def stepping_env(envs: list[InventoryEnv]) -> InventoryEnv:
    """:func:`concat_envs` for ``step``: it starts on the members' current episodes (the
    environments must have been reset), and at the horizon each member's next episode is
    drawn from its own environment's generator, as its single run's would be. Its
    ``state_dict`` holds the joint state; the members' generators are saved apart."""
    out = concat_envs(envs)
    out.sample_episode = lambda generator=None: concat_episodes(
        [e.sample_episode() for e in envs])
    out._begin_state(concat_episodes([e._episode for e in envs]))
    return out


def validation(runs: list, policy: StackedPolicy, ctx=None) -> Callable[[list[bool]],
                                                                         list[float]]:
    """``validate(active)`` for :func:`~.common.run_members`: the active members' validation
    costs (NaN for the others), each on its own fixed validation episode (``runs``: the
    members' :class:`~.common.Setup`), in one unroll over their SKUs side by side. With a
    data-parallel ``ctx`` (one member), each rank costs its shard of the episode and the
    ranks' means are averaged, so that every rank decides alike."""
    from .. import distributed
    ctx = ctx or distributed.Context()
    sharded = ctx.world > 1 and runs[0].validation.demand.shape[0] % ctx.world == 0
    cache: dict = {}

    def validate(active: list[bool]) -> list[float]:
        members = [k for k, a in enumerate(active) if a]
        if tuple(members) not in cache:  # the environment and episode of these members
            cache.clear()
            cache[tuple(members)] = (concat_envs([runs[k].valid_env for k in members]),
                                     concat_episodes([runs[k].validation for k in members]))
        env, episode = cache[tuple(members)]
        if sharded:
            episode = distributed.shard_episode(episode, ctx)
        with torch.no_grad(), policy.restricted(None if len(members) == len(runs)
                                                else members):
            cost = env.simulate(policy, episode).average_cost
        means = cost.view(len(members), -1).mean(1)
        if sharded:
            means = distributed.mean(means, ctx)
        values = [math.nan] * len(runs)
        for k, value in zip(members, means.tolist()):
            values[k] = value
        return values

    return validate



def actor_critic(instance: InstanceConfig, policy_configs: list[PolicyConfig], configs: list,
                 device, critic_inputs: Callable) -> tuple:
    """What a PPO or DDPG population starts from, each member's draws in its single run's
    order (its :func:`~.common.setup` with a reset environment of ``num_envs`` SKUs, its
    critic's initial weights, its reward scale): (the members' Setups, the stacked actor, the
    stepping environment, a module holding the stacked ``critic``, an MLP of
    ``critic_inputs(setup)`` inputs, ``critic_hidden`` and one output, and the members'
    ``reward_scale`` [K])."""
    runs, critics, scales = [], [], []
    for pc, c in zip(policy_configs, configs):
        run = setup(instance, pc, train_skus=c.num_envs, validation_skus=c.validation_skus,
                    seed=c.seed, device=device, reset=True)
        runs.append(run)
        critics.append(mlp([critic_inputs(run), *c.critic_hidden, 1], pc.activation).to(device))
        scales.append(reward_scale(run.instance, c.seed, device))
    actor = StackedPolicy([r.policy for r in runs])
    extra = nn.Module()
    extra.critic = StackedMLP(critics, actor.config.activation)
    extra.register_buffer("reward_scale", torch.tensor(scales, dtype=torch.float64,
                                                       device=device))
    return runs, actor, stepping_env([r.env for r in runs]), extra


# ---- lists of configurations -----------------------------------------------------------------
def choose_threads(skus: int) -> int:
    """Torch threads for work over ``skus`` SKUs per op: one below 2^14 SKUs (more threads
    only add synchronisation to small ops, and on a shared machine a busy core stalls every
    parallel region), then one per 2^14 SKUs up to the process's thread count (the CPU count,
    ``OMP_NUM_THREADS``, or a tuning worker's share of the cores)."""
    return max(1, min(torch.get_num_threads(), os.cpu_count() or 1, skus // 2 ** 14))


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Runs the block with ``n`` torch threads (None: unchanged), restoring the count after."""
    if n is None:
        yield
        return
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"threads must be an int >= 1 or None, got {n!r}")
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def as_members(policy_config, config, default_policy: Callable[[], PolicyConfig],
               config_class: type) -> tuple[list, list, bool]:
    """(K policy configs, K configs, whether lists were given): a single one of either is
    broadcast to the other's length; None gives the default. A ``ValueError`` names the
    argument that is wrong."""
    many = isinstance(policy_config, (list, tuple)) or isinstance(config, (list, tuple))
    pcs = list(policy_config) if isinstance(policy_config, (list, tuple)) else None
    cfgs = list(config) if isinstance(config, (list, tuple)) else None
    if pcs is not None and cfgs is not None and len(pcs) != len(cfgs):
        raise ValueError(f"policy_config and config must be lists of the same length, got "
                         f"{len(pcs)} and {len(cfgs)}")
    K = len(pcs if pcs is not None else cfgs) if many else 1
    if many and K == 0:
        raise ValueError("policy_config or config is an empty list: a population needs at "
                         "least one member")
    pcs = pcs if pcs is not None else [policy_config] * K
    cfgs = cfgs if cfgs is not None else [config] * K
    pcs = [default_policy() if p is None else p for p in pcs]
    cfgs = [config_class() if c is None else c for c in cfgs]
    for name, items, kind in (("policy_config", pcs, PolicyConfig),
                              ("config", cfgs, config_class)):
        for k, item in enumerate(items):
            if not isinstance(item, kind):
                where = f"{name}[{k}]" if many else name
                raise ValueError(f"{where} must be a {kind.__name__}, got "
                                 f"{type(item).__name__}")
    return pcs, cfgs, many


def shape_groups(pcs: list[PolicyConfig], cfgs: list, per_member: tuple[str, ...]
                 ) -> list[list[int]]:
    """The members' indices grouped by everything but the fields that may differ within a
    population (``per_member`` of the trainer's config, :data:`POLICY_PER_MEMBER`), in order
    of first appearance."""
    groups: dict = {}
    for k, (pc, c) in enumerate(zip(pcs, cfgs)):
        key = (repr({f: v for f, v in dataclasses.asdict(pc).items()
                     if f not in POLICY_PER_MEMBER}),
               repr({f: v for f, v in dataclasses.asdict(c).items() if f not in per_member}))
        groups.setdefault(key, []).append(k)
    return list(groups.values())


def train_members(algo: str, train_group: Callable, instance, policy_config, config, *,
                  per_member: tuple[str, ...], default_policy, config_class, device, out_dir,
                  resume, progress, label, callbacks, threads, skus: Callable,
                  write: bool = True):
    """A trainer's entry point for one configuration or lists of them (:func:`as_members`).

    Splits the members into :func:`shape_groups` and calls ``train_group(instance, pcs,
    cfgs, members=indices, checkpoint_path=, dirs=, population=, resume=, progress=, label=,
    callbacks=, interruption=, device=)`` for each, in order, inside one claim of ``out_dir``;
    ``train_group`` returns (K policies, K RunResults). Files with ``out_dir``: a single
    configuration writes ``checkpoint.pt``, ``policy.pt`` and ``metrics.csv`` there; lists
    write ``member-<k>/policy.pt`` and ``member-<k>/metrics.csv`` per member and one
    ``checkpoint.pt`` per group (``checkpoint-<g>.pt`` for groups after the first).
    ``threads``: torch threads for the call (None: :func:`choose_threads` of ``skus(cfg)``
    times K, the largest group's). ``write=False``: files in ``out_dir`` are only read (the
    ranks but 0 of a data-parallel run, :mod:`deepstock_fast.distributed`). Returns (Policy, RunResult), or lists of K of them in the
    input order when lists were given."""
    pcs, cfgs, many = as_members(policy_config, config, default_policy, config_class)
    if isinstance(instance, str):
        instance = InstanceConfig.from_name(instance)
    groups = shape_groups(pcs, cfgs, per_member)
    if threads is None:
        threads = max(choose_threads(skus(cfgs[g[0]]) * len(g)) for g in groups)
    out = None if out_dir is None else pathlib.Path(out_dir)
    policies, results = [None] * len(cfgs), [None] * len(cfgs)
    with torch_threads(threads), claimed(out_dir, callbacks, write) as interruption:
        for g, members in enumerate(groups):
            name = "checkpoint.pt" if g == 0 else f"checkpoint-{g}.pt"
            dirs = [None] * len(members) if out is None else \
                [out / f"member-{k}" if many else out for k in members]
            got = train_group(
                instance, [pcs[k] for k in members], [cfgs[k] for k in members],
                members=members, checkpoint_path=None if out is None else out / name,
                dirs=dirs, population=many, resume=resume, progress=progress,
                label=label if len(groups) == 1 else f"{label} {g + 1}/{len(groups)}",
                callbacks=list(callbacks), interruption=interruption, device=device, write=write)
            for k, policy, result in zip(members, *got):
                policies[k], results[k] = policy, result
    return (policies, results) if many else (policies[0], results[0])


def identity(algo: str, instance: InstanceConfig, pcs, cfgs, members, population: bool,
             policies: list[Policy]) -> dict:
    """What a checkpoint must match to be resumed: the instance and each member's
    configurations (as a single run's identity when not a population)."""
    def one(k):
        return {"config": dataclasses.asdict(cfgs[k]),
                "policy_config": dataclasses.asdict(policies[k].config)}
    if not population:
        return {"algo": algo, "instance": instance.to_dict(), **one(0)}
    return {"algo": algo, "instance": instance.to_dict(),
            "members": {str(m): one(i) for i, m in enumerate(members)}}


class StackedWeights:
    """:func:`~.common.run_members`'s view of a :class:`StackedPolicy`'s members."""

    def __init__(self, policy: StackedPolicy, instance: InstanceConfig):
        self.policy, self.instance = policy, instance.to_dict()

    def state(self, k: int) -> dict:
        return self.policy.member_state(k)

    def load(self, k: int, state: dict) -> None:
        self.policy.load_member_state(k, state)

    def save(self, k: int, path: pathlib.Path) -> None:
        self.policy.member(k).save(path, instance=self.instance)
