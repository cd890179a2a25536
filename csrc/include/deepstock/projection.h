// Regularizer projections (docs/METHOD.md, "The four heads"): the per-environment math of
//   base_stock_order       = clamp(target - IP, 0, max_order)                      (Base)
//   coeff_order            = clamp(coeff . features, 0, max_order)                 (Coeff)
//   coeff_base_stock_order = clamp(coeff . features - IP, 0, max_order)            (Both)
// One view covers all three: an absent input is a null pointer.
#pragma once

#include "deepstock/common.h"

namespace deepstock {

template <typename T>
DEEPSTOCK_HD T clamp_order(T u, T max_order) {
  return u < T(0) ? T(0) : (u > max_order ? max_order : u);
}

// Whether clamp_order passes u through (d clamp_order / du = 1) rather than a bound (0). At the
// kinks we take the right derivative (the side of a larger order): true at u == 0, false at
// u == max_order. The same convention as the inventory step (inventory.h). A NaN u passes
// through, as in clamp_order.
template <typename T>
DEEPSTOCK_HD bool clamp_order_passes(T u, T max_order) {
  return !(u < T(0)) && !(u >= max_order);
}

template <typename T>
struct ProjectionView {
  const T* target = nullptr;               // [B] or null
  const T* coeff = nullptr;                // [B, m] or null
  const T* features = nullptr;             // [B, m] or null
  const T* inventory_position = nullptr;   // [B] or null
  const T* max_order = nullptr;            // [B] or [1]
  int64_t max_order_stride = 0;            // 1 or 0 (broadcast)
  int64_t num_features = 0;                // m
  T* order = nullptr;                      // [B] out

  // Pre-clamp order u and the cap for environment b.
  DEEPSTOCK_HD T unclamped(int64_t b) const {
    T u = target ? target[b] : T(0);
    if (coeff) {
      const T* cb = coeff + b * num_features;
      const T* fb = features + b * num_features;
      for (int64_t j = 0; j < num_features; ++j) u += cb[j] * fb[j];
    }
    if (inventory_position) u -= inventory_position[b];
    return u;
  }

  DEEPSTOCK_HD int operator()(int64_t b) const {
    const T cap = max_order[b * max_order_stride];
    // max_order may be +inf (no cap) but not negative or NaN.
    if (!(cap >= T(0))) {
      order[b] = quiet_nan<T>();
      return kBadMaxOrder;
    }
    order[b] = clamp_order(unclamped(b), cap);
    return 0;
  }
};

template <typename T>
struct ProjectionBackwardView {
  ProjectionView<T> forward;               // the inputs (forward.order unused)
  const T* grad_order = nullptr;           // [B]
  T* grad_target = nullptr;                // [B] or null
  T* grad_coeff = nullptr;                 // [B, m] or null
  T* grad_features = nullptr;              // [B, m] or null
  T* grad_inventory_position = nullptr;    // [B] or null

  DEEPSTOCK_HD int operator()(int64_t b) const {
    const T cap = forward.max_order[b * forward.max_order_stride];
    const int64_t m = forward.num_features;
    if (!(cap >= T(0))) {  // the forward's check; the gradients are NaN
      const T nan = quiet_nan<T>();
      if (grad_target) grad_target[b] = nan;
      if (grad_inventory_position) grad_inventory_position[b] = nan;
      for (int64_t j = 0; j < m; ++j) {
        if (grad_coeff) grad_coeff[b * m + j] = nan;
        if (grad_features) grad_features[b * m + j] = nan;
      }
      return kBadMaxOrder;
    }
    // A select, not a product: a bound's zero gradient stays zero for a NaN or inf grad_order.
    const T g = clamp_order_passes(forward.unclamped(b), cap) ? grad_order[b] : T(0);
    if (grad_target) grad_target[b] = g;
    if (grad_inventory_position) grad_inventory_position[b] = -g;
    for (int64_t j = 0; j < m; ++j) {
      if (grad_coeff) grad_coeff[b * m + j] = g * forward.features[b * m + j];
      if (grad_features) grad_features[b * m + j] = g * forward.coeff[b * m + j];
    }
    return 0;
  }
};

}  // namespace deepstock
