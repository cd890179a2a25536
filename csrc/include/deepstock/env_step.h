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
    observe(b);
    const T* cost = step.cost + b * 3;
    const T* stats = step.stats + b * 4;
    reward[b] = -(cost[0] + cost[1] + cost[2]);
    for (int j = 0; j < 3; ++j)
      next_cost_total[b * 3 + j] = cost_total[b * 3 + j] + (accumulate ? cost[j] : T(0));
    for (int j = 0; j < 4; ++j)
      next_stats_total[b * 4 + j] = stats_total[b * 4 + j] + (accumulate ? stats[j] : T(0));
    return err;
  }
};

}  // namespace deepstock
