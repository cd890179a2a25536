"""One inventory instance as plain data: lead times, costs, horizon, demand process, features.

:class:`InstanceConfig` holds numbers, strings, lists and dicts only, so ``to_dict`` /
``from_dict`` round-trip through JSON or YAML. Invalid settings raise ``ValueError`` naming the
field when the config is built, not later inside an environment. Named instances:
``InstanceConfig.from_name("zipkin:L=2,p=9")`` or ``"paper:setting=2"``, with any field
overridable in the same string (``"zipkin:L=4,p=39,num_skus=256,horizon=400"``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch

from .. import demand as demand_lib

#: The demand features the Coeff regularization weighs (PAPER.md): trailing means over 28 and 7
#: days, noisy forward means over 7 and 28 days (forecast proxies), and a constant 1.
COEFF_FEATURES = ("trailing_28", "trailing_7", "forecast_7", "forecast_28", "constant")
#: Extra per-SKU observations of the paper's synthetic settings.
EXTRA_OBSERVATIONS = ("day", "yesterday", "std")
INITIAL_STATES = ("empty", "mean_demand")

# kind -> (constructor, required parameters, optional parameters)
_DEMAND_KINDS = {
    "poisson": (demand_lib.Poisson, ("rate",), ()),
    "normal": (demand_lib.Normal, ("mean", "std"), ("round",)),
    "uniform_int": (demand_lib.UniformInt, ("low", "high"), ()),
    "geometric": (demand_lib.Geometric, ("mean",), ()),
    "ar1": (demand_lib.AR1, ("phi", "base", "sigma"), ()),
    "paper_independent": (None, (), ("instance_seed",)),
    "paper_ar1": (None, (), ("instance_seed",)),
    "paper_iid_normal": (None, (), ("instance_seed",)),
    "replay": (None, (), ("path", "history")),
}


def _as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else value


@dataclass
class InstanceConfig:
    """B SKUs, each an independent single-item inventory system (PAPER.md's decision problem).

    Per-SKU fields (``lead_time`` and the three costs) take one value for all SKUs or a list of
    ``num_skus`` values. ``demand`` is a dict ``{"kind": ..., **parameters}``; kinds and their
    parameters: poisson(rate), normal(mean, std, round=False), uniform_int(low, high),
    geometric(mean), ar1(phi, base, sigma), paper_independent(instance_seed=0),
    paper_ar1(instance_seed=0), paper_iid_normal(instance_seed=0), replay(path=... or
    history=[[...], ...] with one row per SKU). Parameters may be lists (per SKU).
    """

    num_skus: int = 1
    lead_time: int | list[int] = 1
    review_period: int = 1
    horizon: int = 100                 # days per episode, a multiple of review_period
    warmup: int = 0                    # first days left out of the metrics
    holding_cost: float | list[float] = 1.0
    penalty_cost: float | list[float] = 9.0
    order_cost: float | list[float] = 0.0
    lost_sales: bool = True            # False: backlog
    #: True: the horizon ends the problem (a finite-horizon cost; RL trainers do not bootstrap
    #: past the last day and count only the days after warm-up). False: the horizon truncates a
    #: long-run average-cost problem (RL trainers bootstrap at the horizon).
    finite_horizon: bool = False
    max_order: float | None = None     # None: no cap
    max_lead_time: int | None = None   # pipeline slots; None: the largest lead time
    initial_state: str = "empty"       # or "mean_demand": on-hand and each in-transit slot = mean
    demand: dict = field(default_factory=lambda: {"kind": "poisson", "rate": 5.0})
    features: tuple[str, ...] = COEFF_FEATURES
    observe_features: bool = True      # False: the features feed the Coeff heads only, not obs
    extra_observations: tuple[str, ...] = ()
    observed_demand_days: int = 0      # most recent days of demand in the observation
    history_days: int = 28             # demand days drawn before day 0, for trailing features
    forecast_noise_std: float = 3.0
    obs_scale: str | float = "history"  # "history": per-SKU mean of the drawn history (>= 1)
    dtype: str = "float32"

    def __post_init__(self):
        self.features = tuple(self.features)
        self.extra_observations = tuple(self.extra_observations)
        self.lead_time = _as_list(self.lead_time)
        for name in ("holding_cost", "penalty_cost", "order_cost"):
            setattr(self, name, _as_list(getattr(self, name)))
        self._validate()

    # ---- validation ----------------------------------------------------------------------
    def _per_sku(self, name: str) -> list:
        value = getattr(self, name)
        values = value if isinstance(value, list) else [value]
        if len(values) not in (1, self.num_skus):
            raise ValueError(f"{name} needs one value or num_skus = {self.num_skus} values, "
                             f"got {len(values)}")
        return values

    def _validate(self) -> None:
        def need(ok: bool, message: str):
            if not ok:
                raise ValueError(message)

        need(isinstance(self.num_skus, int) and self.num_skus >= 1,
             f"num_skus must be an int >= 1, got {self.num_skus!r}")
        leads = self._per_sku("lead_time")
        need(all(isinstance(v, int) and v >= 0 for v in leads),
             f"lead_time must be ints >= 0, got {self.lead_time!r}")
        if self.max_lead_time is not None:
            need(self.max_lead_time >= max(leads),
                 f"lead_time {max(leads)} exceeds max_lead_time = {self.max_lead_time}")
        need(isinstance(self.review_period, int) and self.review_period >= 1,
             f"review_period must be an int >= 1, got {self.review_period!r}")
        need(isinstance(self.horizon, int) and self.horizon >= 1
             and self.horizon % self.review_period == 0,
             f"horizon = {self.horizon} must be a positive multiple of review_period = "
             f"{self.review_period}")
        need(isinstance(self.warmup, int) and self.warmup >= 0
             and self.warmup % self.review_period == 0,
             f"warmup = {self.warmup} must be a multiple of review_period = {self.review_period}")
        need(isinstance(self.finite_horizon, bool),
             f"finite_horizon must be true or false, got {self.finite_horizon!r}")
        need(self.warmup < self.horizon,
             f"horizon = {self.horizon} must be longer than warmup = {self.warmup}")
        for name in ("holding_cost", "penalty_cost", "order_cost"):
            values = self._per_sku(name)
            need(all(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 for v in values),
                 f"{name} must be finite and >= 0, got {getattr(self, name)!r}")
        need(self.max_order is None or (self.max_order > 0 and not math.isnan(self.max_order)),
             f"max_order must be > 0 or None, got {self.max_order!r}")
        need(self.initial_state in INITIAL_STATES,
             f"initial_state must be one of {INITIAL_STATES}, got {self.initial_state!r}")
        need(self.initial_state != "mean_demand" or self.history_days >= 1,
             "initial_state 'mean_demand' needs history_days >= 1")
        unknown = [f for f in self.features if f not in COEFF_FEATURES]
        need(not unknown, f"unknown features {unknown}; known: {COEFF_FEATURES}")
        unknown = [f for f in self.extra_observations if f not in EXTRA_OBSERVATIONS]
        need(not unknown, f"unknown extra_observations {unknown}; known: {EXTRA_OBSERVATIONS}")
        need(self.observed_demand_days >= 0 and self.history_days >= 0,
             "observed_demand_days and history_days must be >= 0")
        need(self.observed_demand_days <= self.history_days,
             f"observed_demand_days = {self.observed_demand_days} exceeds history_days = "
             f"{self.history_days}")
        need(math.isfinite(self.forecast_noise_std) and self.forecast_noise_std >= 0,
             f"forecast_noise_std must be finite and >= 0, got {self.forecast_noise_std!r}")
        need(self.obs_scale == "history" or (isinstance(self.obs_scale, (int, float))
                                             and self.obs_scale > 0),
             f"obs_scale must be 'history' or a number > 0, got {self.obs_scale!r}")
        need(self.dtype in ("float32", "float64"),
             f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        need(isinstance(self.demand, dict) and self.demand.get("kind") in _DEMAND_KINDS,
             f"demand must be a dict with 'kind' in {sorted(_DEMAND_KINDS)}, got {self.demand!r}")
        process = self.demand_process("cpu")  # checks the demand parameters and their shapes
        if isinstance(process, demand_lib.Replay):
            need(process.num_skus == self.num_skus,
                 f"demand history has {process.num_skus} SKUs (rows), num_skus = {self.num_skus}")
            need(process.history.shape[1] >= self.days_per_episode,
                 f"demand history has {process.history.shape[1]} days; an episode needs "
                 f"history_days + horizon + forecast days = {self.days_per_episode}")

    # ---- derived quantities --------------------------------------------------------------
    @property
    def max_lead(self) -> int:
        leads = self._per_sku("lead_time")
        return self.max_lead_time if self.max_lead_time is not None else max(leads)

    @property
    def forecast_days(self) -> int:
        """Days of demand after the horizon that the forward-mean features look at."""
        return max([int(f.split("_")[1]) for f in self.features if f.startswith("forecast")],
                   default=0)

    @property
    def days_per_episode(self) -> int:
        return self.history_days + self.horizon + self.forecast_days

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    def per_sku_tensor(self, name: str, device, dtype=None) -> torch.Tensor:
        """A per-SKU field as a [num_skus] tensor (or [1] when shared)."""
        return torch.tensor(self._per_sku(name), dtype=dtype or self.torch_dtype, device=device)

    def varies(self, name: str) -> bool:
        return len(set(self._per_sku(name))) > 1

    def demand_process(self, device):
        """The demand process of ``demand`` for num_skus SKUs on ``device``."""
        spec = dict(self.demand)
        kind = spec.pop("kind")
        make, required, optional = _DEMAND_KINDS[kind]
        missing = [k for k in required if k not in spec]
        unknown = [k for k in spec if k not in required + optional]
        if missing or unknown:
            raise ValueError(f"demand kind {kind!r} needs {list(required)} (optional "
                             f"{list(optional)}); missing {missing}, unknown {unknown}")
        seed = spec.get("instance_seed", 0)
        if kind == "paper_independent":
            return demand_lib.PaperIndependent(self.days_per_episode, self.num_skus, seed, device)
        if kind == "paper_ar1":
            g = torch.Generator().manual_seed(seed)
            return demand_lib.AR1.paper(self.num_skus, generator=g, device=device)
        if kind == "paper_iid_normal":
            g = torch.Generator().manual_seed(seed)
            return demand_lib.paper_iid_normal(self.num_skus, generator=g, device=device)
        if kind == "replay":
            if ("path" in spec) == ("history" in spec):
                raise ValueError("demand kind 'replay' needs exactly one of 'path' or 'history'")
            process = (demand_lib.Replay.from_file(spec["path"]) if "path" in spec
                       else demand_lib.Replay(torch.tensor(spec["history"], dtype=torch.float64)))
            return demand_lib.Replay(process.history.to(device))
        try:
            return make(**spec, num_skus=self.num_skus, device=device)
        except ValueError as e:
            raise ValueError(f"demand {self.demand!r}: {e}") from None

    # ---- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain data (lists, not tuples), ready for JSON or YAML."""
        d = dataclasses.asdict(self)
        d["features"] = list(self.features)
        d["extra_observations"] = list(self.extra_observations)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "InstanceConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown instance config fields {unknown}; known: {sorted(known)}")
        return cls(**d)

    def replace(self, **changes) -> "InstanceConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_name(cls, name: str) -> "InstanceConfig":
        """``zipkin:L=<1..4>,p=<4|9|19|39>`` (Zipkin 2008: lost sales, Poisson(5), h = 1, P = 1,
        horizon 200 days of which 50 warm-up, trailing-mean features for the Coeff heads only,
        the observation is the state) or ``paper:setting=<1..4>`` (the DeepStock paper's synthetic
        settings: backlog, L = 1, P = 2, h = 0.1, p = 0.9, max order 100, a finite horizon of
        30 days with the first 4 — L + P rounded up to a whole review period — left out).
        Setting 4 (i.i.d. Normal(100, sigma) demand, sigma observed) is a repeated newsvendor
        instead: its benchmark, mean + 1.2816 sigma, is the critical-fractile level for one day
        of demand, and an order of at most 100 per 2-day review period cannot serve about 200
        units of demand; so setting 4 orders every day (P = 1) with lead time 0, a cap of 300
        per order (10 sigma above the mean at the largest sigma) and 1 day left out (L + P).
        Other ``key=value`` pairs set fields."""
        family, _, args = name.partition(":")
        params = {}
        for item in filter(None, args.split(",")):
            key, eq, value = item.partition("=")
            if not eq:
                raise ValueError(f"instance {name!r}: expected key=value, got {item!r}")
            params[key.strip()] = parse_value(value.strip())
        if family == "zipkin":
            lead, penalty = params.pop("L", None), params.pop("p", None)
            if lead not in (1, 2, 3, 4) or penalty not in (4, 9, 19, 39):
                raise ValueError(f"instance {name!r}: zipkin needs L in 1..4 and p in "
                                 "{4, 9, 19, 39}")
            # No forecast features: they would carry information about future demand that the
            # published optimum does not have. The trailing means stay out of the observation:
            # of i.i.d. demand they say nothing, and as inputs they cost DS about 0.5% (L = 1,
            # p = 4); the Coeff heads still weigh them.
            base = dict(lead_time=lead, penalty_cost=float(penalty), holding_cost=1.0,
                        lost_sales=True, review_period=1, horizon=200, warmup=50,
                        demand={"kind": "poisson", "rate": 5.0}, obs_scale=5.0,
                        features=("trailing_28", "trailing_7", "constant"),
                        observe_features=False)
        elif family == "paper":
            setting = params.pop("setting", None)
            settings = {
                1: dict(num_skus=10, demand={"kind": "paper_independent"},
                        extra_observations=("day",)),
                2: dict(num_skus=20, demand={"kind": "paper_ar1"},
                        extra_observations=("yesterday",)),
                3: dict(num_skus=10, demand={"kind": "paper_ar1"},
                        extra_observations=("yesterday",)),
                4: dict(num_skus=10, demand={"kind": "paper_iid_normal"},
                        extra_observations=("std",), lead_time=0, review_period=1, warmup=1,
                        max_order=300.0),
            }
            if setting not in settings:
                raise ValueError(f"instance {name!r}: paper needs setting in 1..4")
            base = dict(dict(lead_time=1, review_period=2, horizon=30, warmup=4,
                             holding_cost=0.1, penalty_cost=0.9, lost_sales=False,
                             max_order=100.0, finite_horizon=True), **settings[setting])
        else:
            raise ValueError(f"unknown instance family {family!r} in {name!r}; use 'zipkin:...' "
                             "or 'paper:...', or a config file")
        base.update(params)
        return cls.from_dict(base)


def parse_value(text: str):
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)
