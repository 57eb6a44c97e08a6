#!/usr/bin/env bash
# GPU path check: CUDA + NCCL + bf16 autocast through the same training code.
# Prints samples/s and accuracy per run. Run from the repository root on a machine with >= 1 NVIDIA GPU:
#
#   bash bench/gpu_check.sh                 # uses runs/shards/mnist5k (+ runs/shards/mnist-t10k if present)
#   SHARDS=path/to/shards bash bench/gpu_check.sh
#
# Shards are made on a CPU machine beforehand (the GPU machine may have no Java):
#   spark-collab shard --source mnist5k --output runs/shards/mnist5k --shards 2
#   spark-collab shard --source idx:../shared/data/mnist/t10k --split test=1 --output runs/shards/mnist-t10k
# Part 1 runs the ranks with plain torchrun (no Spark); part 2, only when Java is present, runs the
# same through `spark-collab train` (TorchDistributor local mode, use_gpu=true).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
SHARDS=${SHARDS:-runs/shards/mnist5k}
TEST=${TEST:-runs/shards/mnist-t10k}
OUT=${OUT:-runs/gpu_check}
EPOCHS=${EPOCHS:-10}

NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count())")
if [ "$NGPU" -lt 1 ]; then echo "error: no CUDA GPU visible to torch" >&2; exit 2; fi
[ -f "$SHARDS/manifest.json" ] || { echo "error: no shards at $SHARDS (see the header of this script)" >&2; exit 2; }
NPROC=$(( NGPU < 2 ? NGPU : 2 ))   # the mnist5k shards were cut for 2 ranks
SHARDS_N=$("$PY" -c "import json,sys; print(len(json.load(open('$SHARDS/manifest.json'))['splits']['train']['shards']))")
[ "$SHARDS_N" -ge "$NPROC" ] || NPROC=1
TEST_SET=()
[ -f "$TEST/manifest.json" ] && TEST_SET=(--set "data.test='$(realpath "$TEST")'")

nvidia-smi -L || true
"$PY" - <<'PY'
import torch
print(f"torch {torch.__version__}  cuda {torch.version.cuda}  nccl {torch.cuda.nccl.version()}  "
      f"gpus {torch.cuda.device_count()}  bf16 {torch.cuda.is_bf16_supported()}")
PY
echo "ranks: $NPROC  shards: $SHARDS  test: ${TEST_SET[*]:-(test split of the shards)}"

TORCHRUN="$(dirname "$PY")/torchrun"
[ -x "$TORCHRUN" ] || TORCHRUN="$PY -m torch.distributed.run"
run() {  # name, extra --set args...
  local name=$1; shift
  echo "== $name"
  $TORCHRUN --standalone --nproc_per_node="$NPROC" -m training.loop --config conf/train/mlp_seed.toml \
    --set "data.shards='$(realpath "$SHARDS")'" "${TEST_SET[@]}" --set launch.use_gpu=true \
    --set launch.num_processes="$NPROC" --set train.epochs="$EPOCHS" --set "run.dir='$OUT/$name'" "$@" \
    2>&1 | grep -E "^(training|epoch|test accuracy|\{)" || { echo "FAILED: $name"; return 1; }
}
status=0
run mlp_seed_ddp_fp32 --set train.strategy=ddp || status=1
run mlp_seed_ddp_bf16 --set train.strategy=ddp --set train.bf16=true || status=1
run cnn_fsdp_bf16 --set model.name=cnn --set train.strategy=fsdp --set train.bf16=true || status=1
run mlp_wide_ddp_bf16_b1024 --set model.name=mlp --set model.hidden=1024 --set train.batch_size=1024 \
  --set train.bf16=true || status=1

if command -v java >/dev/null 2>&1; then
  echo "== spark-collab train (TorchDistributor local mode, use_gpu=true)"
  DISC=$(mktemp --suffix=.sh)
  ADDRS=$("$PY" -c "print(','.join(f'\"{i}\"' for i in range($NGPU)))")
  printf '#!/usr/bin/env bash\necho '"'"'{"name": "gpu", "addresses": [%s]}'"'"'\n' "$ADDRS" > "$DISC"
  chmod +x "$DISC"
  "$PY" -m spark_jobs train --config conf/train/mlp_seed.toml --overwrite --master "local[$NPROC]" \
    --conf spark.ui.enabled=false --conf spark.driver.resource.gpu.amount="$NGPU" \
    --conf spark.driver.resource.gpu.discoveryScript="$DISC" \
    --set "data.shards='$(realpath "$SHARDS")'" "${TEST_SET[@]}" --set launch.use_gpu=true \
    --set launch.num_processes="$NPROC" --set train.bf16=true --set "run.dir='$OUT/spark_mlp_seed_bf16'" \
    2>&1 | grep -E "^(training|epoch|test accuracy|done|error)" || status=1
else
  echo "(java not found: skipped the spark-collab train variant)"
fi
exit $status
