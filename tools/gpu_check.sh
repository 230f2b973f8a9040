#!/usr/bin/env bash
# The GPU checks of the `cuda` build, in one run on a machine with an NVIDIA
# GPU (CUDA 13 driver and libraries, Python with torch and transformers) but
# no Rust and no registry: the binaries are built here and carried there.
#
#   tools/gpu_check.sh pack    # here: build with tools/build_cuda.sh, pack into .gpu/ (24 MiB)
#   tools/gpu_check.sh run     # there, in the repository root, .gpu/ carried beside it
#
# The device tool sends at most 64 MiB, and the tracked tree alone is 79.0 MiB
# (57.4 MiB of it the shipped poet's weights). So: untrack the four weight
# shards for the session (`git rm --cached models/poet-t5/model-0000?-of-00004.safetensors`,
# listed in .git/info/exclude), copy shards 1–2 into `.poet1/` and 3–4 into
# `.poet2/` (excluded too); first call: carry `.poet1`, command `true`; second
# call, while the machine is warm: carry `.poet2` and `.gpu`, command
# `cp .poet1/* .poet2/* models/poet-t5/ && tools/gpu_check.sh run`.
# Restore the index afterwards (`git reset models/poet-t5`).
#
# `run` prints the GPU, runs the Chinese-CLIP and poet parity tests on
# cuda:0 in f32 and in bf16, writes a full-size random Chinese-CLIP, and runs
# `yingshi bench --serve` (ours and Python's transformers on the same GPU,
# bf16). Everything it prints is also written to $OUT/gpu_check.log.
# A dry run on a CPU machine (the stub libcuda.so.1 of tools/build_cuda.sh on
# LD_LIBRARY_PATH): YINGSHI_CHECK_DEVICE=cpu YINGSHI_CHECK_DTYPES=f32 YINGSHI_CHECK_REQUESTS=2.
set -euo pipefail
cd "$(dirname "$0")/.."
tests=(clip_parity poet_parity)

pack() {
    tools/build_cuda.sh build
    local built
    built=$(tools/build_cuda.sh test --no-run "${tests[@]/#/--test=}" --message-format=json |
        python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["target"]["name"], m["executable"])')
    rm -rf .gpu && mkdir -p .gpu
    strip -o .gpu/yingshi target/cuda/release/yingshi
    while read -r name path; do strip -o ".gpu/$name" "$path"; done <<<"$built"
    xz -9 -T0 .gpu/*
    # The test binaries look for their fixtures under the folder they were built in.
    pwd >.gpu/built_at
    ls -l .gpu
}

run() {
    local out=${OUT:-/tmp/gpu-check}
    local device=${YINGSHI_CHECK_DEVICE:-cuda:0} dtypes=${YINGSHI_CHECK_DTYPES:-f32 bf16}
    mkdir -p "$out"
    exec > >(tee "$out/gpu_check.log") 2>&1
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || echo "no nvidia-smi"
    local bin=/tmp/yingshi-gpu
    mkdir -p "$bin"
    for f in .gpu/*.xz; do
        xz -dc "$f" >"$bin/$(basename "$f" .xz)"
        chmod +x "$bin/$(basename "$f" .xz)"
    done
    # CUDA 13's libraries (cuBLAS, cuRAND, NVRTC, the runtime) from the image's Python packages.
    LD_LIBRARY_PATH=$(python3 -c 'import glob, os, site
dirs = {os.path.dirname(p) for d in site.getsitepackages() for p in glob.glob(d + "/nvidia/**/lib/lib*.so*", recursive=True)}
print(":".join(sorted(dirs)))'):${LD_LIBRARY_PATH:-}
    export LD_LIBRARY_PATH
    # The test binaries look for their fixtures under the folder they were built in.
    local built_at
    built_at=$(cat .gpu/built_at)
    [ -e "$built_at" ] || { mkdir -p "$(dirname "$built_at")" && ln -s "$PWD" "$built_at"; }
    for dtype in $dtypes; do
        for t in "${tests[@]}"; do
            echo "== $t on $device in $dtype"
            YINGSHI_TEST_DEVICE=$device YINGSHI_TEST_DTYPE=$dtype "$bin/$t" --test-threads 1
        done
    done
    [ -e /tmp/clip-b16/model.safetensors ] || python3 tools/make_bench_models.py /tmp/clip-b16
    echo "== bench --serve on $device"
    YINGSHI_MODELS__DEVICE=$device YINGSHI_MODELS__CACHE_DIR=/tmp/yingshi-cache \
        YINGSHI_BATCH__MAX_REQUESTS=64 YINGSHI_PYTHON=python3 \
        "$bin/yingshi" bench --serve --clip-model /tmp/clip-b16 \
        --requests "${YINGSHI_CHECK_REQUESTS:-256}" --concurrency 1 8 64
}

case ${1:-} in
pack) pack ;;
run) run ;;
*)
    echo "usage: $0 pack|run" >&2
    exit 2
    ;;
esac
