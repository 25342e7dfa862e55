#!/usr/bin/env bash
# A flaky job for the failure-handler demo: works for a while, then fails at
# random with exit code 10, 11, 12 or 1, less often on later attempts.
#   --fail-rate P   chance (0-100) of failing on attempt 1 (default 40); attempt N uses P/N
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
attempt=${TORC_ATTEMPT_ID:-1}
if [[ -n $seed ]]; then
    RANDOM=$(( $(printf '%s' "$seed/${TORC_JOB_NAME:-job}/$attempt" | cksum | cut -d' ' -f1) % 32768 ))
fi
echo "job ${TORC_JOB_NAME:-?} attempt $attempt working for ${work_time}s"
sleep "$work_time"
if (( RANDOM % 100 < fail_rate / attempt )); then
    codes=(10 11 12 1)
    code=${codes[RANDOM % 4]}
    echo "job ${TORC_JOB_NAME:-?} failing with exit code $code" >&2
    exit "$code"
fi
echo "job ${TORC_JOB_NAME:-?} succeeded"
