"""Named instance families: ``InstanceConfig.from_name("<family>:key=value,...")``.

A family is a function ``params -> dict of InstanceConfig fields`` registered with
``@register("<family>")``. It takes the parameters it defines out of ``params`` (``L`` and ``p``
for zipkin) and raises ``ValueError`` when they are wrong; the parameters it leaves set fields
of the config it returns (``zipkin:L=4,p=39,num_skus=256``).
"""

from __future__ import annotations

from typing import Callable

from ..demand import DATASET_PARAMS

#: family name -> function(params) -> InstanceConfig fields
FAMILIES: dict[str, Callable[[dict], dict]] = {}


def register(family: str):
    """Function decorator: ``<family>:...`` names the instances this function describes."""
    def add(fields: Callable[[dict], dict]) -> Callable[[dict], dict]:
        if family in FAMILIES:
            raise ValueError(f"instance family {family!r} is registered already")
        FAMILIES[family] = fields
        return fields
    return add


@register("zipkin")
def zipkin(params: dict) -> dict:
    """``zipkin:L=<1..4>,p=<4|9|19|39>`` (Zipkin 2008): lost sales, Poisson(5), h = 1, P = 1,
    horizon 200 days of which 50 warm-up, trailing-mean features for the Coeff heads only, the
    observation is the state."""
    lead, penalty = params.pop("L", None), params.pop("p", None)
    if lead not in (1, 2, 3, 4) or penalty not in (4, 9, 19, 39):
        raise ValueError("zipkin needs L in 1..4 and p in {4, 9, 19, 39}")
    # No forecast features: they would carry information about future demand that the
    # published optimum does not have. The trailing means stay out of the observation: of
    # i.i.d. demand they say nothing, and as inputs they only add noise (docs/BENCHMARKS.md);
    # the Coeff heads still weigh them.
    return dict(lead_time=lead, penalty_cost=float(penalty), holding_cost=1.0,
                lost_sales=True, review_period=1, horizon=200, warmup=50,
                demand={"kind": "poisson", "rate": 5.0}, obs_scale=5.0,
                features=("trailing_28", "trailing_7", "constant"),
                observe_features=False)


@register("paper")
def paper(params: dict) -> dict:
    """``paper:setting=<1..4>``: the DeepStock paper's synthetic settings: backlog, L = 1, P = 2,
    h = 0.1, p = 0.9, max order 100, a finite horizon of 30 days with the first 4 — L + P
    rounded up to a whole review period — left out. Setting 4 (i.i.d. Normal(100, sigma)
    demand, sigma observed) is a repeated newsvendor instead: its benchmark, mean + 1.2816
    sigma, is the critical-fractile level for one day of demand, and an order of at most 100
    per 2-day review period cannot serve about 200 units of demand; so setting 4 orders every
    day (P = 1) with lead time 0, a cap of 300 per order (10 sigma above the mean at the
    largest sigma) and 1 day left out (L + P).

    ``trajectories=n`` (and ``dataset_seed=s``) trains on a fixed set of n trajectories, as the
    paper does (:data:`deepstock_fast.demand.DATASET_PARAMS`; validation and test draw fresh
    ones); without it every training episode draws new trajectories. ``forecasts=false``
    leaves out the forecast features (the noisy 7- and 28-day forward means: information
    about future demand that the settings' optimal and oracle references do not have), so
    that the policies see the setting's one feature, the state and the trailing means."""
    setting = params.pop("setting", None)
    dataset = {k: params.pop(k) for k in ("trajectories", "dataset_seed") if k in params}
    forecasts = params.pop("forecasts", True)
    if not isinstance(forecasts, bool):
        raise ValueError(f"forecasts must be true or false, got {forecasts!r}")
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
        raise ValueError("paper needs setting in 1..4")
    if not forecasts:
        settings[setting]["features"] = ("trailing_28", "trailing_7", "constant")
    settings[setting]["demand"].update(dataset)
    if "trajectories" in dataset:  # the instance's SKUs are its training set
        DATASET_PARAMS["trajectories"]("demand.trajectories", dataset["trajectories"])
        settings[setting]["num_skus"] = dataset["trajectories"]
    return dict(dict(lead_time=1, review_period=2, horizon=30, warmup=4,
                     holding_cost=0.1, penalty_cost=0.9, lost_sales=False,
                     max_order=100.0, finite_horizon=True), **settings[setting])


#: ``demand`` keys of a ``sales:`` instance (the others set config fields).
SALES_KEYS = ("path", "sku_column", "date_column", "quantity_column", "warehouse_column",
              "features", "attributes", "missing", "duplicates", "valid_start", "test_start",
              "test_end", "known_ahead")
#: Days ahead that a known-ahead column's feature averages over.
AHEAD_DAYS = 7


@register("sales")
def sales(params: dict) -> dict:
    """``sales:path=<file>[,valid_start=<date>,test_start=<date>,...]``: a catalog's long-format
    sales history (:mod:`deepstock_fast.sales`; ``deepstock train --sales FILE``), every SKU
    with its lead time and costs where the data has them (else the fields' values), cut into
    training, validation and test periods (``valid_start``, ``test_start``: dates or fractions,
    default 0.7 and 0.85). Lost sales, daily review, episodes of up to 100 days of the
    training period starting at mean demand on hand and in transit, 28 days of history, the
    trailing means and for each exogenous column its mean over the next 7 days when it is known
    ahead (``known_ahead``, default price and promotion), else its last value."""
    from .. import demand as demand_lib
    from .. import sales as sales_lib

    if "path" not in params:
        raise ValueError("sales needs path=<sales file>")
    spec = {"kind": "sales", **{k: params.pop(k) for k in SALES_KEYS if k in params}}
    for key in ("features", "known_ahead"):  # from a name: columns separated by '+'
        if isinstance(spec.get(key), str):
            spec[key] = [c for c in spec[key].split("+") if c]
    data = sales_lib.read_sales(spec["path"], **{k: spec[k] for k in demand_lib.READ_OPTIONS
                                                 if k in spec})
    known = spec.get("known_ahead", [c for c in demand_lib.KNOWN_AHEAD if c in data.features])
    exogenous = [f"{c}_next_{AHEAD_DAYS}" if c in known else f"{c}_last" for c in data.features]
    history = params.get("history_days", 28)
    valid = data.day_index(spec.get("valid_start", demand_lib.DEFAULT_VALID_START),
                           "valid_start")
    forecast = AHEAD_DAYS if any(c in known for c in data.features) else 0
    periods = data.attributes.get("review_period")
    review = int(periods[0]) if periods is not None and (periods == periods[0]).all() else 1
    horizon = max(1, min(100, valid - history - forecast) // review) * review
    return dict(num_skus=data.num_series, demand=spec, lost_sales=True, review_period=review,
                horizon=horizon, warmup=0, initial_state="mean_demand", history_days=history,
                features=("trailing_28", "trailing_7", "constant", *exogenous))
