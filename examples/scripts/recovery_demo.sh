#!/usr/bin/env bash
# Recovery script for the demo: records what it was told and "fixes" the cause
# of the failure before the retry. Safe to run twice for the same attempt.
set -euo pipefail
log="${TORC_OUTPUT_DIR:-.}/recovery.log"
mkdir -p "$(dirname "$log")"
echo "$(date +%FT%T) workflow=$TORC_WORKFLOW_ID job=$TORC_JOB_ID name=$TORC_JOB_NAME attempt=$TORC_ATTEMPT_ID return_code=$TORC_RETURN_CODE" >> "$log"
case "$TORC_RETURN_CODE" in
    10) echo "exit 10: out of memory last time; asking for a smaller chunk size" ;;
    11) echo "exit 11: input went stale; refreshing it" ;;
    *) echo "exit $TORC_RETURN_CODE: nothing specific to fix" ;;
esac
