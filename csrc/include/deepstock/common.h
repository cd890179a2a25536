// Shared by the CPU and CUDA launchers: the host+device qualifier and the input-error codes.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define DEEPSTOCK_HD __host__ __device__ __forceinline__
#else
#define DEEPSTOCK_HD inline
#endif

namespace deepstock {

// Bit flags a per-environment function returns when its inputs are invalid. The launchers OR
// them over the batch and raise one error that names the argument (see launch.h).
enum InputError : int {
  kBadOrder = 1,        // order negative, NaN or infinite
  kBadDemand = 2,       // demand negative, NaN or infinite
  kBadLeadTime = 4,     // lead time outside 0..max lead time
  kBadCost = 8,         // holding, penalty or order cost negative, NaN or infinite
  kBadState = 16,       // on-hand NaN/infinite (negative under lost sales) or pipeline negative/NaN
  kBadPolicy = 32,      // classical-policy parameters invalid
  kBadMaxOrder = 64,    // max_order negative or NaN
};

// True for 0 <= v < inf; false for NaN. (v - v) is NaN exactly when v is NaN or infinite.
template <typename T>
DEEPSTOCK_HD bool nonneg_finite(T v) {
  return v >= T(0) && (v - v) == T(0);
}

template <typename T>
DEEPSTOCK_HD bool finite(T v) {
  return (v - v) == T(0);
}

}  // namespace deepstock
