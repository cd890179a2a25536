"""Trained policies and per-SKU classical baselines on a catalog's test period, side by side:
cost, fill rate, stockout rate and turnover days per SKU and by category.

The baselines (:data:`BASELINES`) are searched per SKU on the training period alone
(:func:`deepstock_fast.compare.fit_episodes`) and every policy runs on the same test episode
(every SKU of the catalog over the whole test period, from the same initial state)::

    bt = backtest({"ds + base": policy}, instance)
    bt.by_category()       # rows: policy, category, skus, cost, fill_rate, stockout_rate, ...
    bt.write(out_dir)      # test_per_sku.csv, test_by_category.png
"""

from __future__ import annotations

import csv
import pathlib
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from . import baselines, compare, reference
from .envs import InstanceConfig
from .evaluation import held_out_env
from .metrics import Metrics, aggregate, business_metrics

#: Classical policy (``deepstock_fast.POLICIES``) -> its label in reports.
BASELINES = {"base_stock": "base-stock", "capped_base_stock": "capped base-stock",
             "s_S": "(s, S)"}
METRICS = ("average_cost", "fill_rate", "stockout_rate", "turnover_days")


@dataclass
class Backtest:
    """Totals of each policy on the test episode: cost [K, 3] and stats [K, 4] per SKU."""

    test: InstanceConfig
    series: list[str]            # [K] SKU (or SKU@warehouse) ids
    categories: list[str]        # [K]
    totals: dict[str, tuple[Tensor, Tensor]]
    demanded: Tensor             # [K] units demanded after warm-up
    days: int                    # days counted per SKU
    notes: dict[str, str]        # policy -> why it is missing (a baseline that failed)
    baselines: tuple[str, ...] = ()  # the labels of the classical policies among totals

    def per_sku(self, policy: str) -> Metrics:
        cost, stats = self.totals[policy]
        return business_metrics(cost, stats, self.demanded, self.days)

    def by_category(self) -> list[dict]:
        """One row per policy and category, then per policy over all SKUs (category "all"):
        the mean cost per SKU-day and the ratios of the summed quantities."""
        groups = {c: [i for i, x in enumerate(self.categories) if x == c]
                  for c in sorted(set(self.categories))}
        if len(groups) > 1:
            groups["all"] = list(range(len(self.categories)))
        rows = []
        for policy, (cost, stats) in self.totals.items():
            for category, members in groups.items():
                index = torch.tensor(members, device=cost.device)
                m = aggregate(cost[index], stats[index], self.demanded[index], self.days)
                rows.append({"policy": policy, "category": category, "skus": len(members),
                             **{k: float(getattr(m, k)) for k in METRICS}})
        return rows

    def reference_rows(self) -> list[dict]:
        """The baselines as :func:`compare.reference_rows` gives references (policy, cost, its
        standard error over the SKUs, per-SKU costs for paired gaps, a note)."""
        rows = []
        for policy in self.totals:
            if policy not in self.baselines:
                continue
            per_sku = self.per_sku(policy).average_cost
            n = per_sku.numel()
            rows.append({"policy": policy, "cost": float(per_sku.mean()),
                         "cost_se": float(per_sku.std() / n ** 0.5) if n > 1 else float("nan"),
                         "per_sku": per_sku, "note": "searched per SKU on the training period"})
        rows += [{"policy": p, "cost": None, "cost_se": None, "per_sku": None, "note": note}
                 for p, note in self.notes.items()]
        return rows

    def to_json(self) -> dict:
        return {"test_instance": {k: v for k, v in self.test.to_dict().items()},
                "days": self.days, "by_category": self.by_category(), "notes": self.notes}

    def write(self, out: str | pathlib.Path, plot: bool = True) -> list[pathlib.Path]:
        """``test_per_sku.csv`` (one row per SKU and policy) and, with matplotlib,
        ``test_by_category.png``; returns the paths written."""
        out = pathlib.Path(out)
        path = out / "test_per_sku.csv"
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["sku", "category", "policy", *METRICS])
            for policy in self.totals:
                m = self.per_sku(policy)
                columns = [getattr(m, k).tolist() for k in METRICS]
                for i, sku in enumerate(self.series):
                    writer.writerow([sku, self.categories[i], policy,
                                     *(f"{c[i]:.6g}" for c in columns)])
        written = [path]
        if plot:
            try:
                written.append(self.plot(out / "test_by_category.png"))
            except ImportError:
                pass
        return written

    def plot(self, path: str | pathlib.Path) -> pathlib.Path:
        """Bars of cost, fill rate, stockout rate and turnover days per category, one bar per
        policy."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        rows = self.by_category()
        policies = list(self.totals)
        categories = list(dict.fromkeys(r["category"] for r in rows))
        fig, axes = plt.subplots(1, 4, figsize=(18, 4.5))
        width = 0.8 / max(1, len(policies))
        for ax, metric in zip(axes, METRICS):
            for j, policy in enumerate(policies):
                values = [next(r[metric] for r in rows if r["policy"] == policy
                               and r["category"] == c) for c in categories]
                ax.bar([i + j * width for i in range(len(categories))], values, width,
                       label=policy)
            ax.set_xticks([i + width * (len(policies) - 1) / 2 for i in range(len(categories))],
                          categories, rotation=45, ha="right")
            ax.set_title(metric.replace("_", " ").replace("average cost", "cost / SKU-day"))
        axes[0].legend(fontsize=8)
        fig.suptitle(f"test period: {self.test.horizon} days, {len(self.series)} SKUs")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return pathlib.Path(path)


@torch.no_grad()
def backtest(policies: dict[str, Callable], instance: InstanceConfig, *, seed: int = 0,
             device="cpu", kinds=tuple(BASELINES)) -> Backtest:
    """Runs ``policies`` ({label: policy}) and the per-SKU baselines ``kinds`` (searched on the
    training period) on the test episode of ``instance`` (:func:`compare.held_out_instance`:
    every catalog SKU, the whole test period)."""
    t = compare.held_out_instance(instance)
    env = held_out_env(t, seed, device)
    episode = env.sample_episode()
    totals, notes = {}, {}
    for label, policy in policies.items():
        if hasattr(policy, "check_instance"):
            policy.check_instance(env.obs_names)
        result = env.simulate(policy, episode)
        totals[label] = (result.cost.double(), result.stats.double())
    pooled = compare.identical_skus(instance)
    fit, paths, x0, pipe0 = compare.fit_episodes(instance, t, pooled, 128, seed, device)
    lead_fit = fit.per_sku_tensor("lead_time", device, torch.int64)
    lead = t.per_sku_tensor("lead_time", device, torch.int64).expand(t.num_skus)
    review = fit.sku_review_periods(device)  # SKUs with their own review periods, or None
    for kind in kinds:
        label = f"best {BASELINES[kind]} per SKU"
        try:
            if review is None:
                policy, _ = baselines.fit(kind, paths, lead_fit[:1] if pooled else lead_fit,
                                          on_hand=x0, pipeline=pipe0,
                                          **compare.costing(fit, device))
                if pooled:
                    policy = baselines.ClassicalPolicy(kind,
                                                       policy.params.expand(t.num_skus, -1))
                totals[label] = baselines.totals(policy, episode.demand.double(), lead,
                                                 on_hand=episode.on_hand.double(),
                                                 pipeline=episode.pipeline.double(),
                                                 **compare.costing(t, device))
            else:
                params = _fit_by_review_period(kind, fit, review, paths, lead_fit, x0, pipe0,
                                               device)
                result = env.simulate(lambda s: reference.classical_order(
                    kind, s.inventory_position, params.to(s.on_hand.dtype)), episode)
                totals[label] = (result.cost.double(), result.stats.double())
        except (RuntimeError, ValueError, MemoryError) as e:
            notes[label] = f"not computed: {str(e).splitlines()[0]}"
    process = t.demand_process("cpu") if t.catalog_size is not None else None
    data = getattr(process, "data", None)
    series = [str(s) for s in data.series] if data is not None else [
        str(i) for i in range(t.num_skus)]
    categories = ([str(c) for c in data.attributes["category"]]
                  if data is not None and "category" in data.attributes else
                  ["all"] * t.num_skus)
    if episode.sku is not None:  # the SKUs the test episode holds, in its order
        series = [series[i] for i in episode.sku.tolist()]
        categories = [categories[i] for i in episode.sku.tolist()]
    demanded = episode.demand[:, t.warmup:].double().sum(1)
    return Backtest(t, series, categories, totals, demanded, t.horizon - t.warmup, notes,
                    tuple(label for label in totals if label not in policies))


def _fit_by_review_period(kind, fit, review, paths, lead, on_hand, pipeline, device) -> Tensor:
    """Parameters [K, n] of ``kind`` searched per SKU when SKUs have their own review periods:
    one search per period (the rollout's review period), on the whole review periods of each
    SKU's training path."""
    params = None
    costing = compare.costing(fit, device)
    for period in review.unique().tolist():
        rows = torch.nonzero(review == period).squeeze(1)
        days = paths.shape[2] // period * period
        part = {k: v[rows] if isinstance(v, Tensor) and v.numel() > 1 else v
                for k, v in costing.items()}
        part["review_period"] = period
        policy, _ = baselines.fit(kind, paths[rows][:, :, :days], lead[rows],
                                  on_hand=on_hand[rows], pipeline=pipeline[rows], **part)
        if params is None:
            params = policy.params.new_zeros(len(review), policy.params.shape[1])
        params[rows] = policy.params
    return params


def rolling_origin(policies: dict[str, Callable], instance: InstanceConfig, folds: int = 3, *,
                   seed: int = 0, device="cpu", kinds=tuple(BASELINES)) -> list[dict]:
    """Rolling-origin evaluation of a sales instance: the test period cut into ``folds``
    consecutive windows; at each window's first day (its origin) the periods move forward
    together (the validation period ends at the origin, the training period as much later),
    the baselines are searched again on everything before the validation period, and every
    policy runs on that window alone. ``policies`` stay as trained (once, before the first
    origin). Returns one dict per fold: origin and end dates, and :meth:`Backtest.by_category`
    rows."""
    if not instance.periods:
        raise ValueError("rolling-origin evaluation needs a sales instance (its time periods)")
    process = instance.demand_process("cpu")
    first, last = process.bounds("test")
    if not (isinstance(folds, int) and 1 <= folds <= last - first):
        raise ValueError(f"folds must be an int in 1..{last - first} (the test period's days), "
                         f"got {folds!r}")
    edges = [first + (last - first) * j // folds for j in range(folds + 1)]
    gap = process.test_day - process.valid_day
    out = []
    for j in range(folds):
        origin, end = edges[j], edges[j + 1]
        demand = dict(instance.demand, valid_start=str(process.data.date(origin - gap)),
                      test_start=str(process.data.date(origin)),
                      test_end=str(process.data.date(end)))
        fold = instance.replace(demand=demand)
        bt = backtest(policies, fold, seed=seed, device=device, kinds=kinds)
        out.append({"fold": j, "origin": str(process.data.date(origin)),
                    "end": str(process.data.date(end)), "days": bt.days,
                    "by_category": bt.by_category(), "notes": bt.notes})
    return out
