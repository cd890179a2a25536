// Shared by the CPU and CUDA launchers: the host+device qualifier and the input-error codes.
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

// Always inlined: a launcher's loop then holds a view's whole per-environment body, with the
// view's fields in registers (out-of-line, the CPU reloaded them for every environment).
#if defined(__CUDACC__)
#define DEEPSTOCK_HD __host__ __device__ __forceinline__
#else
#define DEEPSTOCK_HD inline __attribute__((always_inline))
#endif

namespace deepstock {

// A quiet NaN of T on host and device (the output of an environment whose input is invalid).
template <typename T>
DEEPSTOCK_HD T quiet_nan() {
  return T(NAN);
}

// Bit flags a per-environment function returns when its inputs are invalid. The launchers OR
// them over the batch and raise one error that names the argument (see checks.h).
enum InputError : int {
  kBadOrder = 1,          // order negative, NaN or infinite
  kBadDemand = 2,         // demand negative, NaN or infinite
  kBadLeadTime = 4,       // lead time outside 0..max lead time
  kBadHoldingCost = 8,    // holding cost negative, NaN or infinite
  kBadOnHand = 16,        // on-hand NaN or infinite, or negative under lost sales
  kBadPolicy = 32,        // classical-policy parameters invalid
  kBadMaxOrder = 64,      // max_order negative or NaN
  kBadPipeline = 128,     // pipeline negative, NaN or infinite
  kBadPenaltyCost = 256,  // penalty cost negative, NaN or infinite
  kBadOrderCost = 512,    // order cost negative, NaN or infinite
  kBadScale = 1024,       // observation scale not positive and finite
};

// Marks a size known only at run time. The forward step and the observation are also compiled
// for the common small sizes (see dispatch_slots): their loops then unroll and a SKU's values
// stay in registers, a few times faster on a CPU.
constexpr int kRuntimeSize = -1;

template <int N>
using Size = std::integral_constant<int, N>;

// Calls f(Size<max_lead>{}) for a max lead time of 0..4, f(Size<kRuntimeSize>{}) otherwise.
// Exact sizes, for loop bounds (rollout.h's dispatch_pipeline_capacity rounds up instead: it
// sizes a per-environment buffer).
template <typename F>
void dispatch_slots(int64_t max_lead, F&& f) {
  switch (max_lead) {
    case 0: return f(Size<0>{});
    case 1: return f(Size<1>{});
    case 2: return f(Size<2>{});
    case 3: return f(Size<3>{});
    case 4: return f(Size<4>{});
    default: return f(Size<kRuntimeSize>{});
  }
}

// True for 0 <= v < inf; false for NaN. (v - v) is NaN exactly when v is NaN or infinite.
template <typename T>
DEEPSTOCK_HD bool nonneg_finite(T v) {
  return v >= T(0) && (v - v) == T(0);
}

template <typename T>
DEEPSTOCK_HD bool finite(T v) {
  return (v - v) == T(0);
}

// True for 0 < v < inf (a divisor such as the observation scale).
template <typename T>
DEEPSTOCK_HD bool positive_finite(T v) {
  return v > T(0) && (v - v) == T(0);
}

}  // namespace deepstock
