#!/usr/bin/env bash
# A flaky job for the failure-handler demo: works for a while, then fails at
# random with exit code 10, 11, 12 or 1, less often on later attempts.
#   --fail-rate P   chance of failing on attempt 1, a fraction like 0.7 or a percentage like 70,
#                   to the whole percent (default 40); attempt N uses P/N
#   --work-time S   seconds of "work" before deciding (default 0.2)
#   --seed N        make the outcome depend only on N, the job name and the attempt
set -euo pipefail
fail_rate=40 work_time=0.2 seed=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --fail-rate) fail_rate=$2; shift 2 ;;
        --work-time) work_time=$2; shift 2 ;;
        --seed) seed=$2; shift 2 ;;
        *) echo "unknown option: $1" >&2; exit 2 ;;
    esac
done
# Bash has no floating point (and an arithmetic error inside `if (( ))` is only a false
# condition), so the rate becomes a whole percentage here, or the script stops.
if [[ $fail_rate =~ ^[0-9]{1,3}$ ]] && (( 10#$fail_rate <= 100 )); then
    fail_percent=$(( 10#$fail_rate ))
elif [[ $fail_rate =~ ^0?\.([0-9]+)$ ]]; then
    digits="${BASH_REMATCH[1]}00"
    fail_percent=$(( 10#${digits:0:2} ))
elif [[ $fail_rate =~ ^1\.0*$ ]]; then
    fail_percent=100
else
    echo "failure_demo_job.sh: --fail-rate must be a fraction from 0 to 1 (0.7) or a percentage" \
         "from 0 to 100 (70), not '$fail_rate'" >&2
    exit 2
fi
attempt=${TORC_ATTEMPT_ID:-1}
if ! [[ $attempt =~ ^[1-9][0-9]*$ ]]; then
    echo "failure_demo_job.sh: TORC_ATTEMPT_ID must be a positive integer, not '$attempt'" >&2
    exit 2
fi
if [[ -n $seed ]]; then
    RANDOM=$(( $(printf '%s' "$seed/${TORC_JOB_NAME:-job}/$attempt" | cksum | cut -d' ' -f1) % 32768 ))
fi
echo "job ${TORC_JOB_NAME:-?} attempt $attempt working for ${work_time}s"
sleep "$work_time"
if (( RANDOM % 100 < fail_percent / attempt )); then
    codes=(10 11 12 1)
    code=${codes[RANDOM % 4]}
    echo "job ${TORC_JOB_NAME:-?} failing with exit code $code" >&2
    exit "$code"
fi
echo "job ${TORC_JOB_NAME:-?} succeeded"
