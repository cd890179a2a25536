"""Reference policies for the DeepStock paper's synthetic settings (``paper:setting=1..4``).

All settings are backlog systems over a finite horizon of T days, an order every P days
(review days 0, P, 2P, ...) arriving L days after it is placed, at most ``max_order`` per
order, end-of-day costs h * on-hand + p * backorder, the first ``warmup`` days not scored, and
costs reported as the environment does: the average cost per scored day per trajectory.

Under backlog one number summarises the state: the order placed on review day r arrives on day
r + L and is the last to arrive before day k for k = r + L .. r + L + P - 1, so the end-of-day
net inventory of those days is y_r - D[r..k], y_r the inventory position after ordering and
D[r..k] the demand of days r..k. Days k < L depend on no decision.

- :func:`finite_horizon_backlog_dp`: the exact optimum for independent integer demand with a
  known pmf per day (setting 1: :func:`setting1_dp`).
- :func:`newsvendor_level`: setting 4's closed form (P = 1, L = 0: a newsvendor every day).
- :func:`ar1_myopic_levels`: settings 2/3, an oracle that knows each trajectory's AR(1)
  parameters (:func:`ar1_params`) and yesterday's demand (:func:`episode_yesterday`; both:
  :func:`ar1_oracle_levels`); :func:`ar1_dp_gap` measures its gap to a discretised DP.
- The classical levels a practitioner fits on the training trajectories are
  :func:`deepstock_fast.compare.reference_rows`' (a training set's best base-stock and capped
  base-stock, searched on it pooled).
- :func:`cost_of_levels`: costs any of them on given demand (the test episode of the trained
  policies: common random numbers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from . import baselines
from .demand import AR1
from .envs import InstanceConfig, SimState, simulate
from .ops import check_count

F64 = torch.float64


def _check_costs(holding_cost, penalty_cost) -> None:
    for name, v in (("holding_cost", holding_cost), ("penalty_cost", penalty_cost)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
    if holding_cost + penalty_cost <= 0:
        raise ValueError("holding_cost + penalty_cost must be > 0")


def _check_timing(lead_time, review_period, horizon, warmup) -> tuple[int, int, int, int]:
    lead_time = check_count(lead_time, "lead_time", 0)
    review_period = check_count(review_period, "review_period", 1)
    horizon = check_count(horizon, "horizon", 1)
    warmup = check_count(warmup, "warmup", 0)
    if horizon % review_period:
        raise ValueError(f"horizon = {horizon} must be a multiple of review_period = "
                         f"{review_period}")
    if warmup % review_period or warmup >= horizon:
        raise ValueError(f"warmup = {warmup} must be a multiple of review_period in "
                         f"0..horizon-1")
    return lead_time, review_period, horizon, warmup


def _convolve(a: Tensor, b: Tensor) -> Tensor:
    """The pmf of the sum of two independent integer variables with pmfs a [n] and b [m]."""
    return torch.nn.functional.conv1d(a.view(1, 1, -1), b.flip(0).view(1, 1, -1),
                                      padding=b.numel() - 1).view(-1)


def _expected_day_cost(levels: Tensor, pmf: Tensor, h: float, p: float) -> Tensor:
    """E[h (y - S)^+ + p (S - y)^+] for each y of levels [n], S with pmf [m] on 0..m-1."""
    s = torch.arange(pmf.numel(), dtype=F64)
    gap = levels.unsqueeze(1) - s
    return (torch.where(gap >= 0, h * gap, -p * gap) * pmf).sum(1)


@dataclass
class BacklogDPSolution:
    """Result of :func:`finite_horizon_backlog_dp`.

    ``order_up_to[e, i]`` is the optimal inventory position after ordering on review day
    ``review_days[e]`` when the position before ordering is ``positions[i]`` (the order is the
    difference; epochs whose orders arrive after the horizon order nothing). ``value[e, i]`` is
    the optimal expected cost of the days the decisions from that epoch on affect, scored days
    only (not divided by anything)."""

    expected_cost: float     # optimal expected cost per scored day from the empty state
    expected_total: float    # the same, summed over the scored days
    order_up_to: Tensor      # [E, n] float64
    value: Tensor            # [E, n] float64
    positions: Tensor        # [n] float64 integer grid of inventory positions
    review_days: list[int]
    lead_time: int
    review_period: int
    horizon: int
    warmup: int
    max_order: float

    def orders(self, epoch: int, inventory_position: Tensor) -> Tensor:
        """Optimal orders [B] on review epoch ``epoch`` for integer positions [B]."""
        lo = int(self.positions[0])
        index = inventory_position.round().long() - lo
        if bool((index < 0).any() or (index >= self.positions.numel()).any()):
            raise ValueError("inventory_position outside the DP's grid "
                             f"[{lo}, {int(self.positions[-1])}]")
        level = self.order_up_to[epoch].to(inventory_position.device)[index]
        return (level - inventory_position).clamp(min=0)

    def policy(self):
        """The policy as a :func:`~deepstock_fast.envs.simulate` callable."""
        def act(state: SimState) -> Tensor:
            return self.orders(state.day // self.review_period,
                               state.inventory_position).to(state.on_hand.dtype)
        return act


def finite_horizon_backlog_dp(day_pmfs, lead_time: int, review_period: int, holding_cost: float,
                              penalty_cost: float, horizon: int, warmup: int = 0,
                              max_order: float | None = None) -> BacklogDPSolution:
    """Exact finite-horizon DP of the backlog system on the inventory position.

    Args:
        day_pmfs: [T, m] float64 (or a list of T pmfs): P(D_t = d) for d = 0 .. m-1, demand
            independent across days (day-dependent distributions allowed).
        lead_time: L >= 0 days from ordering to arrival (an order of day r serves day r + L).
        review_period: P >= 1: orders on days 0, P, 2P, ...; T a multiple of P.
        holding_cost, penalty_cost: h, p per unit left / backordered at the end of a day.
        horizon: T days; warmup: the first W days (a multiple of P) are not scored.
        max_order: at most this much per order (floored to an integer; None: no cap).

    The state is the inventory position x before ordering (integer, starting at 0: the empty
    system). With y = x + q the position after ordering on review day r, the scored days
    k in [r + L, r + L + P - 1] (and < T) cost h (y - D[r..k])^+ + p (D[r..k] - y)^+ in
    expectation; V_r(x) = min_{x <= y <= x + cap} C_r(y) + E V_{r+P}(y - D[r..r+P-1]). The
    scored days k < L are added as constants, so ``expected_total`` equals the expected sum of
    the scored days' costs that :func:`~deepstock_fast.envs.simulate` reports. Positions
    above the largest possible demand of the whole horizon are never better (more stock only
    holds more), so the grid runs from minus to plus that demand. Ties go to the smallest
    order: an order that serves only unscored days is 0 when a later order can still reach the
    level the scored days need (setting 1's day-0 order).
    """
    lead_time, review_period, horizon, warmup = _check_timing(lead_time, review_period,
                                                              horizon, warmup)
    _check_costs(holding_cost, penalty_cost)
    pmfs = [torch.as_tensor(q, dtype=F64).reshape(-1) for q in day_pmfs]
    if len(pmfs) != horizon:
        raise ValueError(f"day_pmfs must hold one pmf per day of the horizon ({horizon}), got "
                         f"{len(pmfs)}")
    for t, q in enumerate(pmfs):
        if q.numel() == 0 or not bool(torch.isfinite(q).all()) or bool((q < 0).any()) \
                or abs(float(q.sum()) - 1) > 1e-6:
            raise ValueError(f"day_pmfs[{t}] must be a non-negative pmf summing to 1")
    pmfs = [q / q.sum() for q in pmfs]  # float32 input: exact sums
    if max_order is None or max_order == math.inf:
        cap = math.inf
    elif isinstance(max_order, bool) or not (isinstance(max_order, (int, float))
                                             and max_order >= 0):
        raise ValueError(f"max_order must be a number >= 0 or None, got {max_order!r}")
    else:
        cap = math.floor(max_order)
    h, p = float(holding_cost), float(penalty_cost)
    top = sum(q.numel() - 1 for q in pmfs)  # the largest demand of the horizon
    positions = torch.arange(-top, top + 1, dtype=F64)
    n = positions.numel()
    review_days = list(range(0, horizon, review_period))
    scored = lambda k: warmup <= k < horizon  # noqa: E731

    # days before the first arrival: net inventory -D[0..k], whatever is ordered
    constant, cumulative = 0.0, torch.ones(1, dtype=F64)
    for k in range(min(lead_time, horizon)):
        cumulative = _convolve(cumulative, pmfs[k])
        if scored(k):
            constant += float(_expected_day_cost(torch.zeros(1, dtype=F64), cumulative, h, p))

    width = n if cap == math.inf else int(min(cap, n - 1)) + 1
    window = torch.arange(n).unsqueeze(1) + torch.arange(width)  # y index for x index, q
    valid = window < n
    window = window.clamp(max=n - 1)
    nxt = torch.zeros(n, dtype=F64)  # V after the last epoch
    values, levels = [], []
    for r in reversed(review_days):
        cost = torch.zeros(n, dtype=F64)
        cumulative = torch.ones(1, dtype=F64)
        for k in range(r, min(r + lead_time + review_period, horizon)):
            cumulative = _convolve(cumulative, pmfs[k])
            if k >= r + lead_time and scored(k):
                cost += _expected_day_cost(positions, cumulative, h, p)
        epoch = torch.ones(1, dtype=F64)  # demand of the P days until the next review
        for k in range(r, r + review_period):
            epoch = _convolve(epoch, pmfs[k])
        # E V_{r+P}(y - D): positions below the grid are unreachable from the empty state
        # (they would need more demand than the horizon has); clamping keeps the table finite
        index = (torch.arange(n).unsqueeze(1) - torch.arange(epoch.numel())).clamp(min=0)
        total = cost + (nxt[index] * epoch).sum(1)
        if r + lead_time >= horizon:  # the order arrives after the horizon: order nothing
            best, arg = total, torch.zeros(n, dtype=torch.long)
        else:
            candidates = torch.where(valid, total[window], torch.inf)
            best, arg = candidates.min(1)  # ties: the smallest order
        values.append(best)
        levels.append(positions + arg.to(F64))
        nxt = best
    values.reverse()
    levels.reverse()
    value = torch.stack(values)
    expected_total = float(value[0, top]) + constant  # position 0 sits at index top
    return BacklogDPSolution(expected_total / (horizon - warmup), expected_total,
                             torch.stack(levels), value, positions, review_days, lead_time,
                             review_period, horizon, warmup, float(cap))


def _horizon_days(instance: InstanceConfig) -> range:
    """Indices into the demand process's days of the horizon's days (after its history)."""
    return range(instance.history_days, instance.history_days + instance.horizon)


def setting1_pmfs(instance: InstanceConfig) -> Tensor:
    """[T, m] pmfs of the horizon's days of a ``paper:setting=1`` instance: uniform on
    low_t .. low_t + 4, low_t the demand process's ``lows`` of that day."""
    if instance.demand.get("kind") != "paper_independent":
        raise ValueError(f"instance must have paper_independent demand (paper:setting=1), "
                         f"got {instance.demand.get('kind')!r}")
    lows = instance.demand_process("cpu").lows[list(_horizon_days(instance))].long()
    pmfs = torch.zeros(instance.horizon, int(lows.max()) + 5, dtype=F64)
    for t, low in enumerate(lows.tolist()):
        pmfs[t, low:low + 5] = 0.2
    return pmfs


def _check_backlog(instance: InstanceConfig) -> None:
    if not isinstance(instance, InstanceConfig):
        raise ValueError(f"instance must be an InstanceConfig, got {type(instance).__name__}")
    if instance.lost_sales or instance.initial_state != "empty" or any(
            isinstance(getattr(instance, n), list)
            for n in ("lead_time", "holding_cost", "penalty_cost", "order_cost")) \
            or instance.order_cost:
        raise ValueError("instance must be a backlog system with shared lead time and costs, no "
                         "ordering cost and an empty initial state (the paper's settings)")


def setting1_dp(instance: InstanceConfig) -> BacklogDPSolution:
    """:func:`finite_horizon_backlog_dp` of a ``paper:setting=1`` instance (its lows, lead
    time, review period, costs, horizon, warm-up and order cap)."""
    _check_backlog(instance)
    return finite_horizon_backlog_dp(setting1_pmfs(instance), instance.lead_time,
                                     instance.review_period, instance.holding_cost,
                                     instance.penalty_cost, instance.horizon, instance.warmup,
                                     instance.max_order)


# ---- setting 4 ------------------------------------------------------------------------------
Z_PAPER = 1.2816  # the paper's benchmark: mean + 1.2816 sigma


@dataclass
class Newsvendor:
    level: Tensor        # [S] critical-fractile level mean + z sigma
    cost: Tensor         # [S] its expected cost per day, sigma (h + p) phi(z)
    z: float             # the standard Normal quantile of p / (p + h)
    paper_level: Tensor  # [S] the paper's mean + 1.2816 sigma


def newsvendor_level(mean, sigma, holding: float, penalty: float) -> Newsvendor:
    """The newsvendor level of one day's Normal(mean, sigma^2) demand and its cost per day.

    With P = 1 and L = 0 (setting 4) the order of day t arrives before day t's demand and
    nothing else arrives until day t + 1's order, so each day is a newsvendor problem: order up
    to y = mean + z sigma, z = Phi^-1(p / (p + h)) (0.9 at h = 0.1, p = 0.9: z = 1.28155),
    expected cost E[h (y - D)^+ + p (D - y)^+] = sigma (h + p) phi(z); the order returns the
    position to y every day (the cap of 300 binds only for demand above 300, 10 sigma away).
    The paper's mean + 1.2816 sigma differs from y by 4.8e-5 sigma (1e-3 units at sigma 20),
    a cost difference of order 1e-9. The environment clamps negative Normal draws to 0 (no
    rounding): at mean 100, sigma <= 20, P(D < 0) = Phi(-5) = 2.9e-7, which changes the cost
    by under sigma * phi(5) (h + p) < 3e-5 (ignored here).

    Args: mean, sigma: floats or [S]; holding, penalty: h, p >= 0.
    """
    _check_costs(holding, penalty)
    mean, sigma = (torch.as_tensor(v, dtype=F64).reshape(-1) for v in (mean, sigma))
    if not bool(torch.isfinite(sigma).all()) or bool((sigma <= 0).any()):
        raise ValueError("sigma must be finite and > 0")
    if not bool(torch.isfinite(mean).all()):
        raise ValueError("mean must be finite")
    unit = torch.distributions.Normal(torch.tensor(0.0, dtype=F64), torch.tensor(1.0, dtype=F64))
    z = float(unit.icdf(torch.tensor(penalty / (penalty + holding), dtype=F64)))
    density = math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    return Newsvendor(mean + z * sigma, sigma * (holding + penalty) * density, z,
                      mean + Z_PAPER * sigma)


def normal_pmf(mean: float, sigma: float) -> Tensor:
    """[m] the pmf of Normal(mean, sigma^2) rounded to the nearest integer and clamped at 0,
    support 0 .. mean + 8 sigma (the tail beyond put on the last value): setting 4's demand
    for :func:`finite_horizon_backlog_dp`."""
    if not (math.isfinite(mean) and mean >= 0 and math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"need a finite mean >= 0 and sigma > 0, got mean={mean}, "
                         f"sigma={sigma}")
    top = int(math.ceil(mean + 8 * sigma))
    edges = torch.arange(top + 1, dtype=F64) + 0.5
    unit = torch.distributions.Normal(torch.tensor(mean, dtype=F64),
                                      torch.tensor(sigma, dtype=F64))
    cdf = unit.cdf(edges)
    pmf = torch.diff(cdf, prepend=torch.zeros(1, dtype=F64))
    pmf[-1] += 1 - float(cdf[-1])
    return pmf


# ---- settings 2 and 3: AR(1) ----------------------------------------------------------------
def ar1_params(instance: InstanceConfig) -> tuple[Tensor, Tensor, Tensor]:
    """(phi, base, sigma) [S] of an AR(1) instance (``paper:setting=2|3``): the oracle's
    knowledge of each trajectory."""
    if instance.demand.get("kind") not in ("ar1", "paper_ar1"):
        raise ValueError(f"instance must have AR(1) demand, got {instance.demand.get('kind')!r}")
    process = instance.demand_process("cpu")
    return process.phi.to(F64), process.base.to(F64), process.sigma.to(F64)


def episode_yesterday(instance: InstanceConfig, seed: int) -> tuple[Tensor, Tensor]:
    """(demand [S, T], yesterday [S]) of the test episode of ``seed``
    (:func:`deepstock_fast.evaluation.held_out_env`): the horizon's demand and the demand of
    the day before day 0, the last of the ``history_days`` days the environment draws before
    the horizon (what its ``yesterday`` observation shows at day 0, read back from it: exact up
    to the environment's float32 rounding)."""
    from .evaluation import held_out_env
    env = held_out_env(instance, seed)
    if "yesterday" not in env.obs_names:
        raise ValueError("instance must observe 'yesterday' (extra_observations)")
    episode = env.sample_episode()
    column = env.obs_names.index("yesterday") - 1 - env.max_lead
    yesterday = episode.exogenous_obs[0, :, column].to(F64) * episode.scale.to(F64)
    return episode.demand.to(F64), yesterday


def _per_sku(value, skus: int, name: str) -> Tensor:
    t = torch.as_tensor(value, dtype=F64).reshape(-1)
    if t.numel() not in (1, skus) or not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be finite, one value or one per SKU ({skus}), got "
                         f"{t.numel()} values")
    return t.expand(skus)


def _covered_days(r: int, lead: int, period: int, horizon: int, warmup: int) -> list[int]:
    """The days the order of review day r serves that count: scored days of its window inside
    the horizon, or all its days inside the horizon when none is scored (warm-up orders)."""
    days = [k for k in range(r + lead, r + lead + period) if k < horizon]
    return [k for k in days if k >= warmup] or days


def ar1_myopic_levels(demand: Tensor, yesterday, phi, base, sigma, instance: InstanceConfig, *,
                      samples: int = 4096, seed: int = 0) -> Tensor:
    """Order-up-to levels [S, E] of the conditional-fractile (myopic) oracle for AR(1) demand.

    On review day r = eP the oracle knows phi, base, sigma [S] and d_{r-1} (``yesterday`` [S]
    for r = 0, else ``demand[:, r - 1]``; ``demand`` [S, T] the horizon's demand) and orders up
    to the y minimising sum_k E[h (y - S_k)^+ + p (S_k - y)^+ | d_{r-1}] over the scored days
    k the order serves (r + L .. r + L + P - 1, inside the horizon; all of them when none is
    scored), S_k = d_r + ... + d_k: the p / (p + h) quantile of the equal mixture of the S_k,
    estimated from ``samples`` paths of the recursion per SKU, the same normal draws for every
    SKU and epoch (common random numbers: ``seed``). Uses no demand of day r or later.
    """
    _check_backlog(instance)
    if not isinstance(demand, Tensor) or demand.dim() != 2 or demand.shape[1] != instance.horizon:
        raise ValueError(f"demand must be a tensor [S, T = {instance.horizon}], got "
                         f"{getattr(demand, 'shape', type(demand))}")
    samples = check_count(samples, "samples", 2)
    S = demand.shape[0]
    d_prev = _per_sku(yesterday, S, "yesterday")
    phi, base, sigma = (_per_sku(v, S, n) for v, n in ((phi, "phi"), (base, "base"),
                                                       (sigma, "sigma")))
    if bool((phi.abs() >= 1).any()) or bool((sigma < 0).any()):
        raise ValueError("need |phi| < 1 and sigma >= 0")
    L, P, T, W = instance.lead_time, instance.review_period, instance.horizon, instance.warmup
    h, p = instance.holding_cost, instance.penalty_cost
    demand = demand.to(F64).cpu()
    g = torch.Generator().manual_seed(seed)
    eps = torch.randn(samples, L + P, generator=g, dtype=F64)  # [M, L + P], shared
    levels = torch.zeros(S, T // P, dtype=F64)
    for e, r in enumerate(range(0, T, P)):
        days = _covered_days(r, L, P, T, W)
        if not days:  # the order arrives after the horizon
            continue
        last = d_prev if r == 0 else demand[:, r - 1]
        d = last.unsqueeze(1).expand(S, samples)
        total = torch.zeros(S, samples, dtype=F64)
        pooled = []
        for k in range(r, days[-1] + 1):
            d = (phi.unsqueeze(1) * d + ((1 - phi) * base).unsqueeze(1)
                 + sigma.unsqueeze(1) * eps[:, k - r]).clamp(min=0)
            total = total + d
            if k in days:
                pooled.append(total)
        levels[:, e] = torch.quantile(torch.cat(pooled, 1), p / (p + h), dim=1)
    return levels


def ar1_oracle_levels(instance: InstanceConfig, seed: int, *, samples: int = 4096
                      ) -> tuple[Tensor, Tensor]:
    """(levels [S, E], demand [S, T]) of :func:`ar1_myopic_levels` on the test episode of
    ``seed`` of ``instance`` (e.g. ``compare.held_out_instance(train_instance)``): its SKUs'
    parameters, its day-0 ``yesterday`` and its demand, ready for :func:`cost_of_levels`."""
    demand, yesterday = episode_yesterday(instance, seed)
    levels = ar1_myopic_levels(demand, yesterday, *ar1_params(instance), instance,
                               samples=samples)
    return levels, demand


@dataclass
class AR1Gap:
    """Costs per scored day of one AR(1) trajectory's policies on the same simulated paths."""

    myopic: float      # the conditional-fractile oracle, simulated
    dp_policy: float   # the discretised DP's policy, simulated
    dp_value: float    # the discretised DP's expected cost (discretisation error included)
    standard_error: float  # of the paired difference myopic - dp_policy
    gap_pct: float     # 100 (myopic - dp_policy) / dp_policy


def ar1_dp_gap(phi: float, base: float, sigma: float, instance: InstanceConfig, *,
               paths: int = 2000, seed: int = 0, step: float = 1.0,
               nodes: int = 8, samples: int = 4096) -> AR1Gap:
    """The gap of :func:`ar1_myopic_levels` to a discretised DP on (inventory position x,
    yesterday's demand d), for one trajectory's parameters, both policies simulated on the
    same ``paths`` demand paths (drawn as the environment draws them: ``history_days`` days
    from d = base before the horizon, the last one the oracle's day-0 ``yesterday``).

    The DP: with y the position after ordering on review day r and d_r .. d_{r+P-1} the epoch's
    demand, the next state is (y - D[r..r+P-1], d_{r+P-1}); the days the order serves cost
    h (y - D[r..k])^+ + p (D[r..k] - y)^+, which given the next state is a function of it (for
    L = 1, P = 2: day r + 1 is the next state's x, day r + 2 needs one more day's demand,
    averaged by Gauss-Hermite quadrature). x and d live on grids of ``step`` units, values
    between them by linear interpolation, the AR(1) innovations by ``nodes``-point
    Gauss-Hermite quadrature. Lead time 1 and review period 2 (the paper's L, P) only.

    Measured on setting 2's timing (1500 paths, 2048 samples; CPU): gaps of -0.02% (phi 0.4,
    base 9, sigma 3), +0.13% (0.9, 10, 2), -0.24% (0.3, 5, 8), +0.49% +- 0.15% (0.9, 7, 8),
    the last +0.34% +- 0.09% with 4000 paths and 16384 samples: the myopic oracle is within
    about 0.5% of optimal; negative gaps are the DP's own discretisation error.
    """
    _check_backlog(instance)
    L, P, T, W = instance.lead_time, instance.review_period, instance.horizon, instance.warmup
    if (L, P) != (1, 2):
        raise ValueError(f"ar1_dp_gap covers lead_time 1 and review_period 2, got {L}, {P}")
    if not (abs(phi) < 1 and sigma > 0 and math.isfinite(base)):
        raise ValueError("need |phi| < 1, sigma > 0 and a finite base")
    h, p = instance.holding_cost, instance.penalty_cost
    cap = instance.max_order if instance.max_order is not None else math.inf
    c = (1 - phi) * base
    stationary = sigma / math.sqrt(1 - phi * phi)
    dgrid = torch.arange(0, base + 7 * stationary + step, step, dtype=F64)
    xtop = P * float(dgrid[-1]) + step
    xgrid = torch.arange(-xtop, 2 * xtop + step, step, dtype=F64)
    nd, nx = dgrid.numel(), xgrid.numel()
    z, w = _hermite(nodes)  # eps = sigma z, weights sum to 1

    def interp(table: Tensor, x: Tensor, d: Tensor) -> Tensor:
        """Bilinear table [nx, nd] at x, d (same shape); clamped at the grids' ends."""
        fx = ((x - xgrid[0]) / step).clamp(0, nx - 1 - 1e-9)
        fd = ((d - dgrid[0]) / step).clamp(0, nd - 1 - 1e-9)
        i, j = fx.floor().long(), fd.floor().long()
        a, b = fx - i, fd - j
        return ((1 - a) * (1 - b) * table[i, j] + a * (1 - b) * table[i + 1, j]
                + (1 - a) * b * table[i, j + 1] + a * b * table[i + 1, j + 1])

    f = lambda v: torch.where(v >= 0, h * v, -p * v)  # noqa: E731
    # day-cost of the day after the next state: E f(x - d') with d' = max(0, phi d + c + eps)
    nxt_d = (phi * dgrid.unsqueeze(1) + c + sigma * z).clamp(min=0)  # [nd, Q]
    ahead = (f(xgrid.view(-1, 1, 1) - nxt_d) * w).sum(2)  # [nx, nd]
    value = torch.zeros(nx, nd, dtype=F64)
    tables = []  # G_r(y, d) per epoch, y on xgrid
    # demand of the epoch's two days given yesterday d: [nd, Q, Q]
    d1 = (phi * dgrid.view(-1, 1) + c + sigma * z).clamp(min=0)  # [nd, Q]
    d2 = (phi * d1.unsqueeze(2) + c + sigma * z).clamp(min=0)    # [nd, Q, Q]
    weight = w.view(1, -1, 1) * w.view(1, 1, -1)
    for r in reversed(range(0, T, P)):
        days = _covered_days(r, L, P, T, W)
        # W(x', d') = cost of the served days + V_{r+P}: day r+1 is x', day r+2 is ahead
        after = value.clone()
        if r + 1 in days and r + 1 >= W:
            after += f(xgrid).unsqueeze(1)
        if r + 2 in days and r + 2 >= W:
            after += ahead
        x_next = xgrid.view(-1, 1, 1, 1) - (d1.unsqueeze(2) + d2).unsqueeze(0)  # [nx,nd,Q,Q]
        G = (interp(after, x_next, d2.unsqueeze(0).expand_as(x_next)) * weight).sum((2, 3))
        tables.append(G)  # [ny = nx, nd]
        # V_r(x, d) = min over y in [x, x + cap] (on the grid) of G(y, d)
        width = nx if cap == math.inf else min(nx, int(cap / step) + 1)
        value = G.clone()
        for q in range(1, width):  # a running minimum over the orders q
            value[:-q] = torch.minimum(value[:-q], G[q:])
    tables.reverse()

    g = torch.Generator().manual_seed(seed)
    path = AR1(phi, base, sigma).sample(instance.history_days + T, generator=g,
                                        paths=paths)[0]
    H = instance.history_days
    yesterday, demand = path[:, H - 1], path[:, H:]
    dp_value = float(interp(value, torch.zeros_like(yesterday), yesterday).mean()) / (T - W)

    def dp_policy(state: SimState) -> Tensor:
        r = state.day
        d = yesterday if r == 0 else demand[:, r - 1]
        x = state.inventory_position
        G = tables[r // P]  # [ny, nd]
        fd = ((d - dgrid[0]) / step).clamp(0, nd - 1 - 1e-9)
        j, b = fd.floor().long(), fd - fd.floor()
        row = (1 - b).unsqueeze(1) * G[:, j].T + b.unsqueeze(1) * G[:, j + 1].T  # [B, ny]
        allowed = (xgrid >= x.unsqueeze(1)) & (xgrid <= x.unsqueeze(1) + cap)
        best = torch.where(allowed, row, torch.inf).min(1)
        stay = interp(G, x, d)  # ordering nothing
        y = torch.where(stay <= best.values, x, xgrid[best.indices])
        return (y - x).clamp(min=0)

    levels = ar1_myopic_levels(demand, yesterday, phi, base, sigma, instance,
                               samples=samples, seed=seed + 1)
    myopic = cost_of_levels(levels, demand, instance)
    dp = _simulate_instance(dp_policy, demand, instance)
    diff = myopic - dp
    return AR1Gap(float(myopic.mean()), float(dp.mean()), dp_value,
                  float(diff.std() / paths ** 0.5), 100 * float(diff.mean() / dp.mean()))


def _hermite(nodes: int) -> tuple[Tensor, Tensor]:
    """Nodes z and weights w (summing to 1) of Gauss-Hermite quadrature for E g(Z), Z ~ N(0,1)."""
    import numpy as np
    x, wts = np.polynomial.hermite_e.hermegauss(nodes)
    return torch.tensor(x, dtype=F64), torch.tensor(wts / wts.sum(), dtype=F64)


# ---- costing -----------------------------------------------------------
def _simulate_instance(policy, demand: Tensor, instance: InstanceConfig) -> Tensor:
    return simulate(policy, demand, instance.lead_time, review_period=instance.review_period,
                    warmup=instance.warmup, holding_cost=instance.holding_cost,
                    penalty_cost=instance.penalty_cost, order_cost=instance.order_cost,
                    lost_sales=False, max_order=(math.inf if instance.max_order is None
                                                 else instance.max_order)).average_cost


def cost_of_levels(levels, demand: Tensor, instance: InstanceConfig) -> Tensor:
    """Average cost per scored day [S] of a policy on demand [S, T], from the empty state with
    the instance's lead time, review period, costs, warm-up and order cap (the environment's
    accounting, :func:`~deepstock_fast.envs.simulate`).

    ``levels``: order-up-to levels [S, E] (one per SKU and review epoch: order
    clamp(level - position, 0, max_order)), a :class:`BacklogDPSolution` (its table), or a
    :class:`~deepstock_fast.baselines.ClassicalPolicy` with params [1, n] or [S, n].
    """
    _check_backlog(instance)
    if not isinstance(demand, Tensor) or demand.dim() != 2 or demand.shape[1] != instance.horizon:
        raise ValueError(f"demand must be a tensor [S, T = {instance.horizon}], got "
                         f"{getattr(demand, 'shape', type(demand))}")
    demand = demand.to(F64)
    S, P = demand.shape[0], instance.review_period
    if isinstance(levels, BacklogDPSolution):
        if (levels.lead_time, levels.review_period, levels.horizon) != (
                instance.lead_time, P, instance.horizon):
            raise ValueError("levels: the DP solution is of another lead time, review period "
                             "or horizon than instance")
        return _simulate_instance(levels.policy(), demand, instance)
    if isinstance(levels, baselines.ClassicalPolicy):
        params = levels.params.to(F64)
        if params.shape[0] not in (1, S):
            raise ValueError(f"levels: a classical policy needs params [1, n] or [S = {S}, n]")
        m = baselines.evaluate(baselines.ClassicalPolicy(levels.kind, params.expand(S, -1)),
                               demand, instance.lead_time, holding_cost=instance.holding_cost,
                               penalty_cost=instance.penalty_cost, lost_sales=False,
                               review_period=P, warmup=instance.warmup,
                               max_order=instance.max_order)
        return m.average_cost
    levels = torch.as_tensor(levels, dtype=F64)
    if levels.shape != (S, instance.horizon // P) or not bool(torch.isfinite(levels).all()):
        raise ValueError(f"levels must be finite, shape [S, E] = [{S}, {instance.horizon // P}],"
                         f" got {tuple(levels.shape)}")

    def act(state: SimState) -> Tensor:
        return (levels[:, state.day // P] - state.inventory_position).clamp(min=0)
    return _simulate_instance(act, demand, instance)


# ---- the references of a paper setting's test episode -----------------------------------------
def reference_rows(test_instance: InstanceConfig, seed: int) -> list[dict]:
    """The optimal or oracle reference of a paper setting's test instance
    (``compare.held_out_instance``), costed on the test episode of ``seed`` (the one
    ``evaluation.evaluate(..., seed=seed)`` runs on), as rows {"policy", "cost", "cost_se",
    "per_sku" [S] or None for an expected cost, "note"} like ``compare.reference_rows``; the
    last row is the policy on the test demand that gaps are paired with. Setting 1: the
    finite-horizon DP; setting 4: the critical-fractile newsvendor; settings 2 and 3: the
    AR(1) oracle that knows each trajectory's parameters."""
    from .compare import held_out_demand
    t, kind = test_instance, test_instance.demand.get("kind")

    def row(policy: str, per_sku: Tensor, note: str) -> dict:
        return {"policy": policy, "cost": float(per_sku.mean()),
                "cost_se": float(per_sku.std() / per_sku.numel() ** 0.5), "per_sku": per_sku,
                "note": note}

    if kind == "paper_independent":
        sol = setting1_dp(t)
        simulated = cost_of_levels(sol, held_out_demand(t, seed).to(F64), t)
        return [{"policy": "DP optimum", "cost": sol.expected_cost, "cost_se": 0.0,
                 "per_sku": None, "note": "exact finite-horizon DP on the inventory position "
                                          "(expected cost over the scored days)"},
                row("DP policy, test episode", simulated, "the optimal policy on the same test "
                                                          "demand")]
    if kind == "paper_iid_normal":
        process = t.demand_process("cpu")
        nv = newsvendor_level(process.mean.to(F64), process.std.to(F64), t.holding_cost,
                              t.penalty_cost)
        levels = nv.level.view(-1, 1).expand(-1, t.horizon // t.review_period)
        simulated = cost_of_levels(levels, held_out_demand(t, seed).to(F64), t)
        gap = float((nv.level - nv.paper_level).abs().max())
        return [{"policy": "newsvendor optimum", "cost": float(nv.cost.mean()),
                 "cost_se": float(nv.cost.std() / nv.cost.numel() ** 0.5), "per_sku": None,
                 "note": f"closed form sigma (h + p) phi(z), z = {nv.z:.4f}, averaged over the "
                         f"test trajectories' sigma"},
                row("newsvendor policy, test episode", simulated,
                    f"mean + z sigma per trajectory; the paper's benchmark mean + 1.2816 sigma "
                    f"differs from it by at most {gap:.1e}")]
    if kind in ("ar1", "paper_ar1"):
        levels, demand = ar1_oracle_levels(t, seed)
        return [row("AR(1) oracle, test episode", cost_of_levels(levels, demand, t),
                    "knows each trajectory's phi, base and sigma and sees yesterday's demand "
                    "(conditional-fractile base-stock; within 0.5% of a discretised DP)")]
    raise ValueError(f"test_instance: no oracle for demand kind {kind!r} (paper settings 1-4)")
