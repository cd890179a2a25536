// Fused multi-period simulation of a classical policy: the state of one environment stays in
// registers (GPU) or cache (CPU) for the whole horizon. The days are the same settle_day as
// inventory_step; the policies use the same clamp as the projections.
#pragma once

#include <type_traits>

#include "deepstock/common.h"
#include "deepstock/inventory.h"
#include "deepstock/projection.h"

namespace deepstock {

// Classical policies, with their parameter columns. IP = inventory position before ordering.
enum class Policy : int {
  kBaseStock = 0,        // (S):      order max(S - IP, 0)
  kCappedBaseStock = 1,  // (S, cap): order min(max(S - IP, 0), cap)
  kConstant = 2,         // (q):      order q
  kMinMax = 3,           // (s, S):   order S - IP when IP <= s, else 0
};

// Both switches name every policy and have no default, so the compiler (-Wswitch) flags a policy
// added to the enum but not here. A code that is no Policy fails valid_policy: the rollout
// reports it as a bad policy instead of simulating another one.
template <typename T>
DEEPSTOCK_HD T classical_order(Policy policy, T ip, T a, T b) {
  switch (policy) {
    case Policy::kBaseStock: return clamp_order(a - ip, T(1) / T(0));
    case Policy::kCappedBaseStock: return clamp_order(a - ip, b);
    case Policy::kConstant: return a;
    case Policy::kMinMax: return ip <= a ? b - ip : T(0);
  }
  return T(0) / T(0);
}

template <typename T>
DEEPSTOCK_HD bool valid_policy(Policy policy, T a, T b) {
  switch (policy) {
    case Policy::kBaseStock: return finite(a);
    case Policy::kCappedBaseStock: return finite(a) && nonneg_finite(b);
    case Policy::kConstant: return nonneg_finite(a);
    case Policy::kMinMax: return finite(a) && finite(b) && a <= b;
  }
  return false;
}

// The pipeline kept in a fixed-size array of N >= max lead slots. Every index is a compile-time
// constant after unrolling, so on the GPU the array lives in registers.
template <typename T, int N>
DEEPSTOCK_HD T pipeline_advance(T (&pipe)[N]) {
  const T arriving = pipe[0];
#pragma unroll
  for (int k = 0; k + 1 < N; ++k) pipe[k] = pipe[k + 1];
  pipe[N - 1] = T(0);
  return arriving;
}

template <typename T, int N>
DEEPSTOCK_HD void pipeline_add(T (&pipe)[N], int64_t slot, T quantity) {
#pragma unroll
  for (int k = 0; k < N; ++k) pipe[k] += (k == slot) ? quantity : T(0);
}

template <typename T, int N>
DEEPSTOCK_HD T pipeline_total(const T (&pipe)[N]) {
  T total = T(0);
#pragma unroll
  for (int k = 0; k < N; ++k) total += pipe[k];
  return total;
}

// Pipeline capacities compiled; a batch with max lead Lmax uses the smallest one >= Lmax.
constexpr int kMaxRolloutLead = 64;

template <typename F>
void dispatch_pipeline_capacity(int64_t max_lead, F&& f) {
  if (max_lead <= 1) f(std::integral_constant<int, 1>{});
  else if (max_lead <= 2) f(std::integral_constant<int, 2>{});
  else if (max_lead <= 4) f(std::integral_constant<int, 4>{});
  else if (max_lead <= 8) f(std::integral_constant<int, 8>{});
  else if (max_lead <= 16) f(std::integral_constant<int, 16>{});
  else if (max_lead <= 32) f(std::integral_constant<int, 32>{});
  else f(std::integral_constant<int, kMaxRolloutLead>{});
}

template <typename T, typename I>
struct RolloutView {
  const T* on_hand;          // [B]
  const T* pipeline;         // [B, max_lead]
  const I* lead_time;        // [B]
  const T* demand;           // [B, horizon] with strides below
  const T* params;           // [B, n] or [1, n]
  UnitCosts<T> costs;
  int64_t demand_stride_b, demand_stride_t;
  int64_t params_stride, num_params;  // params_stride 0 to broadcast
  int64_t max_lead, horizon, review_period, warmup;
  Policy policy;
  bool lost_sales;
  T* average_cost;   // [B]: total cost per period after warm-up
  T* cost;           // [B, 3]: holding, shortage penalty, ordering, summed after warm-up
  T* stats;          // [B, 4]: DayTotals order, summed after warm-up

  template <int N>
  DEEPSTOCK_HD int run(int64_t b) const {
    const T a = params[b * params_stride];
    const T a2 = num_params > 1 ? params[b * params_stride + 1] : T(0);
    const int64_t lead = static_cast<int64_t>(lead_time[b]);
    T x = on_hand[b];

    int err = 0;
    if (lead < 0 || lead > max_lead) err |= kBadLeadTime;
    err |= costs.errors(b);
    if (!finite(x) || (lost_sales && x < T(0))) err |= kBadOnHand;
    if (!valid_policy(policy, a, a2)) err |= kBadPolicy;
    T pipe[N];
#pragma unroll
    for (int k = 0; k < N; ++k) {
      pipe[k] = k < max_lead ? pipeline[b * max_lead + k] : T(0);
      if (!nonneg_finite(pipe[k])) err |= kBadPipeline;
    }

    DayTotals<T> totals;
    T ordered = T(0);
    int64_t until_review = 0;
    for (int64_t t = 0; t < horizon; ++t) {
      const T dem = demand[b * demand_stride_b + t * demand_stride_t];
      if (!nonneg_finite(dem)) err |= kBadDemand;
      const bool review = until_review == 0;
      until_review = review ? review_period - 1 : until_review - 1;
      T q = T(0);
      if (review) q = classical_order(policy, x + pipeline_total(pipe), a, a2);
      x += pipeline_advance(pipe);
      if (lead == 0) x += q;
      else pipeline_add(pipe, lead - 1, q);
      DayTotals<T> day;
      settle_day(x, dem, lost_sales, day);
      if (t >= warmup) {
        totals.add(day);
        ordered += q;
      }
    }
    const CostComponents<T> c = cost_of(costs, b, totals, ordered);
    const T components[3] = {c.holding, c.penalty, c.ordering};
    const T values[4] = {totals.sold, totals.short_units, totals.stockout_days,
                         totals.holding_units};
    const T nan = quiet_nan<T>();
    for (int j = 0; j < 3; ++j) cost[b * 3 + j] = err ? nan : components[j];
    for (int j = 0; j < 4; ++j) stats[b * 4 + j] = err ? nan : values[j];
    average_cost[b] = err ? nan : c.total() / static_cast<T>(horizon - warmup);
    return err;
  }
};

}  // namespace deepstock

namespace deepstock {

// A rollout view with its pipeline capacity fixed, callable per environment like the others.
template <int N, typename View>
struct WithCapacity {
  View view;
  DEEPSTOCK_HD int operator()(int64_t b) const { return view.template run<N>(b); }
};

}  // namespace deepstock
