#!/usr/bin/env bash
# The poet's retrain, in one run on a GPU machine that has python3 with torch,
# transformers and tokenizers but reaches no registry: the training data is
# built here and carried there.
#
#   tools/gpu_retrain.sh pack [DATA]   # here: prepare.py's output (default data/poet) → .retrain/ (xz, ~22 MiB)
#   tools/gpu_retrain.sh run           # there, in the repository root, .retrain/ carried beside it
#
# `run` trains a poet from scratch with `training/train.py --preset h200`
# (540 s of bf16 training in batches of 2048, held-out losses, export: about
# 10 minutes in all) and leaves the export in $OUT: four weight shards of at
# most 15 MiB, their index, config.json, tokenizer.json and train_info.json —
# 8 files, what the device tool brings back (without the tool, OUT defaults
# to /tmp/poet-retrain).
#
# With the device tool: the tracked tree (79.0 MiB, 57.4 of it the shipped
# poet's shards) is over the 64 MiB a call carries, and a retrain from scratch
# does not need those shards, so for the session untrack them
# (`git rm --cached models/poet-t5/model-0000?-of-00004.safetensors`, and list
# them in .git/info/exclude), carry `.retrain`, command `tools/gpu_retrain.sh run`;
# then `git reset models/poet-t5`. Back here: put the files in models/poet-new,
# copy models/poet-t5/train_lines.bloom beside them, count its n-gram
# (`python training/ngram.py data/poet models/poet-new`), and compare with
# `yingshi eval --poet-model models/poet-new` and a blind sheet
# (`yingshi sheet --variant new:models.poet_dir=models/poet-new --variant shipped`).
#
# A dry run on the CPU at tiny scale:
#   YINGSHI_RETRAIN_ARGS="--device cpu --small --seconds 5 --limit 5000" OUT=/tmp/out tools/gpu_retrain.sh run
set -euo pipefail
cd "$(dirname "$0")/.."
files=(train.jsonl valid.jsonl heldout_poems.jsonl tokenizer.json)

pack() {
    local data=${1:-data/poet}
    rm -rf .retrain && mkdir -p .retrain
    for f in "${files[@]}"; do
        xz -T0 -6 -c "$data/$f" >".retrain/$f.xz"
    done
    ls -l .retrain
}

run() {
    local out=${OUT:-/tmp/poet-retrain} data=/tmp/retrain-data model=/tmp/retrain-model
    mkdir -p "$out" "$data"
    for f in "${files[@]}"; do
        xz -dc ".retrain/$f.xz" >"$data/$f"
    done
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
    # shellcheck disable=SC2086 # the extra arguments are words on purpose
    PYTHONUNBUFFERED=1 python3 training/train.py "$data" "$model" --preset h200 ${YINGSHI_RETRAIN_ARGS:-}
    # The checkpoint (weights and optimiser state) stays behind: it is for resuming there.
    cp "$model"/model-*.safetensors "$model"/model.safetensors.index.json "$model"/config.json \
        "$model"/tokenizer.json "$model"/train_info.json "$out"/
    ls -l "$out"
}

case "${1:-}" in
pack) shift; pack "$@" ;;
run) run ;;
*) echo "usage: $0 pack [DATA] | run" >&2; exit 2 ;;
esac
