#!/usr/bin/env bash
# The study's pre-registered analysis (PREREGISTRATION.md beside this file: Analysis, and the
# command spelled out in its Changes), on the committed runs once all of them are complete:
# the snapshot's compare_runs.py with R's runs first (Delta(V1 - R), Delta(V2 - R)), then
# with V2's first (Delta(V1 - V2)), the last three evaluations averaged per task, 10,000
# resamples; then this checkout's results_section.py writes the results block of the page.
#
#   bash experiments/study/analyze.sh COMMIT [RUNS_DIR] [PAGE] [SUMMARY]
#        # COMMIT: the study's snapshot commit; RUNS_DIR benchmarks/study2; PAGE
#        # benchmarks/RESULTS.md; SUMMARY README.md (its short block)
#
# Refuses (one line, nothing written) while a run is missing or has fewer than CYCLES (10)
# rounds. Environment: PYTHON, STUDY_ROOT (as run_study.sh), CYCLES, RESAMPLES.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
checkout=$(git -C "$here" rev-parse --show-toplevel)
die() { echo "error: $*" >&2; exit 2; }

(( $# >= 1 )) || die "usage: analyze.sh COMMIT [RUNS_DIR] [PAGE] [SUMMARY]"
commit=$(git -C "$checkout" rev-parse --verify --quiet "$1^{commit}") \
  || die "$1 is not a commit of $checkout"
runs=${2:-benchmarks/study2} page=${3:-benchmarks/RESULTS.md} summary=${4:-README.md}
PY=${PYTHON:-$checkout/.venv/bin/python}
cycles=${CYCLES:-10} resamples=${RESAMPLES:-10000}
[[ -x $PY ]] || die "no python at $PY (set PYTHON)"

cd "$checkout"
r=() v1=() v2=()
for seed in 0 1 2; do r+=("$runs/r_s$seed") v1+=("$runs/v1_s$seed") v2+=("$runs/v2_s$seed"); done
for run in "${r[@]}" "${v1[@]}" "${v2[@]}"; do
  done_rounds=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["cycles_completed"])' \
                "$run/progress.json" 2>/dev/null) || die "$run has no progress.json: collect the runs first"
  (( done_rounds >= cycles )) \
    || die "$run has $done_rounds of $cycles rounds: the analysis waits for every run"
done

src=$(bash "$here/run_study.sh" "$commit" --prepare)/src  # The snapshot's code computes.
compare=("$PY" "$src/experiments/compare_runs.py" --last_rounds=3 --resamples="$resamples")
"${compare[@]}" "${r[@]}" "${v1[@]}" "${v2[@]}" --output="$runs/compare"
"${compare[@]}" "${v2[@]}" "${v1[@]}" "${r[@]}" --output="$runs/compare_v2_first"
"$PY" experiments/results_section.py "$runs/compare.json" "$runs/compare_v2_first.json" \
  --readme="$page" --summary="$summary" \
  --note="Computed $(date -u '+%Y-%m-%d %H:%M') UTC by \`bash experiments/study/analyze.sh ${commit:0:7}\` (the snapshot's compare_runs.py; this page's block by results_section.py at $(git rev-parse --short HEAD))."
