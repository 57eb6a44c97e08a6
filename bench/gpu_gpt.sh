#!/usr/bin/env bash
# GPT on one GPU: nanoGPT's GPU config of train_shakespeare_char (conf/train/gpt_char_gpu.toml: 6 layers,
# 6 heads, 384 dims, block 256, batch 64, dropout 0.2, 5000 iterations, bf16), the ranks started by
# torchrun with no Spark (the GPU machine may have no Java). nanoGPT reports val loss 1.4697 after
# about 3 minutes on one A100.
#
# Prints, and copies into $RESULTS (default: $OUT when set, else runs/gpu/results):
#   - the machine: GPU, torch, CUDA, NCCL, bf16 support;
#   - compiled: the whole config with train.compile=true: best val loss, wall time, tokens/s, MFU;
#   - eager: the same config without torch.compile, the first EAGER_ITERS iterations: tokens/s, MFU;
#   - a 300-character sample from the compiled run's model.
#
# The char token shards (nanoGPT's 90/10 cut by position) are made on a CPU machine beforehand and
# travel with the repository:
#   .venv/bin/python bench/gpt.py shards --out runs/gpu/shakespeare_char
#   bash bench/gpu_gpt.sh [SHARDS]
# SMOKE=1 runs the same steps on the CPU with a tiny model and a few iterations (a rehearsal).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
SHARDS=$(realpath "${1:-runs/gpu/shakespeare_char}")
RESULTS=${RESULTS:-${OUT:-runs/gpu/results}}
RUNS=runs/gpu/runs-$(date +%Y%m%d-%H%M%S)
EAGER_ITERS=${EAGER_ITERS:-500}
CONFIG=conf/train/gpt_char_gpu.toml
[ -f "$SHARDS/manifest.json" ] || { echo "error: no token shards at $SHARDS (see the header of this script)" >&2; exit 2; }
mkdir -p "$RESULTS" "$RUNS"
export PYTHONUNBUFFERED=1

SIZE=()
if [ "${SMOKE:-0}" = 1 ]; then
  SIZE=(--set launch.use_gpu=false --set train.bf16=false --set model.n_layer=1 --set model.n_head=2
        --set model.n_embd=32 --set model.block_size=32 --set train.batch_size=4 --set train.max_iters=20
        --set optim.lr_decay_iters=20 --set optim.warmup_iters=2 --set train.eval_interval=10 --set train.eval_iters=2
        --set train.log_interval=5)
  EAGER_ITERS=10
else
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
    || { echo "error: no CUDA GPU visible to torch (SMOKE=1 rehearses on the CPU)" >&2; exit 2; }
  nvidia-smi -L || true
fi
"$PY" - <<'PY'
import os, torch
cuda = torch.cuda.is_available()
print(f"torch {torch.__version__}  cuda {torch.version.cuda}  "
      f"nccl {torch.cuda.nccl.version() if cuda else '-'}  gpu {torch.cuda.get_device_name(0) if cuda else '-'}  "
      f"bf16 {torch.cuda.is_bf16_supported() if cuda else '-'}  cpus {os.cpu_count()}")
PY

TORCHRUN=("$PY" -m torch.distributed.run --standalone --nproc_per_node=1)
train() {  # name, extra --set args...
  local name=$1; shift
  local start end
  echo "== $name"
  start=$(date +%s.%N)
  "${TORCHRUN[@]}" -m training.lm_loop --config "$CONFIG" --set "data.shards='$SHARDS'" \
    --set "run.dir='$RUNS/$name'" "${SIZE[@]}" "$@" 2>&1 | tee "$RESULTS/$name.log" | grep -vE "^\s*$" | tail -n 40
  end=$(date +%s.%N)
  "$PY" - "$RUNS/$name/result.json" "$start" "$end" "$name" <<'PY'
import json, sys
path, start, end, name = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
r = json.load(open(path))
mfu = r.get("mfu")
print(f"{name}: best val loss {r.get('best_val_loss')}, wall {end - start:.1f} s (torchrun to exit), "
      f"tokens/s {r.get('tokens_per_s'):,.0f}, MFU {'-' if mfu is None else f'{100 * mfu:.1f}%'} "
      f"({r.get('mfu_peak')})")
PY
  cp "$RUNS/$name/result.json" "$RESULTS/$name.result.json"
}

train compiled --set train.compile=true
train eager --set train.compile=false --set train.max_iters="$EAGER_ITERS" --set train.eval_interval="$EAGER_ITERS"
cp "$RUNS/compiled/metrics.jsonl" "$RESULTS/compiled.metrics.jsonl"
[ -f "$RUNS/compiled/curves.png" ] && cp "$RUNS/compiled/curves.png" "$RESULTS/compiled.curves.png"

echo "== sample (compiled run, seed 1337, temperature 0.8, top-k 200)"
"$PY" - "$RUNS/compiled" <<'PY' | tee "$RESULTS/sample.txt"
import sys, torch
from training.lm_sample import load_run, sample_text
run = load_run(sys.argv[1], device="cuda" if torch.cuda.is_available() else "cpu")
print(sample_text(run, max_new_tokens=300, seed=1337))
PY
