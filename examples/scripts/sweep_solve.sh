#!/usr/bin/env bash
# A stand-in solver: writes one result line for its (n, method).
set -euo pipefail
n=$1 method=$2
out="$TORC_OUTPUT_DIR/sweep_wf$TORC_WORKFLOW_ID"
mkdir -p "$out"
iterations=$(( n * (${#method} % 5 + 1) ))
echo "n=$n method=$method iterations=$iterations" > "$out/n${n}_${method}.txt"
echo "solved n=$n with $method in $iterations iterations"
