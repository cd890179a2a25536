// CPU launcher: the per-environment views run under at::parallel_for.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <atomic>

#include "deepstock/ops_impl.h"

namespace deepstock {
namespace {

struct CpuForEach {
  template <class View>
  int operator()(int64_t n, int64_t grain, const View& view, const Tensor&) const {
    std::atomic<int> errors{0};
    at::parallel_for(0, n, grain, [&](int64_t begin, int64_t end) {
      // A private copy: the compiler can then keep the view's fields in registers instead of
      // reloading them after every store through an output pointer.
      const View v = view;
      int local = 0;
      for (int64_t i = begin; i < end; ++i) local |= v(i);
      if (local) errors.fetch_or(local);
    });
    return errors.load();
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(deepstock, CPU, m) { DEEPSTOCK_REGISTER_OPS(m, Ops<CpuForEach>); }

}  // namespace deepstock
