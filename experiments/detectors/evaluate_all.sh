#!/usr/bin/env bash
# The detectors' registered evaluation (PREREGISTRATION.md beside this file, §4-§10) on the
# committed runs, as one command:
#
#   bash experiments/detectors/evaluate_all.sh [OUT_DIR]     # OUT_DIR benchmarks/detectors
#
#  1. δ: read from OUT_DIR/delta.json (pilot_summary.py on the study's nine runs, §3).
#  2. eval: positives A (study2/v1_s0-2) and B (study2/r_s0-2) against the negatives (the
#     study's V2 runs and the complete L runs, negatives/low_v1_s*), every detector.
#  3. eval_pilot: the pilot's complete one-seed runs against the same negatives.
#  4. §8, when L's seeds 0-2 are complete: limits tuned on A with L 0-2, reported on B with L
#     3-5 and V2 (and the same with A and B swapped), and on the pilot's runs apart
#     (pilot_tuned_on_*); skipped with a line until then.
#  5. §9, when rollback twins are complete (rollback/rollback_{v1,r}_s*): rollback.py
#     against the study's warn runs of the same arm and seed; README shows its table and plot.
#  6. README's block (readme_section.py), its note naming what is still pending.
#  7. Exploratory, added after the registration (its Deviations): the label-free signals in
#     the collapse direction (collapse_limits.json beside this file), on every run and
#     through §8's split, written as explore_collapse*; README shows them apart.
# A run counts once it has CYCLES (10) rounds. Environment: PYTHON, CYCLES, STUDY (the
# study's collected runs, benchmarks/study2), README (README.md).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
checkout=$(git -C "$here" rev-parse --show-toplevel)
die() { echo "error: $*" >&2; exit 2; }
out=${1:-benchmarks/detectors}
PY=${PYTHON:-$checkout/.venv/bin/python}
cycles=${CYCLES:-10}
[[ -x $PY ]] || die "no python at $PY (set PYTHON)"
cd "$checkout"
study=${STUDY:-benchmarks/study2} readme=${README:-README.md}

complete() {  # run dirs... -> those with >= $cycles completed rounds, comma-separated
  local done=()
  for run in "$@"; do
    [[ -f $run/progress.json ]] || continue
    n=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["cycles_completed"])' \
          "$run/progress.json")
    (( n >= cycles )) && done+=("$run")
  done
  (IFS=,; echo "${done[*]}")
}

[[ -f $out/delta.json ]] || die "$out/delta.json is missing: run pilot_summary.py on the study's runs first (PREREGISTRATION §3)"
delta=$("$PY" -c 'import json,sys; print(repr(json.load(open(sys.argv[1]))["delta"]))' "$out/delta.json")
A=$(complete $study/v1_s0 $study/v1_s1 $study/v1_s2)
B=$(complete $study/r_s0 $study/r_s1 $study/r_s2)
V2=$(complete $study/v2_s0 $study/v2_s1 $study/v2_s2)
[[ -n $A && -n $B ]] || die "the study's V1 and R runs are not all complete in $study"
L_tune=$(complete $out/negatives/low_v1_s{0,1,2})
L_report=$(complete $out/negatives/low_v1_s{3,4,5})
L_all=$(complete $out/negatives/low_v1_s{0,1,2,3,4,5})
pilot=$(complete $out/pilot/pilot_*_v1_s100)
count() { tr ',' '\n' <<< "$1" | grep -c . || true; }  # entries of a comma list
join() { local IFS=,; local parts=(); for p in "$@"; do [[ -n $p ]] && parts+=("$p"); done; echo "${parts[*]}"; }
negatives=$(join "$V2" "$L_all")
evaluate=("$PY" experiments/detectors/evaluate.py --delta_file="$out/delta.json" --horizon=2)
pending=()

"${evaluate[@]}" --positive="$(join "$A" "$B")" --negative="$negatives" --output="$out/eval" >/dev/null
echo "written: $out/eval.{md,json}, $out/eval_runs.png"
if [[ -n $pilot ]]; then
  "${evaluate[@]}" --positive="$pilot" --negative="$negatives" --output="$out/eval_pilot" >/dev/null
  echo "written: $out/eval_pilot.{md,json}"
fi
(( $(count "$L_all") == 6 )) || pending+=("L: $(count "$L_all") of 6 runs complete")

held_out() {  # PREFIX [LIMITS]: §8's split (tune on A, report on B; the swap) -> JSONs
  local prefix=$1 table=${2:-} tuned_on reported_on
  for pair in "A B" "B A"; do
    read -r tuned_on reported_on <<< "$pair"
    "$PY" experiments/detectors/tune_limits.py --positive="${!tuned_on}" --negative="$L_tune" \
      --delta="$delta" ${table:+--limits="$table"} --output="$out/${prefix}tuned_on_$tuned_on.json" >/dev/null
    "${evaluate[@]}" --positive="${!reported_on}" --negative="$(join "$L_report" "$V2")" \
      --limits="$out/${prefix}tuned_on_$tuned_on.json" \
      --output="$out/${prefix}heldout_${reported_on}_tuned_on_$tuned_on" >/dev/null
    echo "$out/${prefix}heldout_${reported_on}_tuned_on_$tuned_on.json"
    if [[ -n $pilot && -z $prefix ]]; then  # §8: the pilot's runs under each tuned table.
      "${evaluate[@]}" --positive="$pilot" --negative="$(join "$L_report" "$V2")" \
        --limits="$out/${prefix}tuned_on_$tuned_on.json" \
        --output="$out/${prefix}pilot_tuned_on_$tuned_on" >/dev/null
    fi
  done
}

tuned=()
if (( $(count "$L_tune") == 3 )); then
  written=$(held_out '')
  mapfile -t tuned <<< "$written"
  echo "written: $out/tuned_on_{A,B}.{json,md}, ${tuned[*]} (and .md)"
else
  pending+=("tuned limits (§8): wait for L's seeds 0-2")
fi

# 7. Exploratory (PREREGISTRATION, Deviations, 2026-12-07): the signals in the collapse
# direction, on every run and through §8's split; shown apart from the registered results.
collapse=experiments/detectors/collapse_limits.json
"${evaluate[@]}" --positive="$(join "$A" "$B")" --negative="$negatives" --limits="$collapse" \
  --output="$out/explore_collapse" >/dev/null
explored=("$out/explore_collapse.json")
if (( $(count "$L_tune") == 3 )); then
  written=$(held_out explore_collapse_ "$collapse")
  mapfile -t -O 1 explored <<< "$written"
fi
echo "written (exploratory): ${explored[*]} (and .md)"

warn=() rollback=() rollback_json=
for arm in v1 r; do
  for seed in 0 1 2; do
    twin=$(complete "$out/rollback/rollback_${arm}_s$seed")
    [[ -n $twin ]] && { warn+=("$study/${arm}_s$seed"); rollback+=("$twin"); }
  done
done
if (( ${#rollback[@]} )); then
  "$PY" experiments/detectors/rollback.py --warn="$(join "${warn[@]}")" \
    --rollback="$(join "${rollback[@]}")" --output="$out/rollback" >/dev/null
  rollback_json=$out/rollback.json
  echo "written: $out/rollback.{md,json,png}"
fi
(( ${#rollback[@]} == 6 )) || pending+=("rollback pairs (§9): ${#rollback[@]} of 6 complete")

pilot_tables=()  # The pilot's runs (README shows them apart, without verdicts): default, tuned.
if [[ -n $pilot ]]; then
  pilot_tables+=("$out/eval_pilot.json")
  (( ${#tuned[@]} )) && pilot_tables+=("$out/pilot_tuned_on_A.json" "$out/pilot_tuned_on_B.json")
fi

note="Computed $(date -u '+%Y-%m-%d') by \`bash experiments/detectors/evaluate_all.sh\` at $(git rev-parse --short HEAD); tables, the pilot's runs and the rollback pairs: [$out/]($out/)."
(( ${#pending[@]} )) && note+=" Still running, so not in these numbers: $(IFS=';'; echo "${pending[*]}" | sed 's/;/; /g')."
"$PY" experiments/detectors/readme_section.py "$out/eval.json" --readme="$readme" \
  --tuned="$(join "${tuned[@]}")" --exploratory="$(join "${explored[@]}")" \
  --pilot="$(join "${pilot_tables[@]}")" --rollback="$rollback_json" --note="$note" >/dev/null
echo "written: README.md's detectors block"
