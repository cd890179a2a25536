// CPU launcher: the per-environment views run under at::parallel_for.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <concepts>
#include <cstdlib>

#include "deepstock/ops_impl.h"

namespace deepstock {
namespace {

// A view whose body the CPU launcher runs as SIMD loops over blocks of environments: valid(i), a
// branch-free screen of the inputs; compute(i), the outputs of an environment that passes it;
// finish(i), the part left to a plain loop; plain() and make_plain(), its common layout (see
// StepInputs::plain). Environments of a block that fails the screen take the checked path, view(i).
template <class View>
concept Vectorizable = View::kSimd && requires(View& v, int64_t i) {
  { v.valid(i) } -> std::convertible_to<bool>;
  { v.plain() } -> std::convertible_to<bool>;
  v.compute(i);
  v.finish(i);
  v.make_plain();
};

// Screens environments [start, stop) and, when all pass, writes their outputs and returns true.
template <class View>
DEEPSTOCK_HD bool compute_if_valid(const View& v, int64_t start, int64_t stop) {
  int invalid = 0;
#pragma omp simd reduction(| : invalid)
  for (int64_t i = start; i < stop; ++i) invalid |= !v.valid(i);
  if (invalid) return false;
#pragma omp simd
  for (int64_t i = start; i < stop; ++i) v.compute(i);
  for (int64_t i = start; i < stop; ++i) v.finish(i);
  return true;
}

// The block loop, versioned on the view's plain layout, whose strides then are constants.
template <class View>
DEEPSTOCK_HD bool compute_block(const View& view, int64_t start, int64_t stop) {
  if (view.plain()) {
    View v = view;
    v.make_plain();
    return compute_if_valid(v, start, stop);
  }
  return compute_if_valid(view, start, stop);
}

// Compiled for the baseline ISA and for AVX2 + FMA; chosen once, at load time.
template <class View>
bool compute_block_baseline(const View& view, int64_t start, int64_t stop) {
  return compute_block(view, start, stop);
}
template <class View>
__attribute__((target("avx2,fma"))) bool compute_block_avx2(const View& view, int64_t start,
                                                              int64_t stop) {
  return compute_block(view, start, stop);
}
// DEEPSTOCK_NO_AVX2=1 forces the baseline loops (tests, comparisons). A static initializer:
// __builtin_cpu_init makes the CPU data valid whatever order the constructors run in.
const bool kHasAvx2 = [] {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
         std::getenv("DEEPSTOCK_NO_AVX2") == nullptr;
}();

struct CpuForEach {
  // Environments per SIMD block: the screen's and the outputs' loops over one block stay in L1.
  static constexpr int64_t kBlock = 256;

  template <class View>
  int operator()(int64_t n, int64_t grain, const View& view, const Tensor&) const {
    std::atomic<int> errors{0};
    at::parallel_for(0, n, grain, [&](int64_t begin, int64_t end) {
      // A private copy: the compiler can then keep the view's fields in registers instead of
      // reloading them after every store through an output pointer.
      const View v = view;
      int local = 0;
      if constexpr (Vectorizable<View>) {
        for (int64_t start = begin; start < end; start += kBlock) {
          const int64_t stop = std::min(end, start + kBlock);
          const bool done = kHasAvx2 ? compute_block_avx2(v, start, stop)
                                     : compute_block_baseline(v, start, stop);
          if (!done)  // the checked path names the errors and poisons the outputs
            for (int64_t i = start; i < stop; ++i) local |= v(i);
        }
      } else {
        for (int64_t i = begin; i < end; ++i) local |= v(i);
      }
      if (local) errors.fetch_or(local);
    });
    return errors.load();
  }
};

}  // namespace

const char* cpu_simd() { return kHasAvx2 ? "avx2" : "baseline"; }

TORCH_LIBRARY_IMPL(deepstock, CPU, m) { DEEPSTOCK_REGISTER_OPS(m, Ops<CpuForEach>); }

}  // namespace deepstock
