"""DS: differentiable-simulator (pathwise, HDPO-style) training of a regularized policy.

Each epoch draws a batch of demand episodes, unrolls the policy over the horizon with autograd
through ``inventory_step`` and the projection ops (``InventoryEnv.simulate``), and takes one Adam
step on the average cost per SKU-day after warm-up. Every ``eval_every`` epochs the policy is
evaluated on a fixed validation episode; the learning rate drops on plateaus
(ReduceLROnPlateau), training stops after ``patience`` evaluations without improvement, and the
best weights are kept. Runs the same on CPU and CUDA.

Checkpoints (``out_dir/checkpoint.pt``, written atomically every ``checkpoint_every`` epochs, at
the end and on Ctrl-C) hold everything the loop needs, including the episode generator's state,
so an interrupted run resumed with ``resume=True`` ends exactly where an uninterrupted one would
(on CPU with a fixed seed). A NaN or infinite loss or gradient stops the run with a message and
leaves the last good checkpoint in place.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import time
from dataclasses import dataclass

import torch

from ..envs import InstanceConfig, InventoryEnv
from ..policies import Policy, PolicyConfig, atomic_save
from .common import Diverged, EarlyStopping, Progress, RunResult


@dataclass
class DSConfig:
    """Hyperparameters (PAPER.md's DS search space: lr in [4e-4, 0.1], hidden 32..128 wide,
    ReduceLROnPlateau factor in [0.5, 0.95], up to 3000 epochs, patience 30)."""

    epochs: int = 400
    batch_size: int | None = 128      # SKUs (trajectories) per epoch; None: the instance's
    lr: float = 3e-3
    lr_factor: float = 0.7            # ReduceLROnPlateau factor, on the validation cost
    lr_patience: int = 4              # evaluations without improvement before the lr drops
    min_lr: float = 1e-5
    grad_clip: float = 10.0           # max gradient norm
    eval_every: int = 5               # epochs between validations
    patience: int = 30                # evaluations without improvement before stopping
    validation_skus: int = 512
    fixed_train_set: bool = False     # True: the same training episode every epoch (small data)
    checkpoint_every: int = 20        # epochs
    time_budget: float | None = None  # seconds of training, then stop (keeping the best)
    seed: int = 0

    def __post_init__(self):
        for name in ("epochs", "eval_every", "patience", "validation_skus", "checkpoint_every",
                     "lr_patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None, got {self.batch_size}")
        if not (self.lr > 0 and 0 < self.lr_factor < 1 and self.grad_clip > 0):
            raise ValueError("need lr > 0, 0 < lr_factor < 1 and grad_clip > 0")


def _with_skus(instance: InstanceConfig, skus: int | None) -> InstanceConfig:
    return instance if skus is None else instance.replace(num_skus=skus)


def train_ds(instance: InstanceConfig | str, policy_config: PolicyConfig | None = None,
             config: DSConfig | None = None, *, device: str | torch.device = "cpu",
             out_dir: str | pathlib.Path | None = None, resume: bool = False,
             progress: bool = True, label: str = "DS") -> tuple[Policy, RunResult]:
    """Trains a policy on ``instance`` and returns (the best policy, the run's record).

    With ``out_dir``, writes ``checkpoint.pt`` (resumable) and ``policy.pt`` (the best policy);
    ``resume=True`` continues from ``out_dir/checkpoint.pt``.
    """
    if isinstance(instance, str):
        instance = InstanceConfig.from_name(instance)
    policy_config = policy_config or PolicyConfig()
    config = config or DSConfig()
    out_dir = pathlib.Path(out_dir) if out_dir is not None else None
    checkpoint_path = out_dir / "checkpoint.pt" if out_dir else None

    train_env = InventoryEnv(_with_skus(instance, config.batch_size), device, seed=config.seed)
    valid_env = InventoryEnv(_with_skus(instance, config.validation_skus), device,
                             seed=config.seed + 1_000_003)
    validation = valid_env.sample_episode()
    torch.manual_seed(config.seed)  # the network's initial weights
    policy = Policy.for_instance(instance, policy_config, train_env.obs_names).to(device)
    policy.fit_normalizer(_initial_observations(train_env, policy))
    optimizer = torch.optim.Adam(policy.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=config.lr_factor, patience=config.lr_patience, min_lr=config.min_lr)
    stopper = EarlyStopping(config.patience, min_delta=1e-5)
    fixed_episode = train_env.sample_episode() if config.fixed_train_set else None
    history: list[dict] = []
    epoch, seconds_before, cpu_before = 0, 0.0, 0.0

    if resume:
        if checkpoint_path is None or not checkpoint_path.exists():
            raise FileNotFoundError(f"resume: no checkpoint at {checkpoint_path}")
        state = torch.load(checkpoint_path, map_location=device, weights_only=False)
        if state["instance"] != instance.to_dict() or state["ds_config"] != dataclasses.asdict(
                config) or state["policy_config"] != dataclasses.asdict(policy.config):
            raise ValueError(f"resume: {checkpoint_path} was written by a run with another "
                             "instance or other hyperparameters")
        policy.load_state_dict(state["policy"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        stopper.load_state_dict(state["stopper"])
        train_env.generator.set_state(state["generator"].cpu())
        epoch, seconds_before, history = state["epoch"], state["seconds"], state["history"]
        cpu_before = state["cpu_seconds"]
        finished = state.get("stopped") in ("completed", "early_stopped", "time_budget")
    else:
        finished = False

    def save_checkpoint(elapsed: float, stopped: str | None = None) -> None:
        if checkpoint_path is None:
            return
        atomic_save({"instance": instance.to_dict(), "ds_config": dataclasses.asdict(config),
                     "policy_config": dataclasses.asdict(policy.config),
                     "policy": policy.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "stopper": stopper.state_dict(),
                     "generator": train_env.generator.get_state(), "epoch": epoch,
                     "seconds": elapsed, "cpu_seconds": cpu_elapsed(), "history": history,
                     "stopped": stopped},
                    checkpoint_path)

    bar = Progress(label, config.epochs, enabled=progress)
    start, cpu_start = time.perf_counter(), time.process_time()
    elapsed = lambda: seconds_before + time.perf_counter() - start  # noqa: E731
    cpu_elapsed = lambda: cpu_before + time.process_time() - cpu_start  # noqa: E731
    stopped, message = (state["stopped"], "resumed a finished run") if finished else (
        "completed", "")
    train_cost = math.nan
    try:
        while epoch < config.epochs and not finished:
            episode = fixed_episode if fixed_episode is not None else train_env.sample_episode()
            loss = train_env.simulate(policy, episode).average_cost.mean()
            if not torch.isfinite(loss):
                raise Diverged(f"loss is {float(loss.detach())} at epoch {epoch + 1}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), config.grad_clip)
            if not torch.isfinite(norm):
                raise Diverged(f"gradient norm is {float(norm)} at epoch {epoch + 1}")
            optimizer.step()
            epoch += 1
            train_cost = float(loss.detach())
            if epoch % config.eval_every == 0 or epoch == config.epochs:
                with torch.no_grad():
                    value = float(valid_env.simulate(policy, validation).average_cost.mean())
                if not math.isfinite(value):
                    raise Diverged(f"validation cost is {value} at epoch {epoch}")
                stopper.update(value, epoch, policy)
                scheduler.step(value)
                history.append({"epoch": epoch, "train_cost": train_cost, "validation_cost": value,
                                "best_validation_cost": stopper.best,
                                "lr": optimizer.param_groups[0]["lr"], "seconds": elapsed(),
                                "cpu_seconds": cpu_elapsed()})
                bar.update(epoch, f"train {train_cost:.4f} valid {value:.4f} "
                                  f"(best {stopper.best:.4f})", force=True)
                if stopper.should_stop:
                    stopped = "early_stopped"
                    message = f"no improvement in {config.patience} evaluations"
                    break
            else:
                bar.update(epoch, f"train {train_cost:.4f} best valid {stopper.best:.4f}")
            if epoch % config.checkpoint_every == 0:
                save_checkpoint(elapsed())
            if config.time_budget is not None and elapsed() >= config.time_budget:
                stopped, message = "time_budget", f"time budget of {config.time_budget:.0f}s used"
                break
    except Diverged as e:
        stopped = "diverged"
        message = (f"training diverged: {e}; the last good checkpoint"
                   f"{f' ({checkpoint_path})' if checkpoint_path else ''} and the best policy "
                   "so far are kept")
    except KeyboardInterrupt:
        stopped = "interrupted"
        message = "interrupted" + (f"; resume with the same arguments and --resume"
                                   if checkpoint_path else "")
    finally:
        bar.close()
    if stopped != "diverged":
        save_checkpoint(elapsed(), None if stopped == "interrupted" else stopped)
    if stopper.best_state is not None:
        policy.load_state_dict(stopper.best_state)
    result = RunResult(best_validation=stopper.best, best_epoch=stopper.best_epoch, epochs=epoch,
                       seconds=elapsed(), stopped=stopped, message=message, history=history)
    if out_dir is not None:
        policy.save(out_dir / "policy.pt", instance=instance.to_dict())
    return policy, result


@torch.no_grad()
def _initial_observations(env: InventoryEnv, policy: Policy):
    """Observations along one episode of the untrained policy, for the input normalisation."""
    seen = []

    def record(state):
        seen.append(state.obs)
        return policy(state)

    env.simulate(record, env.sample_episode(torch.Generator(env.device).manual_seed(12345)))
    return torch.cat(seen)
