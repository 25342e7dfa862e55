#!/usr/bin/env bash
# One step of the diamond: read what the previous steps wrote, add a line.
set -euo pipefail
step=$1
data="$TORC_OUTPUT_DIR/diamond_wf$TORC_WORKFLOW_ID"
mkdir -p "$data"
case "$step" in
    preprocess) seq 1 1000 > "$data/input.txt" ;;
    work_a) awk '$1 % 2 == 0 { s += $1 } END { print "even", s }' "$data/input.txt" > "$data/a.txt" ;;
    work_b) awk '$1 % 2 == 1 { s += $1 } END { print "odd", s }' "$data/input.txt" > "$data/b.txt" ;;
    postprocess) cat "$data/a.txt" "$data/b.txt" | tee "$data/result.txt" ;;
esac
echo "$step done"
