#!/bin/bash
# GPU checks and benchmarks, run from the repository root on a CUDA machine:
#   bash benchmarks/gpu.sh IMAGES_DIR OUT_DIR
# IMAGES_DIR: a folder of the shared 128 px JPEGs (at least 4,096); OUT_DIR: where results go.
# lesionssl and lightly must be importable (pip install -e ".[bench]", or PYTHONPATH=src plus the wheels).
set -eu
IMAGES=${1:-../shared/data/skin-lesions/images}
OUT=${2:-gpu-results}
mkdir -p "$OUT"
export LESIONSSL_CACHE=/tmp/lesionssl-gpu-cache
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)" | tee -a "$OUT/gpu.txt"

# 1. Batch augmentation on the GPU equals the CPU for the same parameters.
python3 -m pytest -q -p no:cacheprovider tests/test_augment.py tests/test_loss.py 2>&1 | tail -3 | tee "$OUT/tests.txt"

# 2. End to end on CUDA: Barlow Twins pretraining, bf16 mixed precision, channels_last.
mkdir -p /tmp/gpu-images && cp $(ls -d "$IMAGES"/*.jpg | head -1024) /tmp/gpu-images/
cat > /tmp/gpu-pretrain.yaml <<YAML
data: [/tmp/gpu-images]
out: /tmp/gpu-pretrain
backbone: resnet50
image_size: 128
batch_size: 128
epochs: 2
projector: [2048, 2048]
runtime: {precision: bf16-mixed, channels_last: true, accelerator: gpu, num_workers: 4}
tracking: {mlflow: false}
YAML
/usr/bin/time -f "pretrain wall %e s" python3 -m lesionssl pretrain --config /tmp/gpu-pretrain.yaml 2>&1 | tail -4 | tee "$OUT/pretrain.txt"
cp /tmp/gpu-pretrain/history.csv "$OUT/pretrain-history.csv"

# 3. Where a step's time goes (store reads + copy to the GPU, augmentation).
for w in 0 4; do
  python3 benchmarks/profile_data_path.py --device cuda --size 224 --workers $w --source "$IMAGES" --workdir /tmp/bench 2>/dev/null | tee -a "$OUT/profile.jsonl"
done

# 4. Throughput, ResNet-50 at 224 px, bf16: lesionssl vs the baseline on both image sets.
python3 benchmarks/bench_pretrain.py --device cuda --backbone resnet50 --size 224 --precision bf16-mixed --channels-last \
  --projector 8192,8192 --batch-size 128 --steps 10 --warmup 3 --baseline-workers 12 --source "$IMAGES" --workdir /tmp/bench 2>/dev/null | tee "$OUT/bench_pretrain.jsonl"
python3 benchmarks/bench_finetune.py --device cuda --backbone resnet50 --size 224 --precision bf16-mixed --channels-last \
  --batch-size 128 --steps 10 --warmup 3 --eval-images 4096 --baseline-workers 12 --source "$IMAGES" --workdir /tmp/bench 2>/dev/null | tee "$OUT/bench_finetune.jsonl"
