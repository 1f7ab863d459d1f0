#!/usr/bin/env bash
# The study's launcher: arms V1 (threshold), V2 (reproducibility), R (random_matched) x seeds
# 0, 1, 2, from a snapshot of one commit, in two lanes each pinned to one core.
#
#   bash experiments/study/run_study.sh COMMIT            # start (or continue) in the background
#   bash experiments/study/run_study.sh COMMIT --status   # rounds done per run
#   bash experiments/study/run_study.sh COMMIT --collect benchmarks/study2
#                                                        # copy each run's small files to commit
#   bash experiments/study/run_study.sh COMMIT --prepare # the snapshot only; prints its root
#   SMOKE=1 ARMS=r SEEDS=0 LANES=1 bash experiments/study/run_study.sh COMMIT --foreground
#                                                        # a tiny check of the launcher
#   NAME_PREFIX=pilot_overlap_ ARMS=v1 SEEDS=100 LANES=1 EXTRA_FLAGS="--weights=0.8,0.1,0.1" \
#       bash experiments/study/run_study.sh COMMIT       # other runs at the study's code
#
# COMMIT is snapshotted with `git worktree add --detach` into $STUDY_ROOT/src (outside this
# checkout), so later edits of the checkout never reach a running study; every run imports
# the snapshot's package. Settings live in one place: experiments/study/common.flags (shared)
# and <arm>.flags (the filter), passed with absl --flagfile from the snapshot. Runs go to
# $STUDY_ROOT/runs/<arm>_s<seed>, one log each in $STUDY_ROOT/logs/<arm>_s<seed>.log
# (appended). Every run is started with --resume_or_start: relaunching continues each
# run after its last completed round and skips finished ones. Lanes run under nohup and
# `taskset -c <lane>`, so they survive the shell that started them.
#
# Environment: STUDY_ROOT (default: <checkout's parent>/study-<short commit>), PYTHON (default:
# the checkout's .venv/bin/python), SEEDS ("0 1 2"), ARMS ("v1 r v2"), LANES (2),
# RESTART_EVERY (1: a fresh process after every completed round; 0: never),
# SMOKE=1 (--cycles=1 --tasks=2 --candidates=2 --eval_tasks=4, runs named smoke_*),
# NAME_PREFIX (runs and lane logs named <prefix><arm>_s<seed>, <prefix>lane<i>.log) and
# EXTRA_FLAGS (absl flags after the flag files, so they win; give the same ones on every
# relaunch: a resume with other settings is refused). With both, runs at the study's code
# and settings plus a change (the detectors' pilots) live beside the study's own.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
checkout=$(git -C "$here" rev-parse --show-toplevel)
die() { echo "error: $*" >&2; exit 2; }

(( $# >= 1 )) || die "usage: run_study.sh COMMIT [--status | --foreground]"
commit=$(git -C "$checkout" rev-parse --verify --quiet "$1^{commit}") \
  || die "$1 is not a commit of $checkout"
mode=${2:-}
[[ -z $mode || $mode == --status || $mode == --foreground || $mode == --lane \
   || $mode == --collect || $mode == --prepare ]] \
  || die "unknown option $mode (choose --status, --collect DIR, --prepare or --foreground)"
short=${commit:0:10}
root=${STUDY_ROOT:-$(dirname "$checkout")/study-$short}
PY=${PYTHON:-$checkout/.venv/bin/python}
# Plain words, not arrays: arrays are not exported, and the lanes re-read these.
read -r -a seeds <<< "${SEEDS:-0 1 2}"
read -r -a arms <<< "${ARMS:-v1 r v2}"
[[ -n ${STUDY_ROOT:-} ]] || export STUDY_ROOT=$root
LANES=${LANES:-2}
src=$root/src
smoke=${SMOKE:-0}
prefix=${NAME_PREFIX:-}$([[ $smoke == 1 ]] && echo smoke_ || true)
[[ $prefix =~ ^[A-Za-z0-9_.-]*$ ]] || die "NAME_PREFIX=$prefix: use letters, digits, . _ -"
read -r -a extra_flags <<< "${EXTRA_FLAGS:-}"
SMOKE_FLAGS=(--cycles=1 --tasks=2 --candidates=2 --eval_tasks=4)
[[ -x $PY ]] || die "no python at $PY (set PYTHON)"
(( LANES >= 1 )) || die "LANES must be >= 1"

# The runs in start order: the seeds in turn, each seed's arms together (paired by seed).
runs=()
for seed in "${seeds[@]}"; do
  for arm in "${arms[@]}"; do
    [[ -f $here/$arm.flags ]] || die "no settings for arm $arm ($here/$arm.flags)"
    runs+=("$arm $seed")
  done
done

rounds_done() {  # run dir -> completed rounds (0 when none)
  "$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["cycles_completed"])' \
      "$1/progress.json" 2>/dev/null || echo 0
}

cycles() {  # the study's rounds, from the flag files (the smoke run: 1)
  if [[ $smoke == 1 ]]; then echo 1; return; fi
  local given
  given=$(printf '%s\n' "${extra_flags[@]}" | sed -n 's/^--cycles=//p' | tail -1)
  if [[ -n $given ]]; then echo "$given"; return; fi
  sed -n 's/^--cycles=//p' "$src/experiments/study/common.flags" | tail -1
}

run_one() {  # arm seed
  local arm=$1 seed=$2 name="${prefix}$1_s$2" flags=() status=0
  [[ $smoke == 1 ]] && flags+=("${SMOKE_FLAGS[@]}")
  flags+=("${extra_flags[@]}")
  local log=$root/logs/$name.log run_dir=$root/runs/$name stalled=0 before
  if (( $(rounds_done "$run_dir") >= $(cycles) )); then
    echo "== $name already finished" | tee -a "$log"; return 0
  fi
  while true; do
    before=$(rounds_done "$run_dir") status=0
    echo "== $name start $(date -u +%FT%TZ) commit $commit core ${CORE:-any}" >> "$log"
    (cd "$src" && exec "$PY" experiments/self_improve.py \
        --flagfile="$src/experiments/study/common.flags" \
        --flagfile="$src/experiments/study/$arm.flags" \
        "${flags[@]}" --seed="$seed" --name="$name" --output="$root/runs" --resume_or_start) \
        >> "$log" 2>&1 &
    local pid=$! restarted=0
    # A run's memory grows with every round (BUILD_NOTES, Gotchas): after RESTART_EVERY
    # completed rounds it is stopped and resumed in a fresh process; resume gives the same
    # records as an uninterrupted run (tests/test_experiment.py), a restart costs the load.
    while kill -0 "$pid" 2> /dev/null; do
      sleep "${POLL_SECONDS:-20}"
      local now; now=$(rounds_done "$run_dir")
      if (( ${RESTART_EVERY:-1} > 0 && now - before >= ${RESTART_EVERY:-1} && now < $(cycles) )); then
        kill -TERM "$pid" 2> /dev/null; restarted=1; break
      fi
    done
    wait "$pid" || status=$?
    if (( restarted )); then
      echo "== $name restarts after round $(rounds_done "$run_dir") $(date -u +%FT%TZ)" >> "$log"
      stalled=0; continue
    fi
    (( status == 0 )) && break
    echo "== $name FAILED $(date -u +%FT%TZ) (exit $status)" >> "$log"
    # Killed (137: SIGKILL, e.g. the kernel out of memory): resume from the last completed
    # round, as long as the attempts still complete rounds (at most 2 attempts without one).
    (( $(rounds_done "$run_dir") > before )) && stalled=0 || stalled=$(( stalled + 1 ))
    (( status == 137 && stalled < 2 )) || return 1
    echo "== $name resumes after exit $status" >> "$log"
  done
  echo "== $name done $(date -u +%FT%TZ)" >> "$log"
}

lane() {  # lane index: runs index, index + LANES, ...
  local index=$1 status=0
  for (( i = index; i < ${#runs[@]}; i += LANES )); do
    # shellcheck disable=SC2086
    run_one ${runs[$i]} || status=1
  done
  return $status
}

if [[ $mode == --lane ]]; then  # Internal: one lane, already pinned and under nohup.
  CORE=${CORE:-$3} lane "$3"; exit $?
fi

if [[ $mode == --status ]]; then
  for run in "${runs[@]}"; do
    read -r arm seed <<< "$run"
    name="${prefix}${arm}_s$seed"
    echo "$name $(rounds_done "$root/runs/$name")/$( [[ -d $src ]] && cycles || echo '?') rounds"
  done
  exit 0
fi

if [[ $mode == --collect ]]; then  # What is committed: no checkpoints, no event files.
  dest=${3:-}
  [[ -n $dest ]] || die "--collect needs a destination directory (e.g. benchmarks/study2)"
  for run in "${runs[@]}"; do
    read -r arm seed <<< "$run"
    name="${prefix}${arm}_s$seed"
    [[ -f $root/runs/$name/progress.json ]] || continue
    mkdir -p "$dest/$name"
    cp -r "$root/runs/$name/progress.json" "$root/runs/$name/rows" "$dest/$name/"
    for extra in run_config.json report.md goodhart.png self_improvement_results.json; do
      [[ -f $root/runs/$name/$extra ]] && cp "$root/runs/$name/$extra" "$dest/$name/"
    done
    # The log without its progress bars (carriage-return redraws).
    [[ -f $root/logs/$name.log ]] && tr '\r' '\n' < "$root/logs/$name.log" \
      | grep -v -E '^\s*$|it/s\]|row/s\]|batch/s\]' > "$dest/$name/run.log" || true
    echo "$name: $(rounds_done "$root/runs/$name") rounds -> $dest/$name"
  done
  exit 0
fi

# The snapshot: created once; a relaunch must name the same commit.
if [[ -d $src ]]; then
  have=$(git -C "$src" rev-parse HEAD)
  [[ $have == "$commit" ]] || die "$src holds $have, not $commit: choose another STUDY_ROOT"
else
  mkdir -p "$root"
  git -C "$checkout" worktree add --detach "$src" "$commit" > /dev/null
fi
mkdir -p "$root/runs" "$root/logs"
if [[ $mode == --prepare ]]; then  # For other launchers (the detectors' pilot): the root.
  echo "$root"; exit 0
fi
echo "study of $commit in $root: ${#runs[@]} runs in $LANES lane(s) (python $PY)"

if [[ $mode == --foreground ]]; then
  status=0
  for (( lane_index = 0; lane_index < LANES; lane_index++ )); do
    taskset -c $(( lane_index % $(nproc) )) bash "$0" "$commit" --lane "$lane_index" & pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || status=1; done
  exit $status
fi
for (( lane_index = 0; lane_index < LANES; lane_index++ )); do
  nohup taskset -c $(( lane_index % $(nproc) )) bash "$0" "$commit" --lane \
      "$lane_index" > "$root/logs/${prefix}lane$lane_index.log" 2>&1 &
  echo "lane $lane_index: pid $! on core $(( lane_index % $(nproc) )), log $root/logs/${prefix}lane$lane_index.log"
done
echo "follow: bash $0 $commit --status"
