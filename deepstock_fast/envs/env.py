"""``InventoryEnv``: B SKUs of one :class:`InstanceConfig` stepped together on one device.

One ``step`` is one review epoch (P days): one native ``env_step`` call (``inventory_step``, the
next ``observation``, the reward and the metric totals in one pass); no Python loop over
environments and no host synchronisation. An episode's exogenous part
(demand, features, the observation entries that do not depend on the state) is drawn at reset
from the environment's seeded ``torch.Generator``, so a seed fixes every trajectory.

Conventions follow gymnasium's vector environments, with torch tensors: ``reset(seed) -> (obs,
info)``, ``step(order) -> (obs, reward, terminated, truncated, info)``. Every SKU's episode ends
at the horizon, as ``terminated`` when the instance's ``finite_horizon`` is set (the problem
ends there: nothing to bootstrap) and as ``truncated`` otherwise (a long-run problem cut
short), and the environment resets in the same step ("same-step" autoreset): the returned ``obs`` starts the next episode, and
``info["final_obs"]`` and ``info["episode"]`` (the finished episode's per-SKU
:class:`~deepstock_fast.metrics.Metrics`) describe the one that ended.

Observation ``[B, obs_size]``, names in ``env.obs_names``, in this order:
    on_hand, pipeline_0 .. pipeline_{max_lead-1}      (quantities)
    demand_-k .. demand_-1: the last ``observed_demand_days`` days (quantities)
    the ``features`` (quantities, except ``constant`` = 1), unless ``observe_features`` is False
    the exogenous features among them (a sales history's ``<column>_next_<k>``,
    ``<column>_last``) are not quantities and are not scaled
    lead_time, holding_cost, penalty_cost, order_cost: only those that differ between SKUs;
    review_period when the SKUs of a catalog have their own
    extra observations: ``day`` (day / horizon), ``yesterday`` (quantity), ``std`` (quantity:
    the demand process's per-SKU standard deviation parameter)
Quantities are divided by the SKU's ``scale`` [B]: the mean demand of the ``history_days`` drawn
before the episode (at least 1) with ``obs_scale="history"``, or the number ``obs_scale``.
``state().features`` holds the features unscaled, in demand units, for the Coeff projection.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from torch import Tensor

from ..metrics import Metrics, business_metrics
from ..ops import env_step, inventory_step, observation
from .config import InstanceConfig
from .features import demand_features, exogenous_feature, exogenous_features
from .simulate import SimState, SimulationResult, simulate


class Episode(NamedTuple):
    """The exogenous part of one episode of B SKUs (E = horizon / P review epochs)."""

    demand: Tensor          # [B, T] demand of the horizon's days
    epoch_demand: Tensor    # [E, B, P] the same, per epoch (contiguous slices for step)
    features: Tensor        # [E + 1, B, m] features at each epoch start (and after the last)
    exogenous_obs: Tensor   # [E + 1, B, n] the observation's state-independent columns
    scale: Tensor           # [B]
    on_hand: Tensor         # [B] initial state
    pipeline: Tensor        # [B, max_lead] initial state
    # the SKUs' parameters ([B], or [1] when shared); of a catalog, those of the SKUs drawn
    lead_time: Tensor | None = None
    holding_cost: Tensor | None = None
    penalty_cost: Tensor | None = None
    order_cost: Tensor | None = None
    sku: Tensor | None = None          # [B] the catalog rows drawn (None: not a catalog)
    start: Tensor | None = None        # [B] the first day of each window in the history
    review_period: Tensor | None = None  # [B] each SKU's own review period (None: the instance's)



#: The dimension of each :class:`Episode` field that runs over the SKUs.
EPISODE_SKU_DIM = {"demand": 0, "epoch_demand": 1, "features": 1, "exogenous_obs": 1,
                   "scale": 0, "on_hand": 0, "pipeline": 0, "lead_time": 0, "holding_cost": 0,
                   "penalty_cost": 0, "order_cost": 0, "sku": 0, "start": 0,
                   "review_period": 0}
#: Episode fields that may be [1], one value shared by every SKU.
SHARED_FIELDS = ("lead_time", "holding_cost", "penalty_cost", "order_cost")


def concat_episodes(episodes: list[Episode]) -> Episode:
    """The episodes' SKUs side by side (each field concatenated along its SKU dimension); a
    parameter that every episode shares ([1]) with the same value stays shared."""
    fields = {}
    for name in Episode._fields:
        values = [getattr(e, name) for e in episodes]
        if all(v is None for v in values):
            fields[name] = None
            continue
        if any(v is None for v in values):
            raise ValueError(f"episodes: some have {name} and some do not")
        if name in SHARED_FIELDS:
            if all(v.numel() == 1 for v in values) and \
                    all(torch.equal(v, values[0]) for v in values):
                fields[name] = values[0]
                continue
            values = [v.expand(e.demand.shape[0]) if v.numel() == 1 else v
                      for v, e in zip(values, episodes)]
        fields[name] = torch.cat(values, EPISODE_SKU_DIM[name])
    return Episode(**fields)

def draw_rows(B: int, K: int, g: torch.Generator, device) -> Tensor:
    """The rows [B] of K (a catalog's SKUs, a training set's trajectories) that an episode of B
    SKUs draws: all in order when B = K, else a random subset (B < K) or every row in turn,
    more than once (B > K)."""
    if B == K:
        return torch.arange(K, device=device)
    if B < K:
        return torch.randperm(K, generator=g, device=device)[:B]
    return torch.arange(B, device=device) % K


def select_skus(episode: Episode, rows: Tensor) -> Episode:
    """The episode of the SKUs ``rows`` [B'] of ``episode`` (shared [1] parameters stay)."""
    return Episode(**{
        name: v if v is None or (name in SHARED_FIELDS and v.numel() == 1)
        else v.index_select(EPISODE_SKU_DIM[name], rows) for name, v in episode._asdict().items()})


class InventoryEnv:
    """Batched environment over ``config.num_skus`` SKUs whose state lives on ``device``.

    Args:
        config: the instance (:class:`InstanceConfig`, a dict of its fields, or a name such as
            ``"zipkin:L=2,p=9"``).
        device: where the state, the demand and every output live.
        seed: seeds the environment's generator (``reset(seed=...)`` reseeds it).
    """

    def __init__(self, config: InstanceConfig | dict | str, device: str | torch.device = "cpu",
                 seed: int | None = None):
        if isinstance(config, str):
            config = InstanceConfig.from_name(config)
        elif isinstance(config, dict):
            config = InstanceConfig.from_dict(config)
        self.config = config
        self.device = torch.device(device)
        self.dtype = config.torch_dtype
        self.num_envs = config.num_skus
        self.num_epochs = config.horizon // config.review_period
        self.max_lead = config.max_lead
        self.max_order = config.max_order
        self._process = config.demand_process(self.device)
        self._generator = torch.Generator(device=self.device)
        if seed is None:
            self._generator.seed()
        else:
            self._generator.manual_seed(seed)
        B = self.num_envs
        # per-SKU parameters: of the environment's SKUs, or of every catalog SKU (an episode
        # then takes those of the SKUs it draws)
        self._params = {"lead_time": config.per_sku_tensor("lead_time", self.device,
                                                           torch.int64)}
        for name in ("holding_cost", "penalty_cost", "order_cost"):
            self._params[name] = config.per_sku_tensor(name, self.device)
        self._catalog = config.catalog_size is not None
        # the current episode's (a catalog's are known once an episode has drawn its SKUs)
        self.lead_time = self.holding_cost = self.penalty_cost = self.order_cost = None
        if not self._catalog:
            self.lead_time = self._params["lead_time"].expand(B)
            self.holding_cost, self.penalty_cost, self.order_cost = (
                self._params[n] for n in ("holding_cost", "penalty_cost", "order_cost"))
        self._varying = [n for n in ("lead_time", "holding_cost", "penalty_cost", "order_cost")
                         if config.varies(n)]
        # SKUs with their own review periods (daily steps; an order only on a SKU's review days)
        review = config.sku_review_periods(self.device)
        if review is not None:
            self._params["review_period"] = review
            self._varying.append("review_period")
        if "std" in config.extra_observations:
            # InstanceConfig checked that the demand process has one of the two
            std = getattr(self._process, "std", getattr(self._process, "sigma", None))
            self._std = std.to(self.dtype)
        self.obs_names = (
            ["on_hand"] + [f"pipeline_{k}" for k in range(self.max_lead)]
            + [f"demand_-{k}" for k in range(config.observed_demand_days, 0, -1)]
            + (list(config.features) if config.observe_features else [])
            + self._varying + list(config.extra_observations))
        self.obs_size = len(self.obs_names)
        self._episode: Episode | None = None
        self._epoch = 0
        self.last_metrics: Metrics | None = None
        # a training set: its trajectories drawn once, the same whatever this env's seed
        self._dataset = None
        if config.dataset_size:
            self._dataset = InventoryEnv(config.dataset_instance(), self.device,
                                         seed=config.dataset_seed).sample_episode()

    @property
    def generator(self) -> torch.Generator:
        """The generator episodes are drawn from (its state is what a checkpoint saves)."""
        return self._generator

    def state_dict(self) -> dict:
        """Everything that determines the rest of the run: the generator, the current episode and
        state, the metric accumulators (for checkpoints; ``load_state_dict`` restores it)."""
        return {"generator": self._generator.get_state(),
                "episode": None if self._episode is None else self._episode._asdict(),
                "epoch": self._epoch,
                **({} if self._episode is None else {
                    "on_hand": self._on_hand, "pipeline": self._pipeline, "obs": self._obs,
                    "cost": self._cost, "stats": self._stats})}

    def load_state_dict(self, state: dict) -> None:
        self._generator.set_state(state["generator"].cpu())
        self._epoch = state["epoch"]
        if state["episode"] is None:
            self._episode = None
            return
        to = lambda t: t.to(self.device)  # noqa: E731
        self._episode = Episode(**{k: None if v is None else to(v)
                                   for k, v in state["episode"].items()})
        self._begin_state(self._episode)
        self._epoch = state["epoch"]
        self._on_hand, self._pipeline, self._obs = (to(state[k]) for k in
                                                    ("on_hand", "pipeline", "obs"))
        self._cost, self._stats = to(state["cost"]), to(state["stats"])

    # ---- the exogenous part of an episode ---------------------------------------------------
    def sample_episode(self, generator: torch.Generator | None = None) -> Episode:
        """Draws one episode's demand, features and initial state for all B SKUs (from the
        environment's generator unless another is given)."""
        c, g = self.config, generator or self._generator
        B, H, T, P, E = c.num_skus, c.history_days, c.horizon, c.review_period, self.num_epochs
        if self._dataset is not None:
            return select_skus(self._dataset, draw_rows(B, c.dataset_size, g, self.device))
        sku = start = None
        exogenous_columns = {}
        if self._catalog:
            sku, start, path, exogenous_columns = self._draw_windows(g)
            params = {n: t if t.numel() == 1 else t[sku] for n, t in self._params.items()}
        else:
            path = self._process.sample(c.days_per_episode, generator=g).reshape(B, -1)
            params = dict(self._params)
        params["lead_time"] = params["lead_time"].expand(B)
        params.setdefault("review_period", None)
        # features from the float64 draws; everything else in the config's dtype
        names = c.features
        demand_names = tuple(n for n in names if exogenous_feature(n) is None)
        features = demand_features(path, H, range(0, T + 1, P), demand_names,
                                   c.forecast_noise_std, g, dtype=self.dtype)  # [E + 1, B, m]
        if len(demand_names) < len(names):
            exogenous = exogenous_features(exogenous_columns, H, range(0, T + 1, P),
                                           tuple(n for n in names if n not in demand_names),
                                           self.dtype)
            order = [demand_names.index(n) if n in demand_names else
                     len(demand_names) + [m for m in names if m not in demand_names].index(n)
                     for n in names]
            features = torch.cat([features, exogenous], 2)[:, :, order]
        path = path.to(self.dtype)
        if c.obs_scale == "history":
            mean = path[:, :H].mean(1) if H else path.new_ones(B)
            scale = mean.clamp(min=1.0)
        else:
            scale = path.new_full((B,), float(c.obs_scale))
        inv_scale = (1.0 / scale).view(1, B, 1)
        exogenous = path.new_empty(E + 1, B, self.obs_size - 1 - self.max_lead)
        filled = 0

        def put(block: Tensor, factor: Tensor | None = None) -> None:
            # block broadcasts to [E + 1, B, width]; with a factor, block is that shape and the
            # product is written in place (no temporary: at 2^16 SKUs mostly page faults)
            nonlocal filled
            target = exogenous[:, :, filled:filled + block.shape[-1]]
            if factor is None:
                target.copy_(block)
            else:
                torch.mul(block, factor, out=target)
            filled += block.shape[-1]

        if c.observed_demand_days:  # the k days before each epoch start
            k = c.observed_demand_days
            put(path[:, H - k:H + T].unfold(1, k, P).transpose(0, 1) * inv_scale)
        quantity = torch.tensor([f != "constant" and exogenous_feature(f) is None
                                 for f in c.features], dtype=torch.bool, device=self.device)
        if c.observe_features:
            put(features, torch.where(quantity, inv_scale, 1.0))
        for name in self._varying:
            put(params[name].to(self.dtype).expand(B).view(1, -1, 1))
        for name in c.extra_observations:
            if name == "day":
                put(torch.arange(0, T + 1, P, device=self.device).to(self.dtype).view(-1, 1, 1)
                    / T)
            elif name == "yesterday":
                put(path[:, H - 1:H + T:P].T.unsqueeze(2) * inv_scale if H else
                    path.new_zeros(1, 1, 1))
            else:  # std
                put((self._std.view(1, -1, 1) * inv_scale))
        demand = path[:, H:H + T]
        on_hand = path.new_zeros(B)
        pipeline = path.new_zeros(B, self.max_lead)
        if c.initial_state == "mean_demand":
            mean = path[:, :H].mean(1) if H else path.new_zeros(B)
            on_hand = mean.clone()
            in_transit = torch.arange(self.max_lead, device=self.device) < \
                params["lead_time"].view(-1, 1)
            pipeline = torch.where(in_transit, mean.view(-1, 1), 0.0)
        return Episode(demand, demand.reshape(B, E, P).transpose(0, 1).contiguous(),
                       features.contiguous(), exogenous, scale, on_hand, pipeline,
                       params["lead_time"], params["holding_cost"], params["penalty_cost"],
                       params["order_cost"], sku=sku, start=start,
                       review_period=params["review_period"])

    def _draw_windows(self, g: torch.Generator):
        """An episode's SKUs and windows of a catalog: all SKUs in order when the environment
        has as many, else a random subset (or every SKU in turn, more than once, when it has
        more); a window per SKU at a random start allowed by the demand's period. Returns
        (sku [B], start [B], demand path [B, days], exogenous columns {name: [B, days]})."""
        c, process = self.config, self._process
        B, K, days = c.num_skus, process.num_skus, c.days_per_episode
        sku = draw_rows(B, K, g, self.device)
        lo, hi = process.start_range(days, c.history_days)
        start = torch.full((B,), lo, device=self.device, dtype=torch.int64)
        if hi > lo:
            start += torch.randint(0, hi - lo + 1, (B,), generator=g, device=self.device)
        index = start.view(-1, 1) + torch.arange(days, device=self.device)

        def window(history: Tensor) -> Tensor:
            rows = history if B == K else history.index_select(0, sku)
            return rows.gather(1, index)

        used = {exogenous_feature(n)[0] for n in c.features if exogenous_feature(n)}
        return sku, start, window(process.history), {
            n: window(process.exogenous[n]) for n in used}

    def _observation(self, episode: Episode, on_hand: Tensor, pipeline: Tensor,
                     epoch: int) -> Tensor:
        return observation(on_hand, pipeline, episode.exogenous_obs[epoch], episode.scale)

    def observe(self, episode: Episode, on_hand: Tensor, pipeline: Tensor,
                epoch: int) -> SimState:
        """The observation and features at the start of ``epoch`` of ``episode`` in the given
        state (the same function serves ``step`` and the differentiable ``simulate``)."""
        return self._state_from(episode, on_hand, pipeline, epoch,
                                self._observation(episode, on_hand, pipeline, epoch))

    def _state_from(self, episode, on_hand, pipeline, epoch, obs) -> SimState:
        day = epoch * self.config.review_period
        return SimState(on_hand, pipeline, on_hand + pipeline.sum(1), episode.lead_time, day,
                        episode.demand[:, :day], obs, episode.features[epoch], episode.scale)

    # ---- gymnasium-style interface ------------------------------------------------------------
    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[Tensor, dict]:
        """Starts a new episode for every SKU; returns (obs [B, obs_size], info {})."""
        if seed is not None:
            self._generator.manual_seed(seed)
        self._begin()
        return self._obs, {}

    def step(self, action: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, dict]:
        """Orders ``action`` [B] (>= 0, clipped to max_order) and runs one review epoch.

        Returns obs [B, obs_size], reward [B] (minus the epoch's cost), terminated [B] and
        truncated [B] (at the horizon, when the SKUs reset: terminated for a ``finite_horizon``
        instance, truncated otherwise; both False before), and info with ``cost`` [B, 3]
        and ``stats`` [B, 4] of the epoch (plus ``final_obs`` and ``episode`` at the horizon).
        ``step`` does not record gradients; ``simulate`` is the differentiable path.
        """
        if self._episode is None:
            raise RuntimeError("call reset() before step()")
        if not isinstance(action, Tensor) or action.shape != (self.num_envs,):
            shape = tuple(action.shape) if isinstance(action, Tensor) else type(action).__name__
            raise ValueError(f"action must be a tensor of shape [{self.num_envs}] (one order per "
                             f"SKU), got {shape}")
        order = action.detach().to(device=self.device, dtype=self.dtype)
        if self.max_order is not None:
            order = order.clamp(max=self.max_order)
        c, e, episode = self.config, self._epoch, self._episode
        order = reviewed(order, episode, e * c.review_period)
        out = env_step(self._on_hand, self._pipeline, episode.lead_time, order,
                       episode.epoch_demand[e], episode.holding_cost, episode.penalty_cost,
                       episode.order_cost, c.lost_sales, episode.exogenous_obs[e + 1],
                       episode.scale, self._cost, self._stats, accumulate=e * c.review_period >= c.warmup)
        self._epoch = e + 1
        self._cost, self._stats = out.cost_total, out.stats_total
        info = {"cost": out.cost, "stats": out.stats}
        reward, obs = out.reward, out.obs
        if self._epoch < self.num_epochs:
            self._on_hand, self._pipeline, self._obs = out.next_on_hand, out.next_pipeline, obs
            return obs, reward, self._false, self._false, info
        info["final_obs"] = obs
        info["episode"] = self.last_metrics = self.episode_metrics()
        self._begin()
        if c.finite_horizon:
            return self._obs, reward, self._true, self._false, info
        return self._obs, reward, self._false, self._true, info

    def state(self) -> SimState:
        """The current state as a policy sees it: obs, on_hand, pipeline, inventory position,
        lead time, day, past demand, features (unscaled) and scale."""
        if self._episode is None:
            raise RuntimeError("call reset() first")
        return self._state_from(self._episode, self._on_hand, self._pipeline, self._epoch,
                                self._obs)

    def episode_metrics(self) -> Metrics:
        """Per-SKU metrics of the current episode's days after warm-up so far (NaN before any)."""
        c = self.config
        day = self._epoch * c.review_period
        demanded = self._episode.demand[:, c.warmup:max(day, c.warmup)].sum(1)
        return business_metrics(self._cost, self._stats, demanded,
                                max(day - c.warmup, 0) or float("nan"))

    def _begin(self) -> None:
        self._begin_state(self.sample_episode())

    def _complete(self, episode: Episode) -> Episode:
        """The episode with the environment's SKU parameters where it has none (an episode
        saved before episodes carried them)."""
        if episode.lead_time is not None:
            return episode
        return episode._replace(lead_time=self.lead_time, holding_cost=self.holding_cost,
                                penalty_cost=self.penalty_cost, order_cost=self.order_cost)

    def _begin_state(self, episode: Episode) -> None:
        episode = self._complete(episode)
        self._episode = episode
        self.lead_time, self.holding_cost, self.penalty_cost, self.order_cost = (
            episode.lead_time, episode.holding_cost, episode.penalty_cost, episode.order_cost)
        self._epoch = 0
        self._on_hand, self._pipeline = episode.on_hand, episode.pipeline
        self._obs = self._observation(episode, episode.on_hand, episode.pipeline, 0)
        B = self.num_envs
        self._cost = episode.on_hand.new_zeros(B, 3)
        self._stats = episode.on_hand.new_zeros(B, 4)
        self._false = torch.zeros(B, dtype=torch.bool, device=self.device)
        self._true = torch.ones(B, dtype=torch.bool, device=self.device)

    # ---- the differentiable path -----------------------------------------------------------
    def simulate(self, policy: Callable[[SimState], Tensor], episode: Episode | None = None,
                 step: Callable = inventory_step) -> SimulationResult:
        """Unrolls ``policy`` over one episode (drawn now if not given) with autograd through
        every step; the policy gets the same :class:`SimState` (obs, features, ...) as from
        ``state()``. Costs and stats count the days after warm-up."""
        c = self.config
        episode = episode or self.sample_episode()
        episode = self._complete(episode)
        if episode.review_period is not None:  # each SKU orders on its own review days
            inner = policy
            policy = lambda state: reviewed(inner(state), episode, state.day)  # noqa: E731
        return simulate(policy, episode.demand, episode.lead_time, on_hand=episode.on_hand,
                        pipeline=episode.pipeline, review_period=c.review_period,
                        warmup=c.warmup, holding_cost=episode.holding_cost,
                        penalty_cost=episode.penalty_cost, order_cost=episode.order_cost,
                        lost_sales=c.lost_sales,
                        max_order=c.max_order if c.max_order is not None else float("inf"),
                        step=step,
                        observe=lambda x, pipe, epoch: self.observe(episode, x, pipe, epoch))


def reviewed(order: Tensor, episode: Episode, day: int) -> Tensor:
    """``order`` [B] on the SKUs whose review period divides ``day``, 0 on the others (all
    of it when the SKUs share the instance's review period)."""
    if episode.review_period is None:
        return order
    return torch.where(day % episode.review_period == 0, order, torch.zeros_like(order))
