#!/usr/bin/env bash
# Deterministic flaky job: exit CODE while the attempt number is below SUCCEED_AT.
#   fail_until.sh CODE SUCCEED_AT [MESSAGE]
code=$1 succeed_at=$2
attempt=${TORC_ATTEMPT_ID:-1}
echo "attempt $attempt of ${TORC_JOB_NAME:-job}"
if (( attempt < succeed_at )); then
    echo "${3:-failing} (attempt $attempt, exit $code)" >&2
    exit "$code"
fi
echo "succeeded on attempt $attempt"
