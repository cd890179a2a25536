"""Reference costs for an instance: the exact optimum where the dynamic program applies, and the
best base-stock and capped base-stock policies, all costed on the same test episode as the
trained policies (common random numbers), under the same order cap, initial state, days and
warm-up, so that gaps between rows are precise and fair."""

from __future__ import annotations

import torch

from . import baselines, optimum, seeding
from .demand import DEMAND_KINDS, DemandProcess
from .envs import InstanceConfig, InventoryEnv
from .evaluation import held_out_env, paired_gap

#: Test trajectories of an instance whose SKUs are draws, at least (10x the paper's 100).
TEST_TRAJECTORIES = 1000


def demand_kind(instance: InstanceConfig) -> type[DemandProcess]:
    """The class of the instance's demand kind (its flags say what its SKUs are)."""
    return DEMAND_KINDS[instance.demand["kind"]]


def identical_skus(instance: InstanceConfig) -> bool:
    """True when every SKU has the same parameters and demand distribution (an ``iid`` demand
    kind of :data:`~deepstock_fast.demand.DEMAND_KINDS` with shared parameters)."""
    scalar = all(not isinstance(getattr(instance, n), list)
                 for n in ("lead_time", "holding_cost", "penalty_cost", "order_cost"))
    demand = instance.demand
    return scalar and demand_kind(instance).iid and not any(
        isinstance(v, list) for k, v in demand.items() if k != "kind")


def dp_applies(instance: InstanceConfig) -> bool:
    """The lost-sales DP covers identical SKUs with Poisson demand, lead time >= 1, no cap."""
    return (identical_skus(instance) and instance.lost_sales and instance.lead_time >= 1
            and instance.demand["kind"] == "poisson" and instance.max_order is None
            and instance.initial_state == "empty" and not instance.finite_horizon)


def dp_solution(instance: InstanceConfig, progress: bool = False):
    """The exact lost-sales DP (:func:`optimum.solve_lost_sales`) of an instance where
    :func:`dp_applies`: its Poisson demand, lead time, costs and review period."""
    return optimum.solve_lost_sales(optimum.poisson_pmf(float(instance.demand["rate"])),
                                    instance.lead_time, instance.holding_cost,
                                    instance.penalty_cost, instance.order_cost,
                                    review_period=instance.review_period, progress=progress)


def held_out_instance(instance: InstanceConfig, skus: int | None = None,
                      horizon: int | None = None, warmup: int | None = None) -> InstanceConfig:
    """The instance every policy is costed on, unless given: 1024 SKUs over 1000 days when the
    SKUs are identical copies (a long-run average); at least :data:`TEST_TRAJECTORIES`
    trajectories of the instance's own horizon when its SKUs are draws from one distribution
    (a ``drawn`` demand kind: the paper's settings); for a catalog (a replayed or sales
    history), every SKU of the catalog, over the whole test period of a sales history; else
    the instance's own SKUs and horizon."""
    if instance.catalog_size is not None:
        test = instance.for_period("test")
        if test.periods and skus not in (None, instance.catalog_size):
            raise ValueError(f"a sales history is tested on every SKU of its catalog "
                             f"({instance.catalog_size}), not {skus}")
        return test.replace(num_skus=skus or instance.catalog_size,
                            horizon=horizon or test.horizon,
                            warmup=test.warmup if warmup is None else warmup)
    instance = instance.for_period("test")  # a training set's test: fresh trajectories
    identical = identical_skus(instance)
    P = instance.review_period
    if horizon is None:
        long_run = identical and not instance.finite_horizon
        horizon = max(instance.horizon, -(-1000 // P) * P) if long_run else instance.horizon
    if skus is None:
        skus = (1024 if identical else max(instance.num_skus, TEST_TRAJECTORIES)
                if demand_kind(instance).drawn else instance.num_skus)
    return instance.replace(num_skus=skus, horizon=horizon,
                            warmup=instance.warmup if warmup is None else warmup)


def held_out_demand(test_instance: InstanceConfig, seed: int, device="cpu") -> torch.Tensor:
    """The horizon's demand [S, T] of the episode that ``evaluation.evaluate(..., seed=seed)``
    runs on."""
    return held_out_env(test_instance, seed, device).sample_episode().demand


def costing(t: InstanceConfig, device) -> dict:
    """The arguments that cost a classical policy on instance ``t`` as the environment does."""
    return dict(holding_cost=t.per_sku_tensor("holding_cost", device, torch.float64),
                penalty_cost=t.per_sku_tensor("penalty_cost", device, torch.float64),
                order_cost=t.per_sku_tensor("order_cost", device, torch.float64),
                lost_sales=t.lost_sales, review_period=t.review_period, warmup=t.warmup,
                max_order=t.max_order)


def fit_episodes(instance: InstanceConfig, test: InstanceConfig, pooled: bool, paths: int,
                  seed: int, device):
    """(the instance searched on, demand [S, N, T], initial on-hand [S, N] and pipeline
    [S, N, max_lead]): N = ``paths`` episodes drawn as the environment draws them (the same days
    of an episode, the same initial state) from ``seed``'s baseline_fit stream; of one SKU of
    the training instance when the SKUs are identical (S = 1), else of each test SKU. Of a
    sales history: one episode per SKU spanning its whole training period (N = 1), so that
    nothing of a later period is seen."""
    if test.periods:
        fit = instance.for_period("train", whole=True).replace(num_skus=test.num_skus)
        paths = 1
    else:
        fit = instance.replace(num_skus=paths) if pooled else test
    env = InventoryEnv(fit, device, seed=seeding.stream(seed, "baseline_fit"))
    episodes = [env.sample_episode()] if pooled else [env.sample_episode() for _ in range(paths)]
    demand, on_hand, pipeline = (torch.stack([getattr(e, k).double() for e in episodes], 1)
                                 for k in ("demand", "on_hand", "pipeline"))
    if pooled:  # [N, 1, ...] -> [1, N, ...]
        demand, on_hand, pipeline = (x.transpose(0, 1) for x in (demand, on_hand, pipeline))
    return fit, demand, on_hand, pipeline


def reference_rows(instance: InstanceConfig, test_instance: InstanceConfig, *, seed: int,
                   device="cpu", train_paths: int = 128, progress: bool = False) -> list[dict]:
    """Rows {"policy", "cost", "cost_se", "note", "per_sku"} for the DP optimum (exact, and its
    policy simulated on the test episode) where it applies, and the best base-stock and capped
    base-stock policies (searched on ``train_paths`` training episodes of their own stream,
    costed on the test episode of ``seed`` with the instance's cap and initial state).
    ``per_sku`` [S] holds each test SKU's cost (for paired gaps; None for the exact optimum).
    A reference that cannot be computed (e.g. the DP's size limits) gives a row whose cost is
    None and whose note says why; the others are still computed."""
    rows = []
    t = test_instance
    episode = held_out_env(t, seed, device).sample_episode()
    demand = episode.demand.to(torch.float64)
    test_costing = costing(t, device)
    lead = t.per_sku_tensor("lead_time", device, torch.int64)

    def attempt(policy: str, compute) -> None:
        try:
            rows.extend(compute())
        except (RuntimeError, ValueError, ZeroDivisionError, MemoryError) as e:
            rows.append({"policy": policy, "cost": None, "cost_se": None, "per_sku": None,
                         "note": f"not computed: {e}"})

    def row(policy: str, per_sku: torch.Tensor, note: str) -> dict:
        n = per_sku.numel()
        se = float(per_sku.std() / n ** 0.5) if n > 1 else float("nan")
        return {"policy": policy, "cost": float(per_sku.mean()), "cost_se": se,
                "per_sku": per_sku, "note": note}

    def dp_rows() -> list[dict]:
        h, p, c = instance.holding_cost, instance.penalty_cost, instance.order_cost
        sol = dp_solution(instance, progress)
        note = "exact (relative value iteration)"
        published = optimum.zipkin_published().get((instance.lead_time, int(p)))
        if published is not None and h == 1.0 and c == 0.0 and instance.review_period == 1 \
                and float(instance.demand["rate"]) == 5.0:
            note += f"; Zipkin (2008) published {published:.2f}"
        simulated = optimum.simulate_policy(sol, demand, h, p, c, warmup=t.warmup)
        return [{"policy": "DP optimum", "cost": sol.average_cost, "cost_se": 0.0,
                 "per_sku": None, "note": note},
                row("DP policy, test episode", simulated,
                    "the optimal policy on the same test demand")]

    if dp_applies(instance):
        attempt("DP optimum", dp_rows)
    # Identical SKUs share one search, and so do a training set's trajectories (one level
    # searched on the training set, as a practitioner without the test data would); otherwise
    # each test SKU gets its own, on episodes of its own demand process (the test instance may
    # hold other SKUs than the training instance).
    pooled = identical_skus(instance) or bool(instance.dataset_size)
    fit_paths = instance.dataset_size or train_paths
    fitted = {}

    def classical(kind: str, label: str):
        def compute() -> list[dict]:
            if "paths" not in fitted:
                fitted["paths"] = fit_episodes(instance, t, pooled, fit_paths, seed, device)
            fit, paths, x0, pipe0 = fitted["paths"]
            policy, _ = baselines.fit(kind, paths, lead[:1] if pooled else lead, on_hand=x0,
                                      pipeline=pipe0, **costing(fit, device))
            if pooled:
                policy = baselines.ClassicalPolicy(kind, policy.params.expand(t.num_skus, -1))
            metrics = baselines.evaluate(policy, demand, lead.expand(t.num_skus),
                                         on_hand=episode.on_hand.double(),
                                         pipeline=episode.pipeline.double(), **test_costing)
            params = ", ".join(f"{n}={v:g}" for n, v in zip(
                ("S", "cap"), policy.params[0].tolist())) if pooled else "per SKU"
            cap = "" if t.max_order is None else f", orders capped at {t.max_order:g}"
            where = ("the training period" if t.periods else
                     f"the {fit_paths} training trajectories" if instance.dataset_size else
                     f"{train_paths} training episodes")
            return [row(label, metrics.average_cost, f"searched on {where} ({params}){cap}")]
        return compute

    for kind, label in (("base_stock", "best base-stock"),
                        ("capped_base_stock", "best capped base-stock")):
        attempt(label, classical(kind, label))
    return rows


def comparison_rows(trained: dict, references: list[dict], failed: dict) -> list[dict]:
    """Rows of trained policies ({label: (RunResult, Evaluation)}) and the references, each with its cost and standard error
    and its gap to the best available reference: paired (same test demand) against the DP's
    optimal policy on the test episode or the best base-stock policy, or against the exact
    optimal cost. Gaps only where that reference exists and costs more than 0 (else noted in
    ``failed``)."""
    rows = []
    for label, (result, ev) in trained.items():
        a = ev.aggregate
        rows.append({"policy": label, "cost": ev.average_cost,
                     "cost_se": ev.average_cost_se, "per_sku": ev.per_sku.average_cost,
                     "fill_rate": float(a.fill_rate), "stockout_rate": float(a.stockout_rate),
                     "turnover_days": float(a.turnover_days), "seconds": result.seconds,
                     "iterations": result.iterations})
    rows += [dict(r) for r in references]
    costed = {r["policy"]: r for r in rows if r["cost"] is not None}
    base = next((costed[n] for n in ("DP policy, test episode", "best base-stock",
                                     "best base-stock per SKU", "DP optimum")
                 if n in costed), None)
    if base is None or base["cost"] == 0:
        failed["gap_pct"] = ("no baseline to compare with" if base is None
                             else f"the {base['policy']}'s cost is 0")
        base = None
    for r in rows:
        r["baseline"] = base["policy"] if base else None
        if base is None or r["cost"] is None:
            r["gap_pct"] = r["gap_se"] = None
        elif base["per_sku"] is not None and r.get("per_sku") is not None:
            r["gap_pct"], r["gap_se"] = paired_gap(r["per_sku"], base["per_sku"])
        else:
            r["gap_pct"], r["gap_se"] = 100 * (r["cost"] - base["cost"]) / base["cost"], None
    for r in rows:
        r.pop("per_sku", None)
    return rows
