"""kill -9 of the real daemon at the moments that matter, then a restart: nothing is lost."""

from __future__ import annotations

import itertools
import os
import signal

from test_execution import _alive

from torcctl.transport import ConnectError

CATCH_ALL = """
failure_handlers:
  - name: h
    rules:
      - exit_codes: [10]
        recovery_script: {script}
        max_retries: 3
      - match_all_exit_codes: true
        max_retries: 3
"""


def spec(jobs: str, script: str = "'true'") -> str:
    return CATCH_ALL.format(script=script) + "name: c\njobs:\n" + jobs


def submit_and_crash(d, text: str) -> int:
    """Submit to a daemon started with a crash point and wait until it dies there."""
    try:
        wf = d.submit(text)
    except ConnectError:
        wf = 1  # committed, but the daemon died at its crash point before it could answer
    assert d.wait_dead() == -9
    return wf


def check_history(daemon, wf):
    """Attempts are numbered 1..N without gaps, never overlap, and the event log has no holes."""
    for job in daemon.jobs(wf).values():
        atts = daemon.attempts(job.id)
        for run in {a.run_id for a in atts}:  # each run (reset-status) numbers from 1
            ids = [a.attempt_id for a in atts if a.run_id == run]
            assert ids == list(range(1, len(ids) + 1)), job.name
        for prev, nxt in itertools.pairwise(atts):
            assert prev.end_time is not None and nxt.start_time >= prev.end_time
    seqs = [e.seq for e in daemon.events(wf)]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


def test_crash_between_recording_an_exit_and_deciding(make_daemon):
    d = make_daemon().start(crash_at="before_decision")
    wf = submit_and_crash(
        d,
        spec("""\
  - {name: j, command: "[ $TORC_ATTEMPT_ID -ge 2 ] || exit 12", failure_handler: h}
"""),
    )
    d.restart()
    d.wait(wf)
    job = d.jobs(wf)["j"]
    assert (job.status, job.attempt_id) == ("completed", 2)
    assert [(a.return_code, a.action) for a in d.attempts(job.id)] == [(12, "retry"), (0, None)]
    check_history(d, wf)


def test_recovery_script_interrupted_by_a_crash_runs_again(make_daemon, tmp_path):
    d = make_daemon().start()
    wf = d.submit(
        spec(
            """\
  - {name: j, command: "[ $TORC_ATTEMPT_ID -ge 2 ] || exit 10", failure_handler: h}
  - {name: down, command: "true", depends_on: [j]}
""",
            script="echo start $$ >> rec.log; sleep 3; echo end $$ >> rec.log",
        )
    )
    log = tmp_path / "rec.log"
    d.wait_for(lambda: log.exists(), what="recovery script to start")
    first_pid = int(log.read_text().split()[1])
    d.kill9()
    d.restart()
    assert not _alive(first_pid)  # the interrupted copy was stopped, not left to run alongside
    d.wait(wf)
    assert {n: j.status for n, j in d.jobs(wf).items()} == {"j": "completed", "down": "completed"}
    lines = log.read_text().split("\n")
    assert [line.split()[0] for line in lines if line] == ["start", "start", "end"]
    assert d.attempts(d.jobs(wf)["j"].id)[0].recovery_outcome == "succeeded"
    check_history(d, wf)


def test_crash_after_recovery_finished_but_before_it_was_recorded(make_daemon, tmp_path):
    d = make_daemon().start(crash_at="before_recovery_recorded")
    wf = submit_and_crash(
        d,
        spec(
            """\
  - {name: j, command: "[ $TORC_ATTEMPT_ID -ge 2 ] || exit 10", failure_handler: h}
""",
            script="echo ran >> rec.log",
        ),
    )
    d.restart()
    d.wait(wf)
    assert (tmp_path / "rec.log").read_text() == "ran\nran\n"  # idempotent scripts are run again
    assert d.jobs(wf)["j"].status == "completed"
    check_history(d, wf)


def crash_during_attempt_1(make_daemon, tmp_path, attempt_1: str) -> tuple:
    """Run a job whose first attempt records its shell's pid, then runs `attempt_1` (later
    attempts succeed); kill -9 the daemon while attempt 1 runs. Returns (daemon, wf, pid)."""
    d = make_daemon().start()
    wf = d.submit(
        spec(f"""\
  - name: j
    command: if [ $TORC_ATTEMPT_ID -ge 2 ]; then echo second; else echo $$ > first.pid; {attempt_1}; fi
    failure_handler: h
""")
    )
    pidfile = tmp_path / "first.pid"
    d.wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), what="attempt 1 to start")
    first = int(pidfile.read_text())
    d.kill9()
    return d, wf, first


def test_job_running_when_the_daemon_dies_is_adopted_with_its_exit_code(make_daemon, tmp_path):
    d, wf, first = crash_during_attempt_1(make_daemon, tmp_path, "until [ -e go ]; do sleep 0.02; done; exit 12")
    assert _alive(first)  # jobs live in their own process group: a daemon crash does not kill them
    d.restart()
    assert _alive(first)  # adopted, not stopped
    assert d.jobs(wf)["j"].status == "running"
    (tmp_path / "go").touch()
    d.wait(wf)
    atts = d.attempts(d.jobs(wf)["j"].id)
    assert [(a.attempt_id, a.return_code, a.action) for a in atts] == [(1, 12, "retry"), (2, 0, None)]
    check_history(d, wf)


def test_a_job_that_rewrote_its_environment_is_still_adopted_with_its_exit_code(make_daemon, tmp_path):
    """`exec env -i ...`, or a program retitling itself, leaves nothing to find the job by in its
    environment: the pid recorded at its start, a running child of its shepherd, finds it."""
    waits = "until [ -e go ]; do sleep 0.02; done; exit 12"
    d = make_daemon().start()
    wf = d.submit(
        spec(f"""\
  - name: j
    command: >-
      if [ $TORC_ATTEMPT_ID -ge 2 ]; then echo second;
      else echo $$ > first.pid; exec -c /bin/bash -c '{waits}'; fi
    failure_handler: h
""")
    )
    pidfile = tmp_path / "first.pid"
    d.wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), what="attempt 1 to start")
    first = int(pidfile.read_text())
    d.wait_for(lambda: open(f"/proc/{first}/environ", "rb").read() == b"", what="the environment cleared")
    d.wait_for(lambda: d.attempts(d.jobs(wf)["j"].id)[0].pid == first, what="the start recorded")
    d.kill9()
    d.restart()
    d.wait_for(lambda: d.jobs(wf)["j"].status == "running", what="the job adopted")
    assert _alive(first)
    (tmp_path / "go").touch()
    d.wait(wf)
    atts = d.attempts(d.jobs(wf)["j"].id)
    assert [(a.attempt_id, a.return_code, a.action) for a in atts] == [(1, 12, "retry"), (2, 0, None)]
    check_history(d, wf)


def test_job_that_ended_while_the_daemon_was_down_keeps_its_exit_code(make_daemon, tmp_path):
    d, wf, first = crash_during_attempt_1(make_daemon, tmp_path, "until [ -e go ]; do sleep 0.02; done; exit 13")
    (tmp_path / "go").touch()
    d.wait_for(lambda: not _alive(first), timeout=10, what="attempt 1 to end")
    d.restart()
    d.wait(wf)
    atts = d.attempts(d.jobs(wf)["j"].id)
    assert [(a.attempt_id, a.return_code, a.action) for a in atts] == [(1, 13, "retry"), (2, 0, None)]
    assert "daemon was down" in atts[0].message
    check_history(d, wf)


def test_adopted_job_killed_by_sigkill_is_recorded_137(make_daemon, tmp_path):
    d, wf, first = crash_during_attempt_1(make_daemon, tmp_path, "sleep 300")
    d.restart()
    os.killpg(os.getpgid(first), signal.SIGKILL)  # the shell's parent, outside its group, records it
    d.wait(wf)
    atts = d.attempts(d.jobs(wf)["j"].id)
    assert [(a.attempt_id, a.return_code, a.action) for a in atts] == [(1, 137, "retry"), (2, 0, None)]
    assert atts[0].message is None
    check_history(d, wf)


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def test_adopted_job_killed_with_the_process_that_records_it_is_137_unrecorded(make_daemon, tmp_path):
    d, wf, first = crash_during_attempt_1(make_daemon, tmp_path, "sleep 300")
    shepherd = parent_of(first)
    d.restart()
    os.kill(shepherd, signal.SIGKILL)
    os.killpg(os.getpgid(first), signal.SIGKILL)  # nothing is left to record a status
    d.wait(wf)
    atts = d.attempts(d.jobs(wf)["j"].id)
    assert [(a.attempt_id, a.return_code, a.action) for a in atts] == [(1, 137, "retry"), (2, 0, None)]
    assert "without recording its exit status" in atts[0].message
    check_history(d, wf)


def test_a_dead_shepherd_loses_only_the_statuses_it_held_and_is_replaced(make_daemon, tmp_path):
    """kill -9 of the process that starts and records jobs, while the daemon lives: the job it
    was watching ends unrecorded (137, said so) and is retried; the next attempt starts as usual."""
    d = make_daemon().start()
    wf = d.submit(
        spec("""\
  - name: j
    command: if [ $TORC_ATTEMPT_ID -ge 2 ]; then echo second; else echo $$ > first.pid; sleep 300; fi
    failure_handler: h
""")
    )
    pidfile = tmp_path / "first.pid"
    d.wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), what="attempt 1 to start")
    first = int(pidfile.read_text())
    os.kill(parent_of(first), signal.SIGKILL)
    os.killpg(os.getpgid(first), signal.SIGKILL)
    d.wait(wf)
    atts = d.attempts(d.jobs(wf)["j"].id)
    assert [(a.attempt_id, a.return_code, a.action) for a in atts] == [(1, 137, "retry"), (2, 0, None)]
    assert "without recording its exit status" in atts[0].message
    check_history(d, wf)


OWN_TRAP = (
    "tmp=$(mktemp -d); trap 'rm -rf \"$tmp\"; echo cleaned' EXIT; until [ -e go ]; do sleep 0.02; done; echo done"
)


def test_a_job_with_its_own_exit_trap_that_ends_while_the_daemon_is_down_keeps_its_status(make_daemon, tmp_path):
    """The common `trap 'rm -rf "$tmp"' EXIT` idiom: the command's trap cannot take away the
    record of its exit status, so the job that printed "done" is completed, not failed 137."""
    d, wf, first = crash_during_attempt_1(make_daemon, tmp_path, OWN_TRAP)
    (tmp_path / "go").touch()
    d.wait_for(lambda: not _alive(first), timeout=10, what="attempt 1 to end")
    d.restart()
    d.wait(wf)
    job = d.jobs(wf)["j"]
    assert [(a.attempt_id, a.return_code) for a in d.attempts(job.id)] == [(1, 0)] and job.status == "completed"
    assert (tmp_path / "output" / "job_stdio" / f"job_wf{wf}_j{job.id}_r1_a1.o").read_text().endswith("done\ncleaned\n")
    check_history(d, wf)


def test_an_adopted_job_with_its_own_exit_trap_keeps_its_status(make_daemon, tmp_path):
    d, wf, first = crash_during_attempt_1(make_daemon, tmp_path, OWN_TRAP)
    d.restart()
    assert d.jobs(wf)["j"].status == "running"
    (tmp_path / "go").touch()
    d.wait(wf)
    job = d.jobs(wf)["j"]
    assert [(a.attempt_id, a.return_code) for a in d.attempts(job.id)] == [(1, 0)] and job.status == "completed"
    check_history(d, wf)


def test_a_job_that_replaces_its_shell_with_exec_keeps_its_status_across_a_crash(make_daemon, tmp_path):
    d, wf, first = crash_during_attempt_1(
        make_daemon, tmp_path, "until [ -e go ]; do sleep 0.02; done; exec bash -c 'exit 14'"
    )
    (tmp_path / "go").touch()
    d.wait_for(lambda: not _alive(first), timeout=10, what="attempt 1 to end")
    d.restart()
    d.wait(wf)
    atts = d.attempts(d.jobs(wf)["j"].id)
    assert [(a.attempt_id, a.return_code, a.action) for a in atts] == [(1, 14, "retry"), (2, 0, None)]
    check_history(d, wf)


def test_crash_after_claiming_before_the_process_started_costs_no_attempt(make_daemon):
    d = make_daemon().start(crash_at="after_claim")
    wf = submit_and_crash(
        d,
        spec("""\
  - {name: j, command: "echo hi", failure_handler: h}
"""),
    )
    d.restart()
    d.wait(wf)
    atts = d.attempts(d.jobs(wf)["j"].id)
    assert [(a.attempt_id, a.return_code) for a in atts] == [(1, 0)]  # claimed, never started: ready again
    check_history(d, wf)


def test_decisions_already_recorded_survive_a_crash(make_daemon):
    d = make_daemon().start()
    wf = d.submit(
        spec("""\
  - name: j{i}
    command: "[ $TORC_ATTEMPT_ID -ge {i} ] || exit 12"
    failure_handler: h
    parameters: {i: "1:3"}
  - {name: blocker, command: sleep 300}
""")
    )
    d.wait_for(
        lambda: all(j.status == "completed" for n, j in d.jobs(wf).items() if n != "blocker"),
        what="the flaky jobs to finish",
    )
    before = {n: d.attempts(j.id) for n, j in d.jobs(wf).items() if n != "blocker"}
    events_before = d.events(wf)
    d.kill9()
    d.restart()
    after = {n: d.attempts(j.id) for n, j in d.jobs(wf).items() if n != "blocker"}
    assert after == before
    assert d.events(wf)[: len(events_before)] == events_before
    d.call("workflows.cancel", {"workflow_id": wf})
    check_history(d, wf)


def test_restart_never_reuses_attempt_numbers(make_daemon):
    d = make_daemon().start(crash_at="after_start")
    wf = submit_and_crash(
        d,
        spec("""\
  - {name: j, command: "sleep 0.5; [ $TORC_ATTEMPT_ID -ge 3 ] || exit 12", failure_handler: h}
"""),
    )  # dies with attempt 1 running
    d.restart(crash_at="after_start")
    assert d.wait_dead() == -9  # and again with attempt 2 running
    d.restart()
    d.wait(wf)
    atts = d.attempts(d.jobs(wf)["j"].id)
    assert [(a.attempt_id, a.return_code) for a in atts] == [(1, 12), (2, 12), (3, 0)]  # adopted each time
    check_history(d, wf)
