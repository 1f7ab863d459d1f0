#!/usr/bin/env bash
# The detectors' registered runs in their registered order (PREREGISTRATION.md beside this
# file, §5, §9, "Order of the runs"), from the study's snapshot, two lanes pinned to one core
# each; every run resumable, so the same command continues them:
#
#   bash experiments/detectors/registered_runs.sh COMMIT             # start or continue, background
#   bash experiments/detectors/registered_runs.sh COMMIT --status    # rounds done per run
#   bash experiments/detectors/registered_runs.sh COMMIT --collect   # into benchmarks/detectors/
#
# Each lane runs, in turn: L (`low_v1_s<seed>`: V1 at a fifth of the dose, --tasks=10, seeds
# 0-5), the rollback twins of A and B (`rollback_{v1,r}_s<seed>`: --on_goodhart=rollback at
# the registered δ, read from benchmarks/detectors/delta.json, seeds 0-2), then the pilot's
# remaining runs (positives.sh). --collect copies them to negatives/, rollback/ and pilot/.
# Environment: whatever run_study.sh reads (STUDY_ROOT, PYTHON, RESTART_EVERY...).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
checkout=$(git -C "$here" rev-parse --show-toplevel)
launcher=$here/../study/run_study.sh
die() { echo "error: $*" >&2; exit 2; }

(( $# >= 1 )) || die "usage: registered_runs.sh COMMIT [--status | --collect]"
commit=$1 mode=${2:-}
[[ -z $mode || $mode == --status || $mode == --collect || $mode == --lane ]] \
  || die "unknown option $mode (choose --status or --collect)"
PY=${PYTHON:-$checkout/.venv/bin/python}
out=$checkout/benchmarks/detectors
[[ -f $out/delta.json ]] || die "$out/delta.json is missing: the registered δ (PREREGISTRATION §3)"
delta=$("$PY" -c 'import json,sys; print(repr(json.load(open(sys.argv[1]))["delta"]))' \
          "$out/delta.json")

stage() {  # stage name, launcher arguments...: run_study.sh with the stage's runs
  local name=$1; shift
  case $name in
    low) NAME_PREFIX=low_ ARMS=v1 SEEDS='0 1 2 3 4 5' EXTRA_FLAGS='--tasks=10' \
           LANES=2 bash "$launcher" "$commit" "$@" ;;
    rollback) NAME_PREFIX=rollback_ ARMS='v1 r' SEEDS='0 1 2' LANES=2 \
           EXTRA_FLAGS="--on_goodhart=rollback --goodhart_tolerance=$delta" \
           bash "$launcher" "$commit" "$@" ;;
  esac
}

case $mode in
  --status)
    stage low --status; stage rollback --status
    bash "$here/positives.sh" "$commit" --status ;;
  --collect)
    stage low --collect "$out/negatives"; stage rollback --collect "$out/rollback"
    bash "$here/positives.sh" "$commit" --collect "$out/pilot" ;;
  --lane)  # Internal: lane $3, already pinned and under nohup; the stages in turn.
    status=0
    stage low --lane "$3" || status=1
    stage rollback --lane "$3" || status=1
    LANES=2 bash "$here/positives.sh" "$commit" --lane "$3" || status=1
    exit $status ;;
  '')
    root=$(stage low --prepare)  # The snapshot, before any lane starts.
    for lane in 0 1; do
      core=$(( lane % $(nproc) ))
      log=$root/logs/registered_lane$lane.log
      CORE=$core nohup taskset -c $core bash "$0" "$commit" --lane $lane >> "$log" 2>&1 &
      echo "lane $lane: pid $! on core $core, log $log"
    done ;;
esac
