#!/usr/bin/env bash
# The detectors' pilot (PREREGISTRATION.md beside this file, §4): one V1 run per candidate
# mechanism on seed 100, at the controlled study's snapshot and settings plus the
# mechanism's flags, through the study's launcher (runs pilot_<mechanism>_v1_s100 beside
# the study's own, same snapshot, same resume rules).
#
#   bash experiments/detectors/pilot.sh COMMIT              # start or continue, in the background
#   bash experiments/detectors/pilot.sh COMMIT --status     # rounds done per run
#   bash experiments/detectors/pilot.sh COMMIT --collect benchmarks/detectors/pilot
#   bash experiments/detectors/pilot.sh COMMIT --foreground # the same, waiting for the lanes
#
# The mechanisms and their flags are defined here only. Environment: MECHANISMS (a subset,
# in order), SEED (100), LANES (2: lane i runs mechanisms i, i + LANES, ..., pinned to core
# i mod the cores), and whatever run_study.sh reads (STUDY_ROOT, PYTHON, RESTART_EVERY...).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
launcher=$here/../study/run_study.sh
die() { echo "error: $*" >&2; exit 2; }

# mechanism -> flags after the study's flag files (they win). Why each might game the
# score: PREREGISTRATION.md §4.
declare -A MECHANISM_FLAGS=(
  [overlap]='--weights=0.8,0.1,0.1'
  [fidelity]='--scorer=fidelity'
  [dose]='--epochs=3 --lr=1e-3'
  [strict]='--target_acceptance=0.2'
)
ALL='overlap fidelity dose strict'  # The pre-registration's order.
read -r -a mechanisms <<< "${MECHANISMS:-$ALL}"
for mechanism in "${mechanisms[@]}"; do
  [[ -n ${MECHANISM_FLAGS[$mechanism]+set} ]] \
    || die "unknown mechanism $mechanism (choose from $ALL)"
done
(( $# >= 1 )) || die "usage: pilot.sh COMMIT [--status | --collect DIR | --foreground]"
commit=$1 mode=${2:-}
[[ -z $mode || $mode == --status || $mode == --collect || $mode == --foreground \
   || $mode == --lane ]] \
  || die "unknown option $mode (choose --status, --collect DIR or --foreground)"
LANES=${LANES:-2}
(( LANES >= 1 )) || die "LANES must be >= 1"

study() {  # mechanism, launcher arguments...: the study's launcher for one pilot run
  local mechanism=$1; shift
  NAME_PREFIX="pilot_${mechanism}_" ARMS=v1 SEEDS="${SEED:-100}" LANES=1 \
    EXTRA_FLAGS="${MECHANISM_FLAGS[$mechanism]}" bash "$launcher" "$commit" "$@"
}

case $mode in
  --status|--collect)
    for mechanism in "${mechanisms[@]}"; do study "$mechanism" "$mode" "${@:3}"; done
    exit 0 ;;
  --lane)  # Internal: lane $3, already pinned; its mechanisms one after another.
    status=0
    for (( i = $3; i < ${#mechanisms[@]}; i += LANES )); do
      study "${mechanisms[$i]}" --lane 0 || status=1
    done
    exit $status ;;
esac

root=$(study "${mechanisms[0]}" --prepare)  # The snapshot, before any lane starts.
pids=()
for (( lane = 0; lane < LANES && lane < ${#mechanisms[@]}; lane++ )); do
  core=$(( lane % $(nproc) ))
  if [[ $mode == --foreground ]]; then
    CORE=$core taskset -c $core bash "$0" "$commit" --lane $lane & pids+=($!)
  else
    log=$root/logs/pilot_lane$lane.log
    CORE=$core nohup taskset -c $core bash "$0" "$commit" --lane $lane > "$log" 2>&1 &
    echo "pilot lane $lane: pid $! on core $core, log $log"
  fi
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
exit $status
