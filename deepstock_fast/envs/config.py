"""One inventory instance as plain data: lead times, costs, horizon, demand process, features.

:class:`InstanceConfig` holds numbers, strings, lists and dicts only, so ``to_dict`` /
``from_dict`` round-trip through JSON or YAML. Invalid settings raise ``ValueError`` naming the
field when the config is built, not later inside an environment. Named instances (the families
of :mod:`deepstock_fast.envs.instances`): ``InstanceConfig.from_name("zipkin:L=2,p=9")`` or
``"paper:setting=2"``, with any field overridable in the same string
(``"zipkin:L=4,p=39,num_skus=256,horizon=400"``).
"""

from __future__ import annotations

import dataclasses
import pathlib
import json
from dataclasses import dataclass, field

import torch

from .. import demand as demand_lib
from .. import seeding
from ..checks import (boolean, choice, fail, integer, is_number, names, number, optional,
                      per_sku)
from .features import exogenous_feature
from .instances import FAMILIES

#: The demand features the Coeff regularization weighs (docs/METHOD.md): trailing means over 28 and 7
#: days, noisy forward means over 7 and 28 days (forecast proxies), and a constant 1.
COEFF_FEATURES = ("trailing_28", "trailing_7", "forecast_7", "forecast_28", "constant")
#: Extra per-SKU observations of the paper's synthetic settings.
EXTRA_OBSERVATIONS = ("day", "yesterday", "std")
INITIAL_STATES = ("empty", "mean_demand")

# Bounds of what an instance can be: beyond them an episode overflows or cannot be allocated.
MAX_SKUS = 2**26
MAX_DAYS = 10**5          # lead times, horizons, history windows
MAX_COST = 1e9            # per unit: costs of a whole episode stay finite in float32
MAX_QUANTITY = demand_lib.MAX_QUANTITY
MAX_POISSON_RATE = demand_lib.MAX_POISSON_RATE
MIN_OBS_SCALE = 1e-6      # observations / scale stay finite in float32


def _obs_scale(name, v):
    if v != "history":
        number(MIN_OBS_SCALE, MAX_QUANTITY)(name, v) if is_number(v) else fail(
            name, f"'history' or a finite number in [{MIN_OBS_SCALE:g}, {MAX_QUANTITY:g}]", v)


def _features(name, v):
    """Distinct names, each a demand feature of COEFF_FEATURES or an exogenous column's
    (``<column>_next_<k>``, ``<column>_last``: features.exogenous_feature)."""
    if not (isinstance(v, (list, tuple)) and all(
            isinstance(x, str) and (x in COEFF_FEATURES or exogenous_feature(x)) for x in v)
            and len(set(v)) == len(v)):
        unknown = [x for x in v if not isinstance(x, str) or (
            x not in COEFF_FEATURES and not exogenous_feature(x))] \
            if isinstance(v, (list, tuple)) else v
        fail(name, f"a list of distinct names from {COEFF_FEATURES} or exogenous columns' "
             f"<column>_next_<days> / <column>_last (unknown: {unknown!r})", v)


def _demand(name, v):
    """A dict {"kind": one of demand.DEMAND_KINDS, **its parameters}, each parameter checked by
    its class's check as ``demand.<parameter>``."""
    kinds = demand_lib.DEMAND_KINDS
    if not (isinstance(v, dict) and isinstance(v.get("kind"), str) and v["kind"] in kinds):
        fail(name, f"a dict with 'kind' in {sorted(kinds)}", v)
    cls = kinds[v["kind"]]
    required = cls.params
    optional_ = cls.optional_params if cls.catalog else {**cls.optional_params,
                                                         **demand_lib.DATASET_PARAMS}
    missing = [k for k in required if k not in v]
    unknown = [k for k in v if k != "kind" and k not in required and k not in optional_]
    if missing or unknown:
        raise ValueError(f"demand kind {v['kind']!r} needs {list(required)} (optional "
                         f"{list(optional_)}); missing {missing}, unknown {unknown}")
    for key, check in {**required, **optional_}.items():
        if key in v:
            check(f"demand.{key}", v[key])


#: InstanceConfig field -> check of its value alone (relations between fields: _validate).
#: Every field needs an entry: a field without one fails at import.
_FIELD_CHECKS = {
    "num_skus": integer(1, MAX_SKUS),
    "lead_time": per_sku(integer(0, MAX_DAYS)),
    "review_period": integer(1, MAX_DAYS),
    "horizon": integer(1, MAX_DAYS),
    "warmup": integer(0, MAX_DAYS),
    "holding_cost": per_sku(number(0, MAX_COST)),
    "penalty_cost": per_sku(number(0, MAX_COST)),
    "order_cost": per_sku(number(0, MAX_COST)),
    "lost_sales": boolean,
    "finite_horizon": boolean,
    "max_order": optional(number(0, MAX_QUANTITY, open_low=True)),
    "max_lead_time": optional(integer(0, MAX_DAYS)),
    "initial_state": choice(INITIAL_STATES),
    "demand": _demand,
    "features": _features,
    "observe_features": boolean,
    "extra_observations": names(EXTRA_OBSERVATIONS),
    "observed_demand_days": integer(0, MAX_DAYS),
    "history_days": integer(0, MAX_DAYS),
    "forecast_noise_std": number(0, MAX_QUANTITY),
    "obs_scale": _obs_scale,
    "dtype": choice(("float32", "float64")),
}


def _as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else value


@dataclass
class InstanceConfig:
    """B SKUs, each an independent single-item inventory system (docs/METHOD.md, "The decision problem").

    Per-SKU fields (``lead_time`` and the three costs) take one value for all SKUs or a list of
    ``num_skus`` values. ``demand`` is a dict ``{"kind": ..., **parameters}``: a kind of
    :data:`deepstock_fast.demand.DEMAND_KINDS` (poisson, normal, ar1, the paper's settings,
    replay, ...) with the parameters its class takes (``params``, ``optional_params``, described
    in the class's docstring); per-SKU parameters may be lists.
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
        for f in dataclasses.fields(self):  # each value alone, before anything converts it
            _FIELD_CHECKS[f.name](f.name, getattr(self, f.name))
        self.features = tuple(self.features)
        self.extra_observations = tuple(self.extra_observations)
        self.lead_time = _as_list(self.lead_time)
        for name in ("holding_cost", "penalty_cost", "order_cost"):
            setattr(self, name, _as_list(getattr(self, name)))
        self._catalog = None  # a catalog's demand process (its SKUs are a history's rows)
        if demand_lib.DEMAND_KINDS[self.demand["kind"]].catalog:
            self._catalog = self.demand_process("cpu")
        self._validate()

    # ---- validation ----------------------------------------------------------------------
    def _per_sku(self, name: str) -> list:
        value = getattr(self, name)
        values = value if isinstance(value, list) else [value]
        if self._catalog is not None:
            if len(values) not in (1, self.catalog_size):
                raise ValueError(f"{name} needs one value or one per SKU of the catalog = "
                                 f"{self.catalog_size} values (rows of the demand history), "
                                 f"got {len(values)}")
        elif len(values) not in (1, self.num_skus):
            raise ValueError(f"{name} needs one value or num_skus = {self.num_skus} values, "
                             f"got {len(values)}")
        return values

    @property
    def catalog_size(self) -> int | None:
        """The SKUs of a catalog's history (replay, sales), from which every episode draws its
        ``num_skus`` SKUs; None for generated demand (an episode's SKUs are its own)."""
        return None if self._catalog is None else self._catalog.num_skus

    def _validate(self) -> None:
        """The relations between fields (each field's own value is checked by _FIELD_CHECKS)."""
        def need(ok: bool, message: str):
            if not ok:
                raise ValueError(message)

        for name in ("lead_time", "holding_cost", "penalty_cost", "order_cost"):
            self._per_sku(name)
        longest = int(self.per_sku_tensor("lead_time", "cpu", torch.int64).max())
        if self.max_lead_time is not None:
            need(self.max_lead_time >= longest,
                 f"lead_time {longest} exceeds max_lead_time = {self.max_lead_time}")
        need(self.horizon % self.review_period == 0,
             f"horizon = {self.horizon} must be a positive multiple of review_period = "
             f"{self.review_period}")
        need(self.warmup % self.review_period == 0,
             f"warmup = {self.warmup} must be a multiple of review_period = {self.review_period}")
        need(self.warmup < self.horizon,
             f"horizon = {self.horizon} must be longer than warmup = {self.warmup}")
        need(self.initial_state != "mean_demand" or self.history_days >= 1,
             "initial_state 'mean_demand' needs history_days >= 1")
        need(self.observed_demand_days <= self.history_days,
             f"observed_demand_days = {self.observed_demand_days} exceeds history_days = "
             f"{self.history_days}")
        kind = self.demand["kind"]
        with_std = tuple(k for k, c in demand_lib.DEMAND_KINDS.items() if c.has_std)
        need("std" not in self.extra_observations or kind in with_std,
             f"extra observation 'std' needs a demand process with a std or sigma parameter "
             f"({with_std}); {kind!r} has none")
        n = self.dataset_size or self.num_skus
        for key, value in self.demand.items():
            if isinstance(value, (list, tuple)) and key != "history":
                need(len(value) in (1, n),
                     f"demand.{key} needs one value or "
                     f"{'demand.trajectories' if self.dataset_size else 'num_skus'} = {n} "
                     f"values, got {len(value)}")
        if self.dataset_size:
            need(not any(isinstance(getattr(self, f), list) and len(getattr(self, f)) > 1
                         for f in ("lead_time", "holding_cost", "penalty_cost", "order_cost")),
                 "demand.trajectories (a training set) needs one lead_time and one value of "
                 "each cost for all its trajectories")
        # the relations between demand parameters
        process = self._catalog or self.demand_process("cpu")
        if self._catalog is not None:
            if not isinstance(process, demand_lib.Sales):
                need(process.history.shape[1] >= self.days_per_episode,
                     f"demand history has {process.history.shape[1]} days; an episode needs "
                     f"history_days + horizon + forecast days = {self.days_per_episode}")
            try:
                process.start_range(self.days_per_episode, self.history_days)
            except ValueError as e:
                raise ValueError(f"demand ({kind}): {e}") from None
        periods = getattr(self._catalog, "attributes", {}).get("review_period")
        need(periods is None or bool((periods == self.review_period).all())
             or (self.review_period == 1 and bool((periods >= 1).all())),
             f"the sales data's review_period column holds {sorted(set(periods.tolist()))[:5]}"
             f": SKUs with their own review periods need review_period = 1 (daily steps; "
             f"each SKU orders every its own number of days), not {self.review_period}"
             if periods is not None else "")
        for name in self.features:
            exogenous = exogenous_feature(name)
            if exogenous is None:
                continue
            column, ahead = exogenous
            columns = list(getattr(process, "exogenous", {}))
            need(column in columns,
                 f"feature {name!r} reads column {column!r}, which the demand has not "
                 f"(exogenous columns: {columns})")
            need(ahead or self.history_days >= 1, f"feature {name!r} needs history_days >= 1")
            need(not ahead or column in process.known_ahead,
                 f"feature {name!r} reads {column!r} ahead, but {column!r} is not known ahead "
                 f"(demand.known_ahead = {list(process.known_ahead)}); use {column}_last")

    # ---- derived quantities --------------------------------------------------------------
    @property
    def max_lead(self) -> int:
        longest = int(self.per_sku_tensor("lead_time", "cpu", torch.int64).max())
        return self.max_lead_time if self.max_lead_time is not None else longest

    @property
    def forecast_days(self) -> int:
        """Days after the horizon that the forward-looking features read (forecast means of
        demand, known-ahead exogenous columns)."""
        ahead = [int(f.split("_")[1]) for f in self.features if f.startswith("forecast")]
        ahead += [exogenous_feature(f)[1] for f in self.features if exogenous_feature(f)]
        return max(ahead, default=0)

    @property
    def days_per_episode(self) -> int:
        return self.history_days + self.horizon + self.forecast_days

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    def per_sku_tensor(self, name: str, device, dtype=None) -> torch.Tensor:
        """A per-SKU field as a [num_skus] tensor (or [1] when shared); of a catalog, one value
        per catalog SKU ([catalog_size]), where a column of the sales data's attributes
        (lead times, costs) takes precedence over the field."""
        dtype = dtype or self.torch_dtype
        attributes = getattr(self._catalog, "attributes", {})
        if name in attributes:
            return torch.as_tensor(attributes[name], device=device).to(dtype)
        return torch.tensor(self._per_sku(name), dtype=dtype, device=device)

    def sku_review_periods(self, device) -> torch.Tensor | None:
        """Each catalog SKU's review period [catalog_size] (int64) when the sales data gives
        SKUs different ones (the instance then steps daily and a SKU orders on the days that
        are multiples of its period); else None (every SKU reviews every ``review_period``)."""
        periods = getattr(self._catalog, "attributes", {}).get("review_period")
        if periods is None or bool((periods == self.review_period).all()):
            return None
        return torch.as_tensor(periods, device=device, dtype=torch.int64)

    def varies(self, name: str) -> bool:
        values = self.per_sku_tensor(name, "cpu", torch.float64)
        return bool((values != values[0]).any())

    @property
    def dataset_size(self) -> int | None:
        """The number of fixed training trajectories (``demand["trajectories"]``: a training
        set, :data:`deepstock_fast.demand.DATASET_PARAMS`); None when every episode draws new
        ones."""
        return self.demand.get("trajectories")

    def dataset_instance(self) -> "InstanceConfig":
        """The instance whose one episode of ``dataset_size`` SKUs, drawn from the dataset
        stream (``InventoryEnv(..., seed=self.dataset_seed)``), is the training set: the
        dataset keys removed and, for a kind that draws its SKUs' parameters, those drawn
        from the dataset stream too."""
        return self._without_dataset("dataset")

    @property
    def dataset_seed(self) -> int:
        """The generator seed of the training set's episode (:meth:`dataset_instance`)."""
        return seeding.stream(self.demand.get("dataset_seed", 0), "dataset")

    def _without_dataset(self, purpose: str) -> "InstanceConfig":
        demand = {k: v for k, v in self.demand.items() if k not in demand_lib.DATASET_PARAMS}
        if demand_lib.DEMAND_KINDS[demand["kind"]].trajectory_params:
            demand["instance_seed"] = seeding.stream(self.demand.get("dataset_seed", 0), purpose)
        return self.replace(demand=demand, **({"num_skus": self.dataset_size}
                                              if purpose == "dataset" else {}))

    @property
    def periods(self) -> bool:
        """True when the demand is a sales history cut into training, validation and test
        periods (:meth:`for_period`)."""
        return isinstance(self._catalog, demand_lib.Sales)

    def for_period(self, period: str, whole: bool | None = None) -> "InstanceConfig":
        """The instance drawing its episodes from ``period`` ("train", "validation", "test") of
        a sales history; of a training set (``dataset_size``), the training set itself or, for
        "validation" and "test", fresh trajectories (with parameters of their own stream where
        the kind draws them); any other instance unchanged. ``whole`` (default: True but for
        "train"): the horizon spans the whole period (its last forecast days aside), so that
        one episode per SKU covers it, and the warm-up shrinks to fit."""
        if self.dataset_size and period != "train":
            return self._without_dataset(period)  # fresh trajectories, their own parameters
        if not self.periods:
            return self
        demand = dict(self.demand, period=period)
        if whole is None:
            whole = period != "train"
        if not whole:
            return self.replace(demand=demand)
        lo, hi = self._catalog.bounds(period)
        P = self.review_period
        horizon = (hi - lo - self.forecast_days - (self.history_days - min(self.history_days, lo)
                                                   if period == "train" else 0)) // P * P
        if horizon < P:
            raise ValueError(f"the {period} period has {hi - lo} days: too few for one review "
                             f"period after {self.forecast_days} forecast days")
        return self.replace(demand=demand, horizon=horizon,
                            warmup=min(self.warmup, horizon - P) // P * P)

    def demand_process(self, device):
        """The demand process of ``demand`` for num_skus SKUs on ``device`` (a replayed file is
        parsed once per process: :func:`deepstock_fast.demand.read_history`)."""
        spec = {k: v for k, v in self.demand.items() if k not in demand_lib.DATASET_PARAMS}
        kind = spec.pop("kind")
        try:
            return demand_lib.DEMAND_KINDS[kind].from_spec(spec, self.num_skus,
                                                           self.days_per_episode, device)
        except ValueError as e:
            raise ValueError(f"demand ({kind}): {e}") from None

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
    def load(cls, text: str) -> "InstanceConfig":
        """An instance from a name (``zipkin:L=2,p=9``, see :meth:`from_name`) or a JSON / YAML
        file of its fields (``.json``, ``.yaml``, ``.yml``); a ``ValueError`` names the file and
        what is wrong with it."""
        path = pathlib.Path(text)
        if path.suffix not in (".json", ".yaml", ".yml"):
            return cls.from_name(text)
        if not path.exists():
            raise ValueError(f"instance file {text} does not exist")
        try:
            raw = path.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"cannot read the instance file {text}: {e}") from None
        if path.suffix == ".json":
            try:
                data = json.loads(raw)
            except json.JSONDecodeError as e:
                raise ValueError(f"instance file {text} is not valid JSON: {e}") from None
        else:
            try:
                import yaml
            except ImportError:
                raise ValueError("reading YAML needs PyYAML (pip install pyyaml); or use "
                                 "JSON") from None
            try:
                data = yaml.safe_load(raw)
            except yaml.YAMLError as e:
                raise ValueError(f"instance file {text} is not valid YAML: "
                                 f"{' '.join(str(e).split())}") from None
        if not isinstance(data, dict):
            raise ValueError(f"{text} must hold a mapping of instance config fields, not a "
                             f"{type(data).__name__}")
        try:
            return cls.from_dict(data)
        except (ValueError, TypeError, KeyError, AttributeError) as e:  # a bad field
            raise ValueError(f"instance file {text}: {e}") from None

    @classmethod
    def from_name(cls, name: str) -> "InstanceConfig":
        """``<family>:key=value,...``: a family of :data:`instances.FAMILIES` (``zipkin:L=2,p=9``,
        ``paper:setting=2``; each family's docstring says what it is) with its parameters; the
        other ``key=value`` pairs set fields."""
        family, _, args = name.partition(":")
        params = {}
        for item in filter(None, args.split(",")):
            key, eq, value = item.partition("=")
            if not eq:
                raise ValueError(f"instance {name!r}: expected key=value, got {item!r}")
            params[key.strip()] = parse_value(value.strip())
        if family not in FAMILIES:
            known = ", ".join(f"'{f}:...'" for f in FAMILIES)
            raise ValueError(f"unknown instance family {family!r} in {name!r}; use one of "
                             f"{known}, or a config file")
        try:
            fields = FAMILIES[family](params)
        except ValueError as e:
            raise ValueError(f"instance {name!r}: {e}") from None
        fields.update(params)
        return cls.from_dict(fields)


_missing = {f.name for f in dataclasses.fields(InstanceConfig)} ^ set(_FIELD_CHECKS)
if _missing:  # a new field needs its check (and a fuzz strategy in tests/test_fuzz_config.py)
    raise ImportError(f"InstanceConfig fields and _FIELD_CHECKS differ: {sorted(_missing)}")


def parse_value(text: str):
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)
