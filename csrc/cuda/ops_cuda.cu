// CUDA launcher: one thread per environment, grid-stride, on the current stream. Only c10/cuda
// headers, so the file also compiles against a CPU build of torch (see tests/test_cuda_sources.py).
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

#include "deepstock/ops_impl.h"

namespace deepstock {
namespace {

template <class View>
__global__ void for_each_kernel(View view, int64_t n, int* errors) {
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    const int e = view(i);
    if (e && errors) atomicOr(errors, e);
  }
}

struct CudaForEach {
  template <class View>
  int operator()(int64_t n, int64_t /*grain*/, const View& view, const Tensor& like) const {
    if (n == 0) return 0;
    const c10::cuda::CUDAGuard guard(like.device());
    const bool check = cuda_value_checks();
    // The flag costs a memset and, to read it, a synchronisation: skipped with checks off.
    Tensor errors = check ? like.new_zeros({1}, like.options().dtype(at::kInt)) : Tensor();
    constexpr int threads = 256;
    const int64_t blocks = std::min<int64_t>((n + threads - 1) / threads, int64_t(1) << 20);
    for_each_kernel<<<static_cast<unsigned>(blocks), threads, 0,
                      c10::cuda::getCurrentCUDAStream()>>>(
        view, n, check ? errors.mutable_data_ptr<int>() : nullptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return check ? errors.item<int>() : 0;
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(deepstock, CUDA, m) { DEEPSTOCK_REGISTER_OPS(m, Ops<CudaForEach>); }

}  // namespace deepstock
