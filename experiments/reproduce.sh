#!/usr/bin/env bash
# The reproduction study: V1 (threshold) vs V2 (reproducibility) on the embedded model,
# the same seeds for both, 8 rounds each, plus one V1 seed rerun with the monitor on
# rollback; resumable (rerunning continues every run where it stopped and skips finished
# ones), then compare_runs over the study's runs.
#
#   bash experiments/reproduce.sh            # runs under runs/study_*, results in benchmarks/study/
#   bash experiments/reproduce.sh --collect  # no runs: compare the finished ones, copy the
#                                            # small files of all (a study still under way)
#
# Settings and why (BUILD_NOTES "The study's settings"):
#   --tasks=8 --candidates=3    24 rows a phase. Chosen on wall time alone: one probe round at
#                               16 x 3 took 487 s on this CPU (2026-12-02), so 48 rounds would
#                               take ~6 h; 24 rows costs about half a round (decode time grows
#                               with the rows in a batch here). ~15 training examples a round
#                               at 60 % acceptance, ~120 over a run.
#   --threshold=$THRESHOLD      round-1 acceptance near the original's 60.7 %: the 40th
#                               percentile of the base model's reconstruction scores (0.16, from
#                               benchmarks/correlation.json: 549 samples, T 0.7, 100 tokens;
#                               fixed 2026-12-01 before any study run; override with THRESHOLD=).
#   --max_new_tokens=100        the original's budget (flag spam needs room to show).
#   --eval_split=small          36 held-out tasks (4 per tool) every round, greedy.
#   --on_goodhart=warn          the gold monitor marks, never changes, a study run; the extra
#                               run study_threshold_s${ROLLBACK_SEED}_rollback is that seed's V1
#                               with rollback (seed 1: the committed seed 0 runs were made on an
#                               earlier machine whose float rounding differs, BUILD_NOTES).
#   V2 at the author's settings (m=2, similarity 0.6, weights 0.6/0.4).
#   LANES=2                     runs go in two parallel lanes, each pinned to one core when
#                               `taskset` exists: 1.38x the throughput of one two-thread process
#                               on this 2-core CPU (measured 2026-12-02, 24-row generations).
#                               Results do not depend on it: every run is its own process.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
THRESHOLD=${THRESHOLD:-0.16}
SEEDS=(${SEEDS:-0 1 2})
CYCLES=${CYCLES:-8}
ROLLBACK_SEED=${ROLLBACK_SEED:-1}
LANES=${LANES:-2}
COMMON=(--cycles="$CYCLES" --tasks=8 --candidates=3 --threshold="$THRESHOLD"
        --max_new_tokens=100 --eval_split=small --resume_or_start)

# The runs in the order they are started: V1 and V2 alternate so that every seed finished
# early has both filters; the monitored rerun comes last.
runs=()
for seed in "${SEEDS[@]}"; do
  if (( seed % 2 )); then order=(reproducibility threshold); else order=(threshold reproducibility); fi
  for filter in "${order[@]}"; do runs+=("$filter $seed warn"); done
done
runs+=("threshold $ROLLBACK_SEED rollback")

run_one() {  # filter seed on_goodhart
  local filter=$1 seed=$2 action=$3 name="study_$1_s$2"
  [[ $action == warn ]] || name="${name}_$action"
  mkdir -p runs
  echo "== $name start ($(date -u +%FT%TZ))"
  "$PY" experiments/self_improve.py "${COMMON[@]}" --filter="$filter" --seed="$seed" \
      --on_goodhart="$action" --name="$name" > "runs/$name.log" 2>&1 \
    || { echo "== $name FAILED (see runs/$name.log)"; return 1; }
  echo "== $name done ($(date -u +%FT%TZ))"
}

lane() {  # lane index: runs lane, lane + LANES, ...; the lane's processes share one core
  local index=$1
  if command -v taskset > /dev/null && (( LANES > 1 )); then
    taskset -cp $(( index % $(nproc) )) "$BASHPID" > /dev/null
  fi
  for (( i = index; i < ${#runs[@]}; i += LANES )); do
    # shellcheck disable=SC2086
    run_one ${runs[$i]}
  done
}

rounds_done() {  # run dir -> completed rounds (0 when none)
  "$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["cycles_completed"])' \
      "$1/progress.json" 2>/dev/null || echo 0
}

collect() {  # compare_runs over the runs that finished, small files of every run
  local finished=() rollback="runs/study_threshold_s${ROLLBACK_SEED}_rollback" d
  mkdir -p benchmarks/study
  for seed in "${SEEDS[@]}"; do
    for d in "runs/study_threshold_s$seed" "runs/study_reproducibility_s$seed"; do
      (( $(rounds_done "$d") >= CYCLES )) && finished+=("$d")
    done
  done
  (( ${#finished[@]} )) && "$PY" experiments/compare_runs.py "${finished[@]}" \
      --output=benchmarks/study/compare
  if (( $(rounds_done "$rollback") >= CYCLES )); then
    "$PY" experiments/compare_runs.py "runs/study_threshold_s$ROLLBACK_SEED" "$rollback" \
        --differ=on_goodhart --output=benchmarks/study/monitored
  fi
  for d in runs/study_*/; do  # Small files only: no checkpoints.
    d=${d%/}
    [[ -f $d/progress.json ]] || continue
    mkdir -p "benchmarks/study/$(basename "$d")"
    cp "$d/progress.json" "benchmarks/study/$(basename "$d")/"
    for f in report.md goodhart.png; do [[ -f $d/$f ]] && cp "$d/$f" "benchmarks/study/$(basename "$d")/"; done
  done
  echo "collected ($(date -u +%FT%TZ)): ${#finished[@]} finished run(s) compared in benchmarks/study/compare.md"
}

if [[ ${1:-} == --collect ]]; then collect; exit 0; fi

start=$(date +%s)
pids=()
for (( lane_index = 0; lane_index < LANES; lane_index++ )); do
  lane "$lane_index" & pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
(( status == 0 )) || { echo "some runs failed; rerun this script to continue them"; exit 1; }
echo "all runs done in $(( ($(date +%s) - start) / 60 )) min this invocation"

collect
echo "study done ($(date -u +%FT%TZ))"
