#!/usr/bin/env bash
# The sampler benchmark on a lent GPU, in one call (see BUILD_NOTES.md "GPU").
# Expects the carried wheels in .whl (flax 0.12.12 for the image's jax 0.11.2, gguf) and
# writes logs and JSON under $OUT. Usage on the device: bash benchmarks/gpu_run.sh
set -uo pipefail
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c 'import jax, flax, torch, transformers; print(jax.__version__, flax.__version__,
  torch.__version__, transformers.__version__, jax.devices())' | tee -a "$OUT/gpu.txt"
day=$(date +%F)
tag=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | awk "{print tolower(\$2)}")
bench() {  # name, extra flags...
  local name=$1; shift
  timeout 150 python3 experiments/benchmark_sampler.py --dtype=bfloat16 --batches=1,150 \
    --output_json="$OUT/sampler_${name}_${day}.json" "$@" 2>&1 | tee "$OUT/${name}.log" \
    | grep -v '^I[0-9]'
}
bench mistral7b_${tag} --shape=mistral-7b --skip_prefix
bench smollm2_${tag} --shape=smollm2-135m
