#!/usr/bin/env bash
# The detectors' positive controls (PREREGISTRATION.md beside this file, §4): V1 runs under a
# mechanism that may make the loop game its score, at the controlled study's snapshot and
# settings plus the mechanism's flags, through the study's launcher (beside the study's own
# runs: same snapshot, same resume rules).
#
#   bash experiments/detectors/positives.sh COMMIT              # start or continue, in the background
#   bash experiments/detectors/positives.sh COMMIT --status     # rounds done per run
#   bash experiments/detectors/positives.sh COMMIT --collect benchmarks/detectors/pilot
#   bash experiments/detectors/positives.sh COMMIT --foreground # the same, waiting for the lanes
#
# STAGE=pilot (the default): one run per mechanism on seed 100, pilot_<mechanism>_v1_s100.
# STAGE=positives: the registered mechanisms (MECHANISMS) on seeds 0 1 2, the registered δ as
# the monitor's tolerance (DELTA, required), positive_<mechanism>_v1_s<seed>; with
# ON_GOODHART=rollback their twins that roll back, positive_<mechanism>_rollback_v1_s<seed>
# (the same flags but --on_goodhart, as rollback_pairs.py pairs them).
#
# The mechanisms and their flags are defined here only. Environment: STAGE, MECHANISMS (a
# subset, in order), SEEDS (the stage's), DELTA, ON_GOODHART (warn), LANES (2: lane i runs
# mechanisms i, i + LANES, ..., each one's seeds in turn, pinned to core i mod the cores),
# and whatever run_study.sh reads (STUDY_ROOT, PYTHON, RESTART_EVERY...).
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
STAGE=${STAGE:-pilot} ON_GOODHART=${ON_GOODHART:-warn}
case $STAGE in
  pilot) seeds=${SEEDS:-100} prefix=pilot_ stage_flags='' ;;
  positives)
    [[ ${DELTA:-} =~ ^[0-9]*\.?[0-9]+$ ]] && awk -v d="$DELTA" 'BEGIN { exit !(d > 0) }' \
      || die "STAGE=positives needs DELTA, the registered δ (a number > 0), got '${DELTA:-}'"
    seeds=${SEEDS:-0 1 2} prefix=positive_ stage_flags="--goodhart_tolerance=$DELTA" ;;
  *) die "unknown STAGE $STAGE (choose pilot or positives)" ;;
esac
twin=''  # rollback_ in the names of the rollback twins.
case $ON_GOODHART in
  warn) ;;
  rollback)
    [[ $STAGE == positives ]] || die "ON_GOODHART=rollback is for STAGE=positives (the pairs)"
    stage_flags+=' --on_goodhart=rollback' twin=rollback_ ;;
  *) die "unknown ON_GOODHART $ON_GOODHART (choose warn or rollback)" ;;
esac
(( $# >= 1 )) || die "usage: positives.sh COMMIT [--status | --collect DIR | --foreground]"
commit=$1 mode=${2:-}
[[ -z $mode || $mode == --status || $mode == --collect || $mode == --foreground \
   || $mode == --lane ]] \
  || die "unknown option $mode (choose --status, --collect DIR or --foreground)"
LANES=${LANES:-2}
(( LANES >= 1 )) || die "LANES must be >= 1"

study() {  # mechanism, launcher arguments...: the study's launcher for one mechanism's runs
  local mechanism=$1; shift
  NAME_PREFIX=${prefix}${mechanism}_$twin ARMS=v1 SEEDS=$seeds LANES=1 \
    EXTRA_FLAGS="${MECHANISM_FLAGS[$mechanism]} $stage_flags" bash "$launcher" "$commit" "$@"
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
    log=$root/logs/${prefix}${twin}lane$lane.log
    CORE=$core nohup taskset -c $core bash "$0" "$commit" --lane $lane > "$log" 2>&1 &
    echo "$STAGE lane $lane: pid $! on core $core, log $log"
  fi
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
exit $status
