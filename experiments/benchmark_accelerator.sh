#!/usr/bin/env bash
# The accelerator benchmark (issue 12): one H100/H200, no network, no downloads, < 5 min.
#
#   bash experiments/benchmark_accelerator.sh     # JSON and tables in $OUT (benchmarks/accelerator)
#
# Random weights of real shapes (time like real ones; every row runs every step):
#   1. decode ms/step of SmolLM2-135M and Mistral-7B shapes, bfloat16, batch 1 and 150, ours
#      and transformers' `generate` on the same card when torch is installed there, the memory
#      bandwidth measured in the run and the ms/step it allows, peak device memory;
#   2. the same for ours with int8 weight-only block projections (`--quantize=int8`);
#   3. one round of the original's size (50 tasks x 3 = 150 rows: 100 + 50 + 5 decode steps for
#      BEFORE and again for AFTER) at the Mistral-7B shape, PROJECTED from (1) and (2)'s measured
#      ms/step at batch 150 (decode only: prefill and training are not in it), and x 10 cycles.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-benchmarks/accelerator}
SHAPES=${SHAPES:-"smollm2-135m mistral-7b"}
BATCHES=${BATCHES:-1,150}
mkdir -p "$OUT"
for shape in $SHAPES; do
  for mode in none int8; do
    extra=()
    [[ $mode == int8 ]] && extra=(--skip_transformers)  # transformers: once per shape.
    "$PY" experiments/benchmark_sampler.py --shape="$shape" --dtype=bfloat16 \
        --batches="$BATCHES" --quantize="$mode" --skip_prefix --new_tokens=32 --repeats=3 \
        --output_json="$OUT/${shape}_${mode}.json" "${extra[@]}" | tee "$OUT/${shape}_${mode}.txt"
  done
done
"$PY" - "$OUT" $SHAPES <<'PY'
import json, pathlib, sys
out, shapes = pathlib.Path(sys.argv[1]), sys.argv[2:]
STEPS_PER_ROUND = 2 * (100 + 50 + 5)  # BEFORE and AFTER: generate, invert, rate.
lines = []
for shape in shapes:
  for mode in ('none', 'int8'):
    results = json.loads((out / f'{shape}_{mode}.json').read_text())
    big = max(results['decode'], key=lambda row: row['batch'])
    ms = big['ours']['ms_per_step']
    round_s = STEPS_PER_ROUND * ms / 1000
    lines.append(f'{shape} {mode}: {ms:.2f} ms/step at batch {big["batch"]}: a 50 x 3 round '
                 f'{round_s:.1f} s of decode, 10 cycles {10 * round_s / 60:.1f} min (projected)')
text = '\n'.join(lines)
(out / 'projection.txt').write_text(text + '\n')
print(text)
PY
