"""Reporting helpers shared by the command line and the benchmarks: the machine a number was
measured on, and plain-text tables."""

from __future__ import annotations

import os
import pathlib
import platform
import socket

import torch


def machine(device: str | torch.device = "cpu") -> dict:
    """What the numbers were measured on."""
    from . import build_info

    device = str(device)
    cpu = platform.processor() or platform.machine()
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "host": socket.gethostname(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "build": build_info(),
        "device": device,
    }
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        info["gpu"] = props.name
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
    return info


def table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """Plain-text table: columns are (key, header, format)."""
    cells = [[h for _, h, _ in columns]]
    for r in rows:
        cells.append([("" if r.get(k) is None else format(r[k], f)) for k, _, f in columns])
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _pyplot():
    """matplotlib's pyplot on the file-only backend (ImportError without matplotlib)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def learning_curve(histories: dict[str, list[dict]], reference: str | None,
                   reference_cost: float | None, path, *, title: str,
                   unit: str = "iteration") -> None:
    """Writes the learning curves of a run's policies (``histories``: label -> the run's
    history) to ``path``: the validation cost's gap in percent to ``reference`` (log scale;
    symmetric log where a policy validates below it) against seconds and against iterations,
    in two panels. Without a reference cost, the validation cost itself. ImportError without
    matplotlib."""
    plt = _pyplot()
    gap = reference_cost is not None and reference_cost > 0
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    values = []
    for label, history in histories.items():
        costs = [h["validation_cost"] for h in history]
        y = [100 * (c - reference_cost) / reference_cost for c in costs] if gap else costs
        values += y
        axes[0].plot([h["seconds"] for h in history], y, label=label)
        axes[1].plot([h["iteration"] for h in history], y, label=label)
    scale = "log" if values and min(values) > 0 else "symlog"
    for ax, x in zip(axes, ("seconds", unit)):
        ax.set_yscale(scale, **({} if scale == "log" else {"linthresh": 0.1}))
        ax.set_xlabel(x)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel(f"validation gap % to {reference}" if gap
                       else "validation cost per SKU-day")
    axes[1].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@torch.no_grad()
def policy_plot(policy, instance, path, *, seed: int = 0, device="cpu", skus: int = 64) -> str:
    """Writes a policy plot to ``path``: the order against the inventory position at the states
    of one episode of ``instance`` (``skus`` SKUs, from ``seed``'s test stream) under
    ``policy``, next to the order of the optimal DP policy at the same states where the DP
    applies (a Zipkin-type instance), else of the best base-stock policy (a level per SKU
    searched on that episode's demand). Returns the reference's name. ImportError without
    matplotlib."""
    from . import baselines, compare, seeding
    from .envs import InventoryEnv

    plt = _pyplot()
    instance = instance.for_period("test").replace(num_skus=skus)  # a sales history's test
    env = InventoryEnv(instance, device, seed=seeding.stream(seed, "test"))
    episode = env.sample_episode()
    seen = []

    def act(state):
        order = policy(state)
        seen.append((state.on_hand, state.pipeline, state.inventory_position, order))
        return order

    env.simulate(act, episode)
    on_hand, pipeline, position, order = (torch.cat([s[i].double() for s in seen])
                                          for i in range(4))
    if compare.dp_applies(instance):
        name = "optimal DP policy"
        sol = compare.dp_solution(instance)
        y = (on_hand + pipeline[:, 0]).round()
        rest = pipeline[:, 1:].round()
        keep = (y + rest.sum(1) <= sol.max_position) & (y >= 0)
        position, order, y, rest = position[keep], order[keep], y[keep], rest[keep]
        reference = sol.order(y, rest).double()
    else:
        name = "best base-stock policy"
        costing = compare.costing(instance, device)  # with the episode's SKUs' parameters
        costing.update({k: getattr(episode, k).double() for k in
                        ("holding_cost", "penalty_cost", "order_cost")})
        fitted, _ = baselines.fit("base_stock", episode.demand.double(), episode.lead_time,
                                  on_hand=episode.on_hand.double(),
                                  pipeline=episode.pipeline.double(), **costing)
        level = fitted.params[:, 0].repeat(len(seen))
        cap = instance.max_order if instance.max_order is not None else float("inf")
        reference = (level - position).clamp(0, cap)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.scatter(position.cpu(), reference.cpu(), s=8, alpha=0.4, color="black", label=name)
    ax.scatter(position.cpu(), order.cpu(), s=8, alpha=0.4, color="tab:blue",
               label=f"policy ({policy.config.head} head)")
    ax.set(xlabel="inventory position (on hand + pipeline)", ylabel="order",
           title=f"orders at {len(position)} states of one episode")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return name


def sensitivity_plot(curves: dict[str, list], spreads: dict[str, list[float]],
                     reference: str | None, reference_cost: float | None, path, *,
                     title: str) -> None:
    """Writes a tuning study's sensitivity figure to ``path``: left, the best validation cost
    found so far against the number of trials (``curves``: label -> per trial, None before the
    first complete one), one line per (algo, head), with ``reference_cost`` as a horizontal
    line; right, the spread of every trial's validation cost per label (``spreads``): the
    5/25/50/75/95% quantiles, which show how sensitive each method is to its
    hyperparameters. ImportError without matplotlib."""
    import numpy as np

    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.4),
                                      gridspec_kw={"width_ratios": [3, 2]})
    for label, ys in curves.items():
        left.step(range(1, len(ys) + 1), [np.nan if y is None else y for y in ys],
                  where="post", label=label)
    if reference_cost is not None:
        left.axhline(reference_cost, color="black", linestyle="--", label=reference)
        right.axhline(reference_cost, color="black", linestyle="--")
    left.set(xlabel="trials", ylabel="best validation cost so far", title=title)
    left.grid(True, alpha=0.3)
    left.legend()
    labels = [k for k, v in spreads.items() if v]
    for i, label in enumerate(labels):
        q = np.quantile(spreads[label], [0.05, 0.25, 0.5, 0.75, 0.95])
        right.vlines(i, q[0], q[4], color="tab:gray")
        right.vlines(i, q[1], q[3], color="tab:blue", linewidth=8)
        right.plot(i, q[2], "o", color="white", markeredgecolor="black")
    right.set_xticks(range(len(labels)), labels, rotation=20)
    right.set_xlim(-0.6, len(labels) - 0.4)
    costs = [v for k in labels for v in spreads[k]]
    if costs and min(costs) > 0 and max(costs) / min(costs) > 20:
        right.set_yscale("log")
    right.set(ylabel="validation cost of the trials", title="spread: 5-25-50-75-95% quantiles")
    right.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
