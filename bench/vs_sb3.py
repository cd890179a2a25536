"""Our batched PPO against Stable-Baselines3's PPO on the same MDP, same machine, same run.

The MDP: Zipkin's lost-sales instance (default L = 2, p = 9) with orders capped at 40, one SKU
per SB3 environment (``deepstock_fast.envs.gymnasium_env.GymnasiumEnv`` in SB3's DummyVecEnv), the
same observation and the same hyperparameters, PPOConfig's defaults (n_steps 2048 per rollout,
minibatch 256, 5 epochs, lr 1e-3 decaying linearly to 1e-4, gamma 0.99, GAE 0.95, 256x256
networks). SB3's
action is the order (our ``none`` head); ours runs with ``none`` and ``base``. Every
``eval_steps`` transitions each policy is costed on the same validation episode (512 SKUs),
next to the DP's optimal policy on that episode. Reported: environment steps per second, the
wall time until the validation gap first reached the target (2%), the best gap. Needs
``pip install stable-baselines3`` (an optional extra). Writes JSON to bench/results/.

    python bench/vs_sb3.py                       # 200k steps each
    python bench/vs_sb3.py --sb3-steps 1500000   # SB3 until it reaches the target, if it does
    python bench/vs_sb3.py --steps 50000 --instance zipkin:L=1,p=9,max_order=40
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # also under `python -P`
from common import machine, table, write_results  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from deepstock_fast import compare, optimum  # noqa: E402
from deepstock_fast.envs import InstanceConfig  # noqa: E402
from deepstock_fast.policies import PolicyConfig  # noqa: E402
from deepstock_fast.trainers import TRAINERS, PPOConfig, train_ppo  # noqa: E402
from deepstock_fast.trainers.common import validation_env  # noqa: E402

#: The actor's widths, ours (PPO's default) and SB3's; both critics are as wide
#: (PPOConfig.critic_hidden).
HIDDEN = TRAINERS["ppo"].hidden


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instance", default="zipkin:L=2,p=9,max_order=40")
    parser.add_argument("--steps", type=int, default=200_000)
    parser.add_argument("--sb3-steps", type=int, default=None,
                        help="SB3's budget, when it needs longer to reach the target "
                             "(default: --steps)")
    parser.add_argument("--eval-steps", type=int, default=10_240)
    parser.add_argument("--sb3-envs", type=int, default=8)
    parser.add_argument("--target-gap", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        from stable_baselines3 import PPO
        from stable_baselines3.common.callbacks import BaseCallback
        from stable_baselines3.common.env_util import make_vec_env
    except ImportError:
        print("bench/vs_sb3.py needs stable-baselines3: pip install stable-baselines3")
        return 2
    from deepstock_fast.envs.gymnasium_env import GymnasiumEnv

    instance = InstanceConfig.from_name(args.instance)
    config = PPOConfig(total_steps=args.steps, seed=args.seed,
                       eval_every=max(1, args.eval_steps // PPOConfig.n_steps), patience=10**6)
    valid_env = validation_env(instance, config.validation_skus, args.seed, "cpu")
    validation = valid_env.sample_episode()
    sol = compare.dp_solution(instance)
    dp = float(optimum.simulate_policy(sol, validation.demand.double(), instance.holding_cost,
                                       instance.penalty_cost, warmup=instance.warmup).mean())
    rows = []

    def summarise(name, curve, seconds, steps):
        reached = next((t for t, c in curve if 100 * (c / dp - 1) <= args.target_gap), None)
        best = min(c for _, c in curve)
        rows.append(dict(method=name, steps=steps, seconds=seconds, steps_per_s=steps / seconds,
                         best_gap_pct=100 * (best / dp - 1), seconds_to_target=reached,
                         curve=curve))
        print(f"{name}: {steps / seconds:.0f} steps/s, best gap {100 * (best / dp - 1):+.2f}%, "
              f"{args.target_gap:g}% at {reached if reached is None else round(reached)} s",
              flush=True)

    for head in ("none", "base"):
        _, result = train_ppo(instance, PolicyConfig(head=head, hidden=HIDDEN), config,
                              label=f"ours+{head}")
        summarise(f"deepstock_fast PPO + {head}",
                  [(h["seconds"], h["validation_cost"]) for h in result.history],
                  result.seconds, result.iterations * config.n_steps)

    # SB3: one SKU per environment, its own vectorised env and rollout buffer
    single = instance.replace(num_skus=1)
    vec = make_vec_env(lambda: GymnasiumEnv(single), n_envs=args.sb3_envs, seed=args.seed)
    lr = lambda progress: config.lr_final + (config.lr - config.lr_final) * progress  # noqa
    model = PPO("MlpPolicy", vec, n_steps=config.n_steps // args.sb3_envs,
                batch_size=config.batch_size, n_epochs=config.update_epochs, learning_rate=lr,
                gamma=config.gamma, gae_lambda=config.gae_lambda, clip_range=config.clip,
                ent_coef=config.ent_coef, vf_coef=config.vf_coef, seed=args.seed,
                max_grad_norm=config.max_grad_norm, device="cpu",
                policy_kwargs=dict(net_arch=list(HIDDEN)), verbose=0)
    curve, cap = [], float(instance.max_order)

    def sb3_policy(state):
        action, _ = model.predict(state.obs.numpy(), deterministic=True)
        return torch.as_tensor(np.clip(action[:, 0], 0, cap), dtype=state.on_hand.dtype)

    class Evaluate(BaseCallback):
        def __init__(self):
            super().__init__()
            self.next, self.start, self.eval_time = args.eval_steps, time.perf_counter(), 0.0

        def _on_step(self) -> bool:
            if self.num_timesteps >= self.next:
                t0 = time.perf_counter()
                with torch.no_grad():
                    cost = float(valid_env.simulate(sb3_policy, validation).average_cost.mean())
                self.eval_time += time.perf_counter() - t0
                curve.append((time.perf_counter() - self.start - self.eval_time, cost))
                self.next += args.eval_steps
            return True

    callback = Evaluate()
    sb3_steps = args.sb3_steps or args.steps
    model.learn(total_timesteps=sb3_steps, callback=callback)
    seconds = time.perf_counter() - callback.start - callback.eval_time
    summarise("Stable-Baselines3 PPO (orders)", curve, seconds, sb3_steps)

    ours = min((r for r in rows if r["method"].startswith("deepstock")),
               key=lambda r: r["seconds_to_target"] or float("inf"))
    sb3 = rows[-1]
    print(table(rows, [("method", "method", "s"), ("steps_per_s", "env steps/s", ".0f"),
                       ("best_gap_pct", "best gap %", "+.2f"),
                       ("seconds_to_target", f"s to {args.target_gap:g}%", ".0f"),
                       ("seconds", "train s", ".0f")]))
    print(f"throughput ratio ours/SB3: {rows[0]['steps_per_s'] / sb3['steps_per_s']:.1f}x")
    if ours["seconds_to_target"] and sb3["seconds_to_target"]:
        print(f"time to {args.target_gap:g}% ratio SB3/ours: "
              f"{sb3['seconds_to_target'] / ours['seconds_to_target']:.1f}x")
    path = write_results("vs_sb3", {"machine": machine("cpu"), "instance": instance.to_dict(),
                                    "dp_validation_cost": dp, "args": vars(args),
                                    "ppo_config": dataclasses.asdict(config),
                                    "rows": rows})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
