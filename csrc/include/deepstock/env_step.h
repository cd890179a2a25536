// InventoryEnv's step in one pass: the inventory transition, the next observation, the reward and
// the episode's running cost and stats totals. It composes the inventory_step and observation
// views, so the math is theirs; fusing saves the passes over B rows that separate ops (and the
// tensor ops for the reward and the totals) would each make.
#pragma once

#include "deepstock/inventory.h"
#include "deepstock/observation.h"

namespace deepstock {

template <typename T, typename I, int kSlots = kRuntimeSize, int kDays = kRuntimeSize>
struct EnvStepView {
  StepView<T, I, kSlots, kDays> step;
  ObservationView<T, kSlots> observe;  // reads the step's next on-hand and pipeline
  const T* cost_total;                 // [B, 3] so far this episode
  const T* stats_total;                // [B, 4]
  T* reward;                           // [B]: minus the epoch's cost
  T* next_cost_total;                  // [B, 3]: cost_total, plus this epoch's if accumulate
  T* next_stats_total;                 // [B, 4]
  bool accumulate;

  DEEPSTOCK_HD int operator()(int64_t b) const {
    const int err = step(b);  // on bad input its outputs are NaN, and so are these
    observe.state_columns(b);
    totals(b);
    finish(b);
    return err | observe.scale_error(b);
  }

  // The CPU launcher's vectorized path (see StepView), then finish(b) for the rest.
  static constexpr bool kSimd = StepView<T, I, kSlots, kDays>::kSimd;
  DEEPSTOCK_HD bool valid(int64_t b) const {
    return step.valid(b) & (observe.scale_error(b) == 0);  // & (no short circuit): no branch
  }
  DEEPSTOCK_HD bool plain() const { return step.plain(); }
  DEEPSTOCK_HD void make_plain() { step.make_plain(); }
  DEEPSTOCK_HD void compute(int64_t b) const {
    step.compute(b);
    observe.state_columns(b);
    totals(b);
  }
  DEEPSTOCK_HD void finish(int64_t b) const { observe.exogenous_columns(b); }

 private:
  DEEPSTOCK_HD void totals(int64_t b) const {
    const T* cost = step.cost + b * 3;
    const T* stats = step.stats + b * 4;
    reward[b] = -(cost[0] + cost[1] + cost[2]);
    const T weight = accumulate ? T(1) : T(0);
    for (int j = 0; j < 3; ++j)
      next_cost_total[b * 3 + j] = cost_total[b * 3 + j] + weight * cost[j];
    for (int j = 0; j < 4; ++j)
      next_stats_total[b * 4 + j] = stats_total[b * 4 + j] + weight * stats[j];
  }
};

}  // namespace deepstock
