// Observation assembly: one row per environment, [on_hand / scale, pipeline / scale, exogenous],
// the layout of InventoryEnv's observation. A single pass instead of a concatenation of narrow
// columns (which on a CPU copies a few bytes per row and input).
#pragma once

#include <cstdint>

#include "deepstock/common.h"

namespace deepstock {

// kSlots: max_lead when fixed at compile time (kRuntimeSize: read at run time).
template <typename T, int kSlots = kRuntimeSize>
struct ObservationView {
  const T* on_hand = nullptr;    // [B]
  const T* pipeline = nullptr;   // [B, max_lead]
  const T* exogenous = nullptr;  // [B, width]
  const T* scale = nullptr;      // [B]
  T* obs = nullptr;              // [B, 1 + max_lead + width]
  int64_t max_lead = 0, width = 0;

  DEEPSTOCK_HD int operator()(int64_t b) const {
    const int64_t slots = kSlots == kRuntimeSize ? max_lead : kSlots;
    const T inv = T(1) / scale[b];
    T* row = obs + b * (1 + slots + width);
    row[0] = on_hand[b] * inv;
    const T* p = pipeline + b * slots;
    for (int64_t k = 0; k < slots; ++k) row[1 + k] = p[k] * inv;
    const T* x = exogenous + b * width;
    for (int64_t j = 0; j < width; ++j) row[1 + slots + j] = x[j];
    return 0;
  }
};

}  // namespace deepstock
