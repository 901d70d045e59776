#!/usr/bin/env bash
# The digits demo (what `make demo` runs): build the zoo's digits models, evaluate each on
# every framework it exists for at batch sizes 1 and 64, print the comparison and write
# out/report.html. Everything it writes is under out/; run it again and the evaluations
# already stored are kept (`forgeml eval matrix matrix.yml --force` runs them again).
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p out
export FORGEML_HOME="${FORGEML_HOME:-$PWD/out/forgeml}"  # the results database
export FORGEML_CACHE="${FORGEML_CACHE:-$PWD/out/cache}"  # the trained zoo models

echo "== The digits models (forgeml models ls)"
forgeml models ls --task image_classification

echo
echo "== Build what is missing and evaluate (forgeml eval matrix matrix.yml)"
status=0
forgeml eval matrix matrix.yml || status=$?  # 1: an entry failed; the others still count

echo
echo "== Across frameworks, per batch size (forgeml results compare --by framework)"
forgeml results compare --dataset digits --by framework
forgeml results compare --dataset digits --by framework --csv > out/comparison.csv

echo
echo "== The report (forgeml report)"
forgeml report --dataset digits --title "Digits: every model on every framework" \
    -o out/report.html
echo
echo "Comparison table: $PWD/out/comparison.csv"
echo "Report:           $PWD/out/report.html"
if [ "$status" != 0 ]; then
    echo "Some evaluations failed (see 'failed:' above); the table and report show the rest."
fi
exit "$status"
