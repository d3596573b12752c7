#!/bin/sh
# After `diffeosense reproduce all --scale medium --out OUT` finished (log in LOG): copy its
# report, tables and figures here, re-render the report with the quick claims beside, and
# write the summaries. Usage: sh docs/results/reproduce_medium/finish.sh OUT LOG
set -e
OUT=$1; LOG=$2; HERE=$(dirname "$0"); PY=${PYTHON:-.venv/bin/python}; DS=${DIFFEOSENSE:-.venv/bin/diffeosense}
cp "$OUT/reproduce.json" "$HERE/reproduce_first_run.json"
OMP_NUM_THREADS=1 "$DS" reproduce all --scale medium --workers 2 --out "$OUT" \
    --compare docs/results/reproduce_quick --no-progress
for d in noisy_training layerwise filter_spectra; do
    rm -rf "${HERE:?}/$d"; cp -r "$OUT/$d" "$HERE/$d"
done
cp "$OUT/report.html" "$OUT/reproduce.json" "$HERE/"
"$PY" "$HERE/histories.py" "$OUT" > "$HERE/run_histories.csv" 2> "$HERE/plateaus.txt"
"$PY" "$HERE/costs.py" "$OUT" "$LOG" > "$HERE/costs.md"
"$PY" "$HERE/compare.py" > "$HERE/claims.md"
