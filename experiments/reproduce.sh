#!/usr/bin/env bash
# The reproduction study: V1 (threshold) vs V2 (reproducibility) on the embedded model,
# the same seeds for both, 8 rounds each; resumable (rerunning continues every run where it
# stopped, and skips finished ones), then compare_runs over all of them.
#
#   bash experiments/reproduce.sh            # runs under runs/study_*, results in benchmarks/
#
# Settings and why (chosen before any study result was seen; BUILD_NOTES "The study"):
#   --tasks=16 --candidates=3   48 rows a phase: ~29 training examples a round at 60 %
#                               acceptance; estimated 4-5 min a round on this quiet CPU
#                               (3.5-4 h for 48 rounds: measure one round first; 24 x 3,
#                               which showed the effect in 3 rounds, costs ~1.5x more).
#   --threshold=$THRESHOLD      round-1 acceptance near the original's 60.7 %: the 40th
#                               percentile of the base model's reconstruction scores (0.16, from
#                               benchmarks/correlation.json: 549 samples, T 0.7, 100 tokens;
#                               override with THRESHOLD=).
#   --max_new_tokens=100        the original's budget (flag spam needs room to show).
#   --eval_split=small          36 held-out tasks (4 per tool) every round: ~40 s.
#   --on_goodhart=warn          the gold monitor marks, never changes, a study run.
#   V2 at the author's settings (m=2, similarity 0.6, weights 0.6/0.4).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
THRESHOLD=${THRESHOLD:-0.16}
SEEDS=${SEEDS:-"0 1 2"}
CYCLES=${CYCLES:-8}
COMMON=(--cycles="$CYCLES" --tasks=16 --candidates=3 --threshold="$THRESHOLD"
        --max_new_tokens=100 --eval_split=small --on_goodhart=warn --resume)
dirs=()
for seed in $SEEDS; do
  for filter in threshold reproducibility; do
    name="study_${filter}_s${seed}"
    echo "== $name ($(date))"
    "$PY" experiments/self_improve.py "${COMMON[@]}" --filter="$filter" --seed="$seed" \
        --name="$name"
    dirs+=("runs/$name")
  done
done
mkdir -p benchmarks/study
"$PY" experiments/compare_runs.py "${dirs[@]}" --output=benchmarks/study/compare
for d in "${dirs[@]}"; do  # Small results only: no checkpoints.
  mkdir -p "benchmarks/study/$(basename "$d")"
  cp "$d/progress.json" "$d/report.md" "$d/goodhart.png" "benchmarks/study/$(basename "$d")/"
done
echo "study done ($(date)): benchmarks/study/compare.md"
