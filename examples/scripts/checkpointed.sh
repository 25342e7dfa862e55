#!/usr/bin/env bash
# checkpointed.sh FILE: count 30 steps of 0.1 s, starting from the step saved in FILE; when
# stopped (SIGTERM), save the step reached and exit, so that the next attempt resumes there.
set -u
file=$1
step=$(cat "$file" 2>/dev/null || echo 0)
trap 'echo "$step" > "$file"; echo "stopped at step $step"; exit 143' TERM
while [ "$step" -lt 30 ]; do
    sleep 0.1 &
    wait $!
    step=$((step + 1))
done
echo "$step" > "$file"
echo "finished at step $step"
