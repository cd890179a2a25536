// The Python module deepstock_fast._C: importing it registers the ops (ops.cpp) and exposes
// build facts and the CUDA value-check switch.
#include <pybind11/pybind11.h>

#include "deepstock/checks.h"

#ifndef DEEPSTOCK_TORCH_VERSION
#define DEEPSTOCK_TORCH_VERSION "unknown"
#endif
#ifndef DEEPSTOCK_CUDA_ARCH_LIST
#define DEEPSTOCK_CUDA_ARCH_LIST ""
#endif
#ifndef DEEPSTOCK_CXX_COMPILER
#define DEEPSTOCK_CXX_COMPILER "unknown"
#endif
#ifndef DEEPSTOCK_CUDA_HOST_COMPILER
#define DEEPSTOCK_CUDA_HOST_COMPILER ""
#endif

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.def("build_info", [] {
    py::dict info;
    info["built_with_torch"] = DEEPSTOCK_TORCH_VERSION;
    info["cxx_compiler"] = DEEPSTOCK_CXX_COMPILER;
    info["cuda_host_compiler"] = DEEPSTOCK_CUDA_HOST_COMPILER;
    info["cpu_simd"] = deepstock::cpu_simd();
#ifdef DEEPSTOCK_WITH_CUDA
    info["cuda_kernels"] = true;
    info["cuda_arch_list"] = DEEPSTOCK_CUDA_ARCH_LIST;
#else
    info["cuda_kernels"] = false;
    info["cuda_arch_list"] = "";
#endif
    return info;
  });
  m.def("cuda_value_checks", &deepstock::cuda_value_checks,
        "Whether CUDA ops synchronise to raise on invalid input values.");
  m.def("set_cuda_value_checks", &deepstock::set_cuda_value_checks, py::arg("enabled"),
        "Turn the CUDA input-value checks on or off; returns the previous setting.");
}
