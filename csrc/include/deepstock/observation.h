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

  DEEPSTOCK_HD int64_t slots() const { return kSlots == kRuntimeSize ? max_lead : kSlots; }
  DEEPSTOCK_HD T* row(int64_t b) const { return obs + b * (1 + slots() + width); }

  DEEPSTOCK_HD int operator()(int64_t b) const {
    state_columns(b);  // NaN columns when the scale is invalid
    exogenous_columns(b);
    return scale_error(b);
  }
  // kBadScale unless the scale is positive and finite (0 or inf would give 0 or inf columns).
  DEEPSTOCK_HD int scale_error(int64_t b) const {
    return positive_finite(scale[b]) ? 0 : kBadScale;
  }
  // The scaled on-hand and pipeline (a fixed number of columns when kSlots is).
  DEEPSTOCK_HD void state_columns(int64_t b) const {
    const T s = scale[b];
    const T inv = positive_finite(s) ? T(1) / s : quiet_nan<T>();
    T* r = row(b);
    r[0] = on_hand[b] * inv;
    const T* p = pipeline + b * slots();
    for (int64_t k = 0; k < slots(); ++k) r[1 + k] = p[k] * inv;
  }
  // The exogenous columns, copied (their number is known at run time only).
  DEEPSTOCK_HD void exogenous_columns(int64_t b) const {
    T* r = row(b) + 1 + slots();
    const T* x = exogenous + b * width;
    for (int64_t j = 0; j < width; ++j) r[j] = x[j];
  }
};

}  // namespace deepstock
