"""Environment steps per second: InventoryEnv.step against raw inventory_step calls and against a
per-environment NumPy simulator of the OR-Gym kind (the peer most inventory-RL code uses).

Instance: lost sales, Poisson(5) demand, h = 1, p = 9, P = 1, lead times mixed 0..max_lead,
horizon 100 days, the default observation (on-hand, pipeline, the five Coeff features), a
constant order. Columns (environment-steps per second):
  raw op       inventory_step in a loop that threads the state, demand drawn beforehand
  env op       the env_step op InventoryEnv.step calls (the step, observation, reward and
               metric totals in one pass), in a loop that threads the state and the totals
  env step     InventoryEnv.step inside episodes (the Python layer around its env_step call)
  env + draws  InventoryEnv.step over whole episodes, including the autoreset's demand and
               feature draws (28 + 100 + 28 days of Poisson demand per SKU)
  numpy peer   one Python object per SKU, stepped in a Python loop (as gym's SyncVectorEnv or
               SB3's DummyVecEnv would), timed on a subset of SKUs
On CUDA the ops run with value checks off (no synchronisation per call, as in a training loop).
Prints a table and writes JSON with the machine to bench/results/.

    python bench/env_step.py                 # B = 2^16 on the CPU, max_lead 1 and 4
    python bench/env_step.py --device cuda --log2-batch 16 20
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import numpy as np
import torch

import deepstock_fast as ds
from deepstock_fast.envs import InstanceConfig, InventoryEnv

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # also under `python -P`
from common import machine, sync, table, write_results  # noqa: E402

HORIZON = 100


class NumpyInventoryEnv:
    """One SKU, OR-Gym style: NumPy state, per-period history arrays, its own RNG."""

    def __init__(self, lead_time: int, holding_cost=1.0, penalty_cost=9.0, rate=5.0,
                 horizon=HORIZON, max_order=100.0, seed=0):
        self.lead_time, self.h, self.p, self.rate = lead_time, holding_cost, penalty_cost, rate
        self.horizon, self.max_order = horizon, max_order
        self.rng = np.random.default_rng(seed)
        self.reset()

    def reset(self):
        self.period = 0
        self.on_hand = np.zeros(self.horizon + 1)
        self.pipeline = np.zeros((self.horizon + 1, max(self.lead_time, 1)))
        self.demand = np.zeros(self.horizon)
        self.sales = np.zeros(self.horizon)
        self.lost = np.zeros(self.horizon)
        return self._obs()

    def _obs(self):
        t = self.period
        return np.concatenate(([self.on_hand[t]], self.pipeline[t]))

    def step(self, action):
        t = self.period
        order = float(np.clip(action, 0, self.max_order))
        stock, pipe = self.on_hand[t], self.pipeline[t].copy()
        if self.lead_time == 0:
            stock += order
        else:
            pipe[self.lead_time - 1] += order
            stock += pipe[0]
            pipe = np.append(pipe[1:], 0.0)
        d = self.rng.poisson(self.rate)
        sold = min(stock, d)
        self.demand[t], self.sales[t], self.lost[t] = d, sold, d - sold
        self.on_hand[t + 1] = stock - sold
        self.pipeline[t + 1] = pipe
        reward = -(self.h * self.on_hand[t + 1] + self.p * self.lost[t])
        self.period += 1
        truncated = self.period >= self.horizon
        obs = self._obs()
        if truncated:
            obs = self.reset()
        return obs, reward, False, truncated, {}


def time_steps(fn, steps: int, device: str, rounds: int = 3) -> float:
    """Best time per step of ``fn(steps)`` over ``rounds`` runs."""
    best = float("inf")
    for _ in range(rounds):
        sync(device)
        t0 = time.perf_counter()
        fn(steps)
        sync(device)
        best = min(best, (time.perf_counter() - t0) / steps)
    return best


def bench(batch: int, max_lead: int, device: str, peer_envs: int) -> dict:
    lead = [k % (max_lead + 1) for k in range(batch)]
    config = InstanceConfig(num_skus=batch, lead_time=lead, horizon=HORIZON, penalty_cost=9.0,
                            demand={"kind": "poisson", "rate": 5.0})
    env = InventoryEnv(config, device=device, seed=0)
    order = torch.full((batch,), 5.0, device=device)

    # raw op: the same instance's demand, drawn beforehand
    episode = env.sample_episode()
    x, pipe, lead_t = episode.on_hand, episode.pipeline, env.lead_time
    costs = env.holding_cost, env.penalty_cost, env.order_cost

    def raw(steps):
        on_hand, pipeline = x, pipe
        for t in range(steps):
            on_hand, pipeline, _, _ = ds.inventory_step(
                on_hand, pipeline, lead_t, order, episode.epoch_demand[t % HORIZON], *costs, True)

    def env_op(steps):
        on_hand, pipeline = x, pipe
        cost_total, stats_total = x.new_zeros(batch, 3), x.new_zeros(batch, 4)
        for t in range(steps):
            e = t % HORIZON
            out = torch.ops.deepstock.env_step(
                on_hand, pipeline, lead_t, order, episode.epoch_demand[e], *costs, True,
                episode.exogenous_obs[e + 1], episode.scale, cost_total, stats_total, True)
            on_hand, pipeline, cost_total, stats_total = out[0], out[1], out[6], out[7]

    def env_steps(steps):  # inside episodes: never reaches the horizon
        for _ in range(steps):
            env.step(order)

    def env_with_draws(steps):
        for _ in range(steps):
            env.step(order)

    within = HORIZON - 1

    def env_within(steps):  # timed from a fresh episode, stopping before the horizon
        env.reset()
        sync(device)
        t0 = time.perf_counter()
        env_steps(steps)
        sync(device)
        return time.perf_counter() - t0

    peers = [NumpyInventoryEnv(k % (max_lead + 1), seed=k) for k in range(peer_envs)]

    def peer(steps):
        for _ in range(steps):
            for e in peers:
                e.step(5.0)

    # interleaved rounds, best of each: the machine is shared and noisy, and the ratios compare
    # times taken moments apart
    times = {"raw": float("inf"), "env_op": float("inf"), "env": float("inf"),
             "peer": float("inf")}
    for _ in range(5):
        times["raw"] = min(times["raw"], time_steps(raw, HORIZON, device, rounds=1))
        times["env_op"] = min(times["env_op"], time_steps(env_op, HORIZON, device, rounds=1))
        times["env"] = min(times["env"], env_within(within) / within)
        times["peer"] = min(times["peer"], time_steps(peer, 4, "cpu", rounds=1) / peer_envs)
    env.reset()
    times["env_draws"] = time_steps(env_with_draws, 2 * HORIZON, device, rounds=2)
    rate = {k: (1 / v if k == "peer" else batch / v) for k, v in times.items()}
    return {"batch": batch, "max_lead": max_lead, "device": device,
            "raw_steps_per_s": rate["raw"], "env_op_steps_per_s": rate["env_op"],
            "env_steps_per_s": rate["env"],
            "env_with_draws_steps_per_s": rate["env_draws"], "peer_steps_per_s": rate["peer"],
            "env_cost_vs_raw": rate["raw"] / rate["env"],
            "env_cost_vs_env_op": rate["env_op"] / rate["env"],
            "env_vs_peer": rate["env"] / rate["peer"],
            "env_with_draws_vs_peer": rate["env_draws"] / rate["peer"]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--log2-batch", type=int, nargs="+", default=[16])
    parser.add_argument("--max-lead", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--peer-envs", type=int, default=256,
                        help="SKUs of the NumPy peer to time (its rate is per SKU-step)")
    args = parser.parse_args(argv)
    rows = []
    # As in a training loop: on CUDA the ops do not synchronise per call to check values.
    with ds.cuda_value_checks(False):
        for log2 in args.log2_batch:
            for lead in args.max_lead:
                rows.append(bench(2 ** log2, lead, args.device, args.peer_envs))
                print(f"  B = 2^{log2}, max_lead {lead}: done", flush=True)
    print(table(rows, [("batch", "B", "d"), ("max_lead", "Lmax", "d"),
                       ("raw_steps_per_s", "raw op /s", ".2e"),
                       ("env_op_steps_per_s", "env op /s", ".2e"),
                       ("env_steps_per_s", "env step /s", ".2e"),
                       ("env_with_draws_steps_per_s", "env + draws /s", ".2e"),
                       ("peer_steps_per_s", "numpy peer /s", ".2e"),
                       ("env_cost_vs_raw", "raw/env", ".2f"),
                       ("env_cost_vs_env_op", "env op/env", ".2f"),
                       ("env_vs_peer", "env/peer", ".0f"),
                       ("env_with_draws_vs_peer", "env+draws/peer", ".0f")]))
    path = write_results("env_step", {"machine": machine(args.device), "horizon": HORIZON,
                                      "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
