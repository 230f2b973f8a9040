#!/usr/bin/env bash
# Builds the `cuda` binary on a machine with no CUDA toolkit, from NVIDIA's own
# PyPI wheels: nvcc and headers compile candle's kernels to PTX, and the
# libraries (cuBLAS, cuRAND, NVRTC) are there to link against. The driver's
# libcuda.so comes with the GPU machine's driver, so a stub of its entry
# points stands in at link time. The binary needs CUDA 13's libraries and a
# driver for CUDA ≥ 13.0 where it runs.
#
#   tools/build_cuda.sh                       # → target/cuda/release/yingshi
#   tools/build_cuda.sh test --no-run         # the tests, built for the GPU
#   CUDA_COMPUTE_CAP=80 tools/build_cuda.sh   # another GPU generation (default 90: H100/H200)
set -euo pipefail
cd "$(dirname "$0")/.."

toolkit=${CUDA_WHEELS_DIR:-$PWD/.cache/cuda13}
cu=$toolkit/nvidia/cu13
if [ ! -x "$cu/bin/nvcc" ]; then
    rm -rf "$toolkit"
    # One --target per wheel set: pip does not merge into an existing target.
    for pkg in "nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88" \
               "nvidia-cuda-runtime==13.0.96" "nvidia-cuda-cccl==13.0.85" \
               "nvidia-cublas==13.0.2.14" "nvidia-curand==10.4.0.35" "nvidia-cuda-nvrtc==13.0.88"; do
        python3 -m pip install --quiet --no-deps --target "$toolkit.part" $pkg
        cp -a "$toolkit.part/." "$toolkit/"
        rm -rf "$toolkit.part"
    done
fi

# Unversioned names for the linker, and the driver stub.
lib=$cu/lib
for so in "$lib"/lib*.so.*; do
    base=${so%%.so.*}.so
    [ -e "$base" ] || ln -s "$(basename "$so")" "$base"
done
if [ ! -e "$lib/libcuda.so" ]; then
    sys=$(cargo metadata --format-version 1 --features cuda 2>/dev/null |
        python3 -c 'import json,sys; print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"]=="cudarc"))')
    grep -oE '^\s+fn cu[A-Za-z0-9_]+\(' "$(dirname "$sys")/src/driver/sys/mod.rs" |
        sed -E 's/\s+fn (cu[A-Za-z0-9_]+)\(/void \1(void) {}/' | sort -u >"$lib/cuda_stub.c"
    gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$lib/libcuda.so" "$lib/cuda_stub.c"
fi

export PATH=$cu/bin:$PATH CUDA_HOME=$cu CUDA_PATH=$cu
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export LIBRARY_PATH=$lib${LIBRARY_PATH:+:$LIBRARY_PATH}
command=${1:-build}
shift || true
cargo "$command" --release --locked --features cuda --target-dir target/cuda "$@"
