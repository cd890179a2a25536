"""Reference costs for an instance: the exact optimum where the dynamic program applies, and the
best base-stock and capped base-stock policies, all costed on the same test episode as the
trained policies (common random numbers), so that gaps between rows are precise."""

from __future__ import annotations

import torch

from . import baselines, optimum
from .envs import InstanceConfig, InventoryEnv

_IID_KINDS = ("poisson", "normal", "uniform_int", "geometric")


def identical_skus(instance: InstanceConfig) -> bool:
    """True when every SKU has the same parameters and demand distribution."""
    scalar = all(not isinstance(getattr(instance, n), list)
                 for n in ("lead_time", "holding_cost", "penalty_cost", "order_cost"))
    demand = instance.demand
    return scalar and demand["kind"] in _IID_KINDS and not any(
        isinstance(v, list) for k, v in demand.items() if k != "kind")


def dp_applies(instance: InstanceConfig) -> bool:
    """The lost-sales DP covers identical SKUs with Poisson demand, lead time >= 1, no cap."""
    return (identical_skus(instance) and instance.lost_sales and instance.lead_time >= 1
            and instance.demand["kind"] == "poisson" and instance.max_order is None
            and instance.initial_state == "empty")


def test_demand(test_instance: InstanceConfig, seed: int, device="cpu") -> torch.Tensor:
    """The horizon's demand [S, T] of the episode that ``evaluation.evaluate(..., seed=seed)``
    runs on."""
    return InventoryEnv(test_instance, device=device, seed=seed).sample_episode().demand


def reference_rows(instance: InstanceConfig, test_instance: InstanceConfig, *, seed: int,
                   device="cpu", train_paths: int = 128, progress: bool = False) -> list[dict]:
    """Rows {"policy", "cost", "note"} for the DP optimum (exact, and its policy simulated on
    the test episode) where it applies, and the best base-stock and capped base-stock policies
    (searched on ``train_paths`` training episodes, costed on the test episode)."""
    rows = []
    demand = test_demand(test_instance, seed, device).to(torch.float64)
    t = test_instance
    costs = dict(holding_cost=t.per_sku_tensor("holding_cost", device, torch.float64),
                 penalty_cost=t.per_sku_tensor("penalty_cost", device, torch.float64),
                 order_cost=t.per_sku_tensor("order_cost", device, torch.float64),
                 lost_sales=t.lost_sales, review_period=t.review_period)
    lead = t.per_sku_tensor("lead_time", device, torch.int64)
    if dp_applies(instance):
        h, p, c = instance.holding_cost, instance.penalty_cost, instance.order_cost
        sol = optimum.solve_lost_sales(optimum.poisson_pmf(float(instance.demand["rate"])),
                                       instance.lead_time, h, p, c,
                                       review_period=instance.review_period, progress=progress)
        note = "exact (relative value iteration)"
        published = optimum.zipkin_published().get((instance.lead_time, int(p)))
        if published is not None and h == 1.0 and c == 0.0 and instance.review_period == 1 \
                and float(instance.demand["rate"]) == 5.0:
            note += f"; Zipkin (2008) published {published:.2f}"
        rows.append({"policy": "DP optimum", "cost": sol.average_cost, "note": note})
        simulated = optimum.simulate_policy(sol, demand.to(torch.float64), h, p, c,
                                            warmup=t.warmup)
        rows.append({"policy": "DP policy, test episode", "cost": float(simulated.mean()),
                     "note": "the optimal policy on the same test demand"})
    pooled = identical_skus(instance)
    # Identical SKUs share one search; otherwise each test SKU gets its own, on paths of its own
    # demand process (the test instance may hold other SKUs than the training instance).
    train = instance.replace(num_skus=1) if pooled else test_instance
    process = train.demand_process(device)
    paths = process.sample(instance.horizon, generator=torch.Generator(device).manual_seed(
        seed + 17), paths=train_paths)
    for kind, label in (("base_stock", "best base-stock"),
                        ("capped_base_stock", "best capped base-stock")):
        fit_costs = {k: (v[:1] if pooled and isinstance(v, torch.Tensor) else v)
                     for k, v in costs.items()}
        policy, _ = baselines.fit(kind, paths, lead[:1] if pooled else lead,
                                  warmup=instance.warmup, **fit_costs)
        if pooled:
            policy = baselines.ClassicalPolicy(kind, policy.params.expand(t.num_skus, -1))
        metrics = baselines.evaluate(policy, demand, lead.expand(t.num_skus), warmup=t.warmup,
                                     **costs)
        params = ", ".join(f"{n}={v:g}" for n, v in zip(
            ("S", "cap"), policy.params[0].tolist())) if pooled else "per SKU"
        rows.append({"policy": label, "cost": float(metrics.average_cost.mean()),
                     "note": f"searched on {train_paths} training episodes ({params})"})
    return rows
