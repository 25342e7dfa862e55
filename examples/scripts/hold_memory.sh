#!/usr/bin/env bash
# hold_memory.sh MIB SECONDS: use MIB MiB of memory for SECONDS, then exit 0.
# (tail keeps a "line" with no newline in memory, so it grows to MIB MiB.)
set -euo pipefail
mib=${1:?usage: hold_memory.sh MIB SECONDS}
seconds=${2:?usage: hold_memory.sh MIB SECONDS}
(head -c "${mib}m" /dev/zero; sleep "$seconds") | tail >/dev/null
echo "held ${mib} MiB for ${seconds}s"
