// The inventory transition (docs/DESIGN.md, "Timing"), written once for the CPU and CUDA
// launchers. Per day: (1) on a review day the order is placed; (2) arrivals due today join
// on-hand (an order with lead time 0 arrives today); (3) demand occurs: lost sales sell
// min(on-hand, demand), backlog lets on-hand go negative; (4) end-of-day costs: h per unit of
// positive end inventory, p per unit short (lost today, or backordered at the end of the day),
// c per unit ordered.
//
// Pipeline convention: pipeline[b, k] is the quantity that arrives k days from the start of the
// epoch (k = 0: today, before demand). An order placed today with lead time L arrives on day L.
// Inventory position = on-hand + sum of the pipeline.
//
// Subgradients at the kinks: a day whose inventory ends exactly at zero counts as stocked
// (the right derivative, the side of more stock): a unit more on-hand adds h and, under lost
// sales, carries over to tomorrow; a unit less adds p. Stockout days are days with e < 0.
#pragma once

#include "deepstock/common.h"

namespace deepstock {

// Totals over some days of one environment. The order matches the `stats` output columns.
template <typename T>
struct DayTotals {
  T sold = T(0);            // units of demand filled from stock on the day it occurred
  T short_units = T(0);     // units lost (lost sales) or backordered at the end of the day (backlog)
  T stockout_days = T(0);   // days ending with unmet demand
  T holding_units = T(0);   // sum over days of max(end-of-day inventory, 0)

  DEEPSTOCK_HD void add(const DayTotals& o) {
    sold += o.sold;
    short_units += o.short_units;
    stockout_days += o.stockout_days;
    holding_units += o.holding_units;
  }
};

// Steps (3)-(4) of one day. x: on-hand after today's arrivals (negative = backorders), updated
// to the end-of-day on-hand. Returns whether the day ended stocked (x - demand >= 0), which is
// all the backward pass needs to know about the day.
template <typename T>
DEEPSTOCK_HD bool settle_day(T& x, T demand, bool lost_sales, DayTotals<T>& totals) {
  const T e = x - demand;
  const bool stocked = e >= T(0);
  const T on_shelf = x > T(0) ? x : T(0);
  totals.sold += on_shelf < demand ? on_shelf : demand;
  totals.short_units += stocked ? T(0) : -e;
  totals.stockout_days += stocked ? T(0) : T(1);
  totals.holding_units += stocked ? e : T(0);
  x = (lost_sales & !stocked) ? T(0) : e;  // & (no short circuit): no branch
  return stocked;
}

// d(loss)/d(on-hand after arrivals) for one day, given d(loss)/d(end-of-day on-hand) = grad_end,
// d(loss)/d(holding units) = grad_hold and d(loss)/d(short units) = grad_short.
template <typename T>
DEEPSTOCK_HD T settle_day_backward(bool stocked, bool lost_sales, T grad_end, T grad_hold,
                                   T grad_short) {
  return stocked ? grad_hold + grad_end : (lost_sales ? -grad_short : grad_end - grad_short);
}

// Per-unit costs h, p, c of each environment: [B] each, or one element broadcast (stride 0).
template <typename T>
struct UnitCosts {
  const T* holding;
  const T* penalty;
  const T* ordering;
  int64_t holding_stride, penalty_stride, ordering_stride;

  DEEPSTOCK_HD T h(int64_t b) const { return holding[b * holding_stride]; }
  DEEPSTOCK_HD T p(int64_t b) const { return penalty[b * penalty_stride]; }
  DEEPSTOCK_HD T c(int64_t b) const { return ordering[b * ordering_stride]; }
  DEEPSTOCK_HD bool valid(int64_t b) const {
    return nonneg_finite(h(b)) && nonneg_finite(p(b)) && nonneg_finite(c(b));
  }
  // Input-error bits (common.h) of environment b's costs.
  DEEPSTOCK_HD int errors(int64_t b) const {
    return (nonneg_finite(h(b)) ? 0 : kBadHoldingCost) | (nonneg_finite(p(b)) ? 0 : kBadPenaltyCost) |
           (nonneg_finite(c(b)) ? 0 : kBadOrderCost);
  }
};

// The cost of some days of one environment (step 4): holding, shortage penalty, ordering.
template <typename T>
struct CostComponents {
  T holding, penalty, ordering;
  DEEPSTOCK_HD T total() const { return holding + penalty + ordering; }
};

template <typename T>
DEEPSTOCK_HD CostComponents<T> cost_of(const UnitCosts<T>& costs, int64_t b,
                                       const DayTotals<T>& totals, T ordered) {
  return {costs.h(b) * totals.holding_units, costs.p(b) * totals.short_units,
          costs.c(b) * ordered};
}

// The per-environment inputs shared by the forward and backward of inventory_step.
// kSlots, kDays: max_lead and days when fixed at compile time.
template <typename T, typename I, int kSlots = kRuntimeSize, int kDays = kRuntimeSize>
struct StepInputs {
  const T* on_hand;          // [B]
  const T* pipeline;         // [B, max_lead]
  const I* lead_time;        // [B]
  const T* order;            // [B]
  const T* demand;           // [B, days] with strides below
  UnitCosts<T> costs;
  int64_t demand_stride_b, demand_stride_d;
  int64_t max_lead, days;
  bool lost_sales;

  DEEPSTOCK_HD int64_t slots() const { return kSlots == kRuntimeSize ? max_lead : kSlots; }
  DEEPSTOCK_HD int64_t num_days() const { return kDays == kRuntimeSize ? days : kDays; }
  DEEPSTOCK_HD T h(int64_t b) const { return costs.h(b); }
  DEEPSTOCK_HD T p(int64_t b) const { return costs.p(b); }
  DEEPSTOCK_HD T c(int64_t b) const { return costs.c(b); }
  DEEPSTOCK_HD T demand_at(int64_t b, int64_t d) const {
    return demand[b * demand_stride_b + d * demand_stride_d];
  }
  DEEPSTOCK_HD int64_t lead(int64_t b) const { return static_cast<int64_t>(lead_time[b]); }

  // The common layout: one h, p and c for all environments, demand rows contiguous. The CPU
  // launcher versions its loops on it: with these strides as constants (make_plain on a private
  // copy) they load contiguous vectors and broadcast the costs instead of gathering.
  DEEPSTOCK_HD bool plain() const {
    return costs.holding_stride == 0 && costs.penalty_stride == 0 &&
           costs.ordering_stride == 0 && demand_stride_b == num_days() && demand_stride_d == 1;
  }
  DEEPSTOCK_HD void make_plain() {
    costs.holding_stride = costs.penalty_stride = costs.ordering_stride = 0;
    demand_stride_b = num_days();
    demand_stride_d = 1;
  }
  // The lead time as a 32-bit int, for code on checked inputs (0 <= lead <= max_lead: the forward
  // after its screen, the backward of a checked forward): as wide as a float, so vectorized
  // compares need no 64-bit lanes.
  DEEPSTOCK_HD int lead32(int64_t b) const { return static_cast<int>(lead_time[b]); }

  // Whether environment b's inputs are all valid, by a cheap screen without branches: the
  // minimum of the inputs that must be >= 0, and the sum of all inputs, which is NaN when any
  // input is NaN or infinite.
  DEEPSTOCK_HD bool valid(int64_t b) const {
    const T* pipe = pipeline + b * slots();
    const T x = on_hand[b];
    T low = order[b], sum = order[b] + x;
    const auto take = [&](T v) {
      low = v < low ? v : low;
      sum += v;
    };
    take(h(b));
    take(p(b));
    take(c(b));
    for (int64_t k = 0; k < slots(); ++k) take(pipe[k]);
    for (int64_t d = 0; d < num_days(); ++d) take(demand_at(b, d));
    if (lost_sales) low = x < low ? x : low;
    const int64_t L = lead(b);
    return low >= T(0) && finite(sum) && L >= 0 && L <= slots();
  }

  // Input-error bits (common.h) of environment b. Only a failed screen pays for the itemised
  // checks.
  DEEPSTOCK_HD int validate(int64_t b) const {
    if (valid(b)) return 0;
    const T* pipe = pipeline + b * slots();
    const T x = on_hand[b];
    const int64_t L = lead(b);
    int err = 0;
    if (!nonneg_finite(order[b])) err |= kBadOrder;
    if (L < 0 || L > slots()) err |= kBadLeadTime;
    err |= costs.errors(b);
    if (!finite(x) || (lost_sales && x < T(0))) err |= kBadOnHand;
    for (int64_t k = 0; k < slots(); ++k)
      if (!nonneg_finite(pipe[k])) err |= kBadPipeline;
    for (int64_t d = 0; d < num_days(); ++d)
      if (!nonneg_finite(demand_at(b, d))) err |= kBadDemand;
    return err;
  }

  // Runs the epoch's days for environment b from its on-hand, calling on_day(d, stocked) after
  // each day. Leaves the end-of-epoch on-hand in x and returns the totals.
  template <typename OnDay>
  DEEPSTOCK_HD DayTotals<T> replay(int64_t b, int64_t end, T& x, OnDay&& on_day) const {
    const T* pipe = pipeline + b * slots();
    const int L = lead32(b);
    const T q = order[b];
    DayTotals<T> totals;
    x = on_hand[b];
    for (int64_t d = 0; d < end; ++d) {
      // Step (2): pipeline slot d and, on day `lead`, today's order arrive.
      x += (d < slots() ? pipe[d] : T(0)) + (d == L ? q : T(0));
      on_day(d, settle_day(x, demand_at(b, d), lost_sales, totals));
    }
    return totals;
  }
};

// Forward of inventory_step for one environment.
template <typename T, typename I, int kSlots = kRuntimeSize, int kDays = kRuntimeSize>
struct StepView {
  StepInputs<T, I, kSlots, kDays> in;
  T* next_on_hand;    // [B]
  T* next_pipeline;   // [B, max_lead]
  T* cost;            // [B, 3]: holding, shortage penalty, ordering
  T* stats;           // [B, 4]: DayTotals order

  DEEPSTOCK_HD int operator()(int64_t b) const {
    const int err = in.validate(b);
    if (err) {  // poison the outputs: with value checks off (CUDA) a bad input reads as NaN
      const T nan = quiet_nan<T>();
      next_on_hand[b] = nan;
      for (int64_t k = 0; k < in.slots(); ++k) next_pipeline[b * in.slots() + k] = nan;
      for (int j = 0; j < 3; ++j) cost[b * 3 + j] = nan;
      for (int j = 0; j < 4; ++j) stats[b * 4 + j] = nan;
      return err;
    }
    compute(b);
    return 0;
  }

  // The CPU launcher's vectorized path (ops_cpu.cpp's Vectorizable): the screen, and the outputs
  // of an environment that passes it, branch-free for fixed sizes.
  static constexpr bool kSimd = kSlots != kRuntimeSize && kDays != kRuntimeSize;
  DEEPSTOCK_HD bool valid(int64_t b) const { return in.valid(b); }
  DEEPSTOCK_HD bool plain() const { return in.plain(); }
  DEEPSTOCK_HD void make_plain() { in.make_plain(); }
  DEEPSTOCK_HD void finish(int64_t) const {}
  DEEPSTOCK_HD void compute(int64_t b) const {
    const int64_t L = in.slots(), P = in.num_days();
    T* pipe_out = next_pipeline + b * L;
    T x;
    const DayTotals<T> t = in.replay(b, P, x, [](int64_t, bool) {});
    next_on_hand[b] = x;
    // Orders not yet arrived after P days move P slots down; today's order lands at lead - P.
    const T* pipe = in.pipeline + b * L;
    // The slot compare in T: with an int compare GCC turns these stores into conditional ones
    // for some max leads, and cannot vectorize them.
    const T landing = T(in.lead32(b) - static_cast<int>(P));
    const T q = in.order[b];
    for (int64_t k = 0; k < L; ++k)
      pipe_out[k] = (k + P < L ? pipe[k + P] : T(0)) + (T(k) == landing ? q : T(0));
    const CostComponents<T> c = cost_of(in.costs, b, t, q);
    cost[b * 3 + 0] = c.holding;
    cost[b * 3 + 1] = c.penalty;
    cost[b * 3 + 2] = c.ordering;
    stats[b * 4 + 0] = t.sold;
    stats[b * 4 + 1] = t.short_units;
    stats[b * 4 + 2] = t.stockout_days;
    stats[b * 4 + 3] = t.holding_units;
  }
};

// Backward of inventory_step for one environment: reverse mode through the P days. The days'
// stocked/short pattern is recomputed, 64 days per pass (one pass unless P > 64).
template <typename T, typename I>
struct StepBackwardView {
  StepInputs<T, I> in;
  const T* grad_next_on_hand;     // [B]
  const T* grad_next_pipeline;    // [B, max_lead]
  const T* grad_cost;             // [B, 3]
  T* grad_on_hand;                // [B]
  T* grad_pipeline;               // [B, max_lead]
  T* grad_order;                  // [B]
  T* grad_holding_cost;           // [B] (per environment; summed by the caller when broadcast)
  T* grad_penalty_cost;           // [B]
  T* grad_order_cost;             // [B]

  DEEPSTOCK_HD int operator()(int64_t b) const {
    const int64_t L = in.max_lead, P = in.days;
    // The forward's value checks: the replay below indexes by the lead time.
    const int err = in.validate(b);
    if (err) {
      const T nan = quiet_nan<T>();
      grad_on_hand[b] = grad_order[b] = nan;
      grad_holding_cost[b] = grad_penalty_cost[b] = grad_order_cost[b] = nan;
      for (int64_t k = 0; k < L; ++k) grad_pipeline[b * L + k] = nan;
      return err;
    }
    const int64_t lead = in.lead(b);
    const T* g_pipe_next = grad_next_pipeline + b * L;
    T* g_pipe = grad_pipeline + b * L;
    const T g_hold = grad_cost[b * 3 + 0] * in.h(b);
    const T g_short = grad_cost[b * 3 + 1] * in.p(b);
    // Slots that arrive after the epoch only shift; today's order with lead >= P too.
    for (int64_t k = 0; k < L; ++k) g_pipe[k] = k >= P ? g_pipe_next[k - P] : T(0);
    T g_order = grad_cost[b * 3 + 2] * in.c(b) + (lead >= P ? g_pipe_next[lead - P] : T(0));

    T g_end = grad_next_on_hand[b];  // d loss / d (end-of-day on-hand of the day being visited)
    for (int64_t end = P; end > 0; end -= 64) {
      const int64_t start = end > 64 ? end - 64 : 0;
      uint64_t stocked = 0;  // bit d - start: day d ended stocked
      T x;
      const DayTotals<T> t = in.replay(b, end, x, [&](int64_t d, bool s) {
        if (d >= start && s) stocked |= uint64_t(1) << (d - start);
      });
      if (end == P) {
        grad_holding_cost[b] = grad_cost[b * 3 + 0] * t.holding_units;
        grad_penalty_cost[b] = grad_cost[b * 3 + 1] * t.short_units;
      }
      for (int64_t d = end - 1; d >= start; --d) {
        const bool s = (stocked >> (d - start)) & 1;
        // d loss / d (on-hand after day d's arrivals) = d loss / d (arrivals of day d)
        const T g = settle_day_backward(s, in.lost_sales, g_end, g_hold, g_short);
        if (d < L) g_pipe[d] += g;
        if (d == lead) g_order += g;
        g_end = g;  // yesterday's end-of-day on-hand enters today's on-hand one for one
      }
    }
    grad_on_hand[b] = g_end;
    grad_order[b] = g_order;
    grad_order_cost[b] = grad_cost[b * 3 + 2] * in.order[b];
    return 0;
  }
};

}  // namespace deepstock
