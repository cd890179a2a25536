"""The build: build_info, every op registered for CPU (and CUDA when compiled), CUDA sources.

The CUDA sources are compiled to object files with nvcc against the installed torch's headers
whenever nvcc is present, so CI proves they compile even on machines without a GPU or a CUDA
build of torch. (`.ci/cuda_lane` goes further: link, import and register against torch cu130.)
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import torch

import deepstock_fast as ds

ROOT = pathlib.Path(__file__).resolve().parents[1]
#: Every op of csrc/ops.cpp's TORCH_LIBRARY(deepstock, ...), as the dispatcher knows them.
OPS = sorted(name.split("::", 1)[1] for name in torch._C._dispatch_get_all_op_names()
             if name.startswith("deepstock::"))
#: Ops without a CUDA kernel: the dynamic program is CPU work by nature.
CPU_ONLY = {"lost_sales_dp"}


def test_build_info():
    info = ds.build_info()
    assert info["torch_version"] == torch.__version__
    assert info["built_with_torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert isinstance(info["cuda_kernels"], bool)
    # the compiler's path, recorded at configure time (not the "unknown" fallback)
    assert os.path.isabs(info["cxx_compiler"]) and os.access(info["cxx_compiler"], os.X_OK)
    assert bool(info["cuda_host_compiler"]) == info["cuda_kernels"]
    assert info["cuda_kernels"] == bool(info["cuda_arch_list"])


def test_op_list_is_the_dispatchers():
    assert {"inventory_step", "env_step", "rollout", "lost_sales_dp"} <= set(OPS)
    assert CPU_ONLY <= set(OPS)


@pytest.mark.parametrize("op", OPS)
def test_registered(op):
    name = f"deepstock::{op}"
    assert torch._C._dispatch_has_kernel_for_dispatch_key(name, "CPU")
    if ds.build_info()["cuda_kernels"] and op not in CPU_ONLY:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(name, "CUDA")
    # a fake kernel (deepstock_fast/ops.py): torch.compile and meta tensors
    assert torch._library.simple_registry.singleton.find(name).fake_impl.kernel is not None
    # an op with a backward op is differentiable through register_autograd (observation's
    # backward is written in Python; env_step's autograd says it is not differentiable)
    if f"{op}_backward" in OPS:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(name, "Autograd")


NVCC = shutil.which("nvcc")


@pytest.mark.skipif(NVCC is None, reason="nvcc is not installed")
@pytest.mark.parametrize("source", sorted((ROOT / "csrc" / "cuda").glob("*.cu")),
                         ids=lambda p: p.name)
def test_cuda_source_compiles(source, tmp_path):
    torch_dir = pathlib.Path(torch.__file__).parent
    cmd = [NVCC, "-c", str(source), "-o", str(tmp_path / "out.o"), "-std=c++20",
           "--expt-relaxed-constexpr", "-arch=sm_90",
           "-DC10_CUDA_NO_CMAKE_CONFIGURE_FILE",  # a CPU torch lacks c10/cuda's generated config
           f"-I{ROOT / 'csrc' / 'include'}", f"-I{torch_dir / 'include'}",
           f"-I{torch_dir / 'include' / 'torch' / 'csrc' / 'api' / 'include'}"]
    result = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp_path / "out.o").stat().st_size > 0


def configure(build_dir, *defines, env=None):
    """CMake's configure step of this project with the compiler that built _C (whatever CXX the
    environment names now): the completed process."""
    cmake = pytest.importorskip("cmake")
    pybind11 = pytest.importorskip("pybind11")
    compiler = ds.build_info()["cxx_compiler"]
    if not os.path.exists(compiler):
        pytest.skip(f"the compiler that built _C ({compiler}) is not on this machine")
    cmd = [os.path.join(cmake.CMAKE_BIN_DIR, "cmake"), "-S", str(ROOT), "-B", str(build_dir),
           f"-DPython_EXECUTABLE={sys.executable}", f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
           f"-DCMAKE_CXX_COMPILER={compiler}", *defines]
    return subprocess.run(cmd, capture_output=True, text=True, env=env)


@pytest.mark.parametrize("linker_flags, passes", [("", True), ("-static-libstdc++", False)],
                         ids=["shared-libstdc++", "static-libstdc++"])
def test_configure_checks_libstdcxx(linker_flags, passes, tmp_path):
    # A libstdc++ of the compiler's own inside _C (here: linked statically) breaks the number
    # formatting of op errors next to torch's; CMake must refuse to configure, and say how to fix it.
    result = configure(tmp_path, "-DDEEPSTOCK_WITH_CUDA=OFF",
                       f"-DCMAKE_SHARED_LINKER_FLAGS={linker_flags}")
    if passes:
        assert result.returncode == 0, result.stderr[-4000:]
        assert "libstdc++ check passed" in result.stdout
    else:
        assert result.returncode != 0
        message = " ".join(result.stderr.split())
        assert "a probe that formats a number into an exception message failed" in message
        assert "CXX=/usr/bin/g++" in message


@pytest.mark.skipif(NVCC is None or torch.version.cuda is None,
                    reason="needs nvcc and a CUDA build of torch")
def test_configure_checks_cuda_host_compiler(tmp_path):
    # nvcc's host compiler links _C's CUDA part: one that brings its own libstdc++ (the GPU image's
    # CUDAHOSTCXX did) must be refused too, even when CXX is fine.
    host = tmp_path / "g++-static-libstdc++"
    host.write_text(f'#!/bin/sh\nexec {ds.build_info()["cxx_compiler"]} -static-libstdc++ "$@"\n')
    host.chmod(0o755)
    result = configure(tmp_path / "b", "-DDEEPSTOCK_WITH_CUDA=ON", f"-DCMAKE_CUDA_COMPILER={NVCC}",
                       env={**os.environ, "CUDAHOSTCXX": str(host)})
    assert result.returncode != 0
    message = " ".join(result.stderr.split())
    assert f"The CUDA host compiler (CUDAHOSTCXX) {host}" in message
    assert "a probe that formats a number into an exception message failed" in message
