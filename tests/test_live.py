"""What `torcctl run` and `watch` print: a live view on a terminal, plain lines in a pipe, NDJSON
with --json."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys

SPEC = """\
name: live
failure_handlers:
  - name: h
    rules:
      - {exit_codes: [10], max_retries: 3}
      - {exit_codes: [11], recovery_script: "true", max_retries: 3}
jobs:
  - name: flaky
    command: "[ $TORC_ATTEMPT_ID -ge 3 ] || exit 10"
    failure_handler: h
  - name: recovered
    command: "[ $TORC_ATTEMPT_ID -ge 2 ] || exit 11"
    failure_handler: h
  - {name: after, command: "true", depends_on: [flaky]}
"""
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _torcctl(daemon, *args: str, tty: bool) -> tuple[int, str]:
    cmd = [sys.executable, "-m", "torcctl", "--socket", daemon.socket, "--no-autostart", *args]
    env = dict(os.environ, COLUMNS="160", LINES="40", TERM="xterm")
    if not tty:
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=daemon.tmp, env=env, timeout=60)
        return r.returncode, r.stdout
    master, slave = pty.openpty()
    p = subprocess.Popen(cmd, stdout=slave, stderr=slave, stdin=subprocess.DEVNULL, cwd=daemon.tmp, env=env)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 1 << 16)
        except OSError:  # the other end closed
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    return p.wait(60), out.decode(errors="replace")


def test_run_on_a_terminal_shows_progress_counts_retries_and_recent_events(daemon):
    (daemon.tmp / "live.yaml").write_text(SPEC)
    code, out = _torcctl(daemon, "run", "live.yaml", tty=True)
    assert code == 0
    assert "\x1b[" in out  # drawn, not printed line by line
    text = ANSI.sub("", out)
    assert "━" in text and "3/3 finished, workflow 1" in text
    assert "completed 3" in text
    assert "retries so far: 3   recovery scripts run: 1" in text
    assert "recent:" in text and "retry_decided  flaky (job 1, attempt 2)  rc=10" in text


def test_run_in_a_pipe_prints_plain_lines_and_json_prints_ndjson(daemon):
    (daemon.tmp / "live.yaml").write_text(SPEC)
    code, out = _torcctl(daemon, "run", "live.yaml", tty=False)
    assert code == 0 and "\x1b" not in out
    assert any(
        re.search(r"#\d+  retry_decided  flaky \(job \d+, attempt 1\)  rc=10", line) for line in out.splitlines()
    )
    wf = daemon.submit(SPEC, name="again.yaml")
    code, out = _torcctl(daemon, "--json", "watch", str(wf), tty=False)
    events = [json.loads(line) for line in out.splitlines()]
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and events[-1]["kind"] == "workflow_done"
    assert sum(e["kind"] == "retry_decided" for e in events) == 3
