"""Local execution end to end: a real daemon, real subprocesses, real SQLite."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import time

import msgspec
from conftest import REPO

from torcd.protocol import JobInfo, WorkflowSummary

DIAMOND = """
name: diamond
jobs:
  - name: preprocess
    command: sleep 0.2; echo pre > pre.txt
  - name: work_a
    command: sleep 0.1; cat pre.txt
    depends_on: [preprocess]
  - name: work_b
    command: sleep 0.1; cat pre.txt
    depends_on: [preprocess]
  - name: postprocess
    command: echo post
    depends_on: [work_a, work_b]
"""


def test_diamond_never_starts_a_job_before_its_dependencies_complete(daemon):
    wf = daemon.submit(DIAMOND)
    info = daemon.wait(wf)
    assert info.counts == {"completed": 4}
    jobs = daemon.jobs(wf)
    att = {name: daemon.attempts(j.id)[0] for name, j in jobs.items()}
    for child, parents in [
        ("work_a", ["preprocess"]),
        ("work_b", ["preprocess"]),
        ("postprocess", ["work_a", "work_b"]),
    ]:
        for parent in parents:
            assert att[child].start_time >= att[parent].end_time, (child, parent)
    assert abs(att["work_a"].start_time - att["work_b"].start_time) < 0.1  # they ran side by side


def test_parameter_sweep_expands_and_the_aggregate_waits_for_all(daemon):
    wf = daemon.submit("""
        name: sweep
        jobs:
          - name: sim_{i:02d}_{mode}
            command: echo {i} {mode}
            parameters: {i: "1:4", mode: "['fast','slow']"}
          - name: aggregate
            command: echo done
            parameters: {i: "1:4", mode: "['fast','slow']"}
            depends_on: ['sim_{i:02d}_{mode}']
    """)
    daemon.wait(wf)
    jobs = daemon.jobs(wf)
    assert len(jobs) == 9 and all(j.status == "completed" for j in jobs.values())
    assert "sim_03_slow" in jobs
    agg = daemon.call("jobs.show", {"job_id": jobs["aggregate"].id}, JobInfo)
    assert sorted(agg.depends_on) == sorted(j.id for n, j in jobs.items() if n != "aggregate")
    out = daemon.attempts(jobs["sim_03_slow"].id)[0].stdout_path
    assert open(out).read() == "3 slow\n"


def test_job_env_and_per_attempt_log_files(daemon, tmp_path):
    wf = daemon.submit("""
        name: envcheck
        output_dir: out
        jobs:
          - name: printer
            command: env | grep -E '^(TORC_|EXTRA=)' | sort; echo to-stderr >&2
            env: {EXTRA: "yes"}
    """)
    daemon.wait(wf)
    job = daemon.jobs(wf)["printer"]
    a = daemon.attempts(job.id)[0]
    assert a.stdout_path == str(tmp_path / "out" / "job_stdio" / f"job_wf{wf}_j{job.id}_r1_a1.o")
    assert a.stderr_path.endswith(f"job_wf{wf}_j{job.id}_r1_a1.e")
    env = dict(line.split("=", 1) for line in open(a.stdout_path).read().splitlines())
    assert env == {
        "EXTRA": "yes",
        "TORC_WORKFLOW_ID": str(wf),
        "TORC_JOB_ID": str(job.id),
        "TORC_JOB_NAME": "printer",
        "TORC_API_URL": f"unix://{daemon.socket}",
        "TORC_OUTPUT_DIR": str(tmp_path / "out"),
        "TORC_ATTEMPT_ID": "1",
        "TORC_RUN_ID": "1",
    }
    assert open(a.stderr_path).read() == "to-stderr\n"
    assert a.pid and a.return_code == 0 and a.end_time >= a.start_time


def test_failure_cancels_everything_downstream_but_not_siblings(daemon):
    wf = daemon.submit("""
        name: cascade
        jobs:
          - {name: root, command: "exit 3"}
          - {name: child, command: "true", depends_on: [root]}
          - {name: grandchild, command: "true", depends_on: [child]}
          - {name: sibling, command: "true"}
    """)
    info = daemon.wait(wf)
    jobs = daemon.jobs(wf)
    assert {n: j.status for n, j in jobs.items()} == {
        "root": "failed",
        "child": "canceled",
        "grandchild": "canceled",
        "sibling": "completed",
    }
    assert jobs["root"].return_code == 3
    assert "upstream job root" in jobs["grandchild"].reason
    assert info.counts == {"failed": 1, "canceled": 2, "completed": 1}


def test_signal_killed_job_reports_128_plus_signal(daemon):
    wf = daemon.submit("name: sig\njobs:\n  - {name: s, command: 'kill -TERM $$'}\n")
    daemon.wait(wf)
    assert daemon.jobs(wf)["s"].return_code == 128 + signal.SIGTERM


def test_cancel_kills_the_running_process_group(daemon, tmp_path):
    wf = daemon.submit("""
        name: long
        jobs:
          - name: sleeper
            command: (sleep 300; echo child) & echo $! > child.pid; sleep 300
          - {name: after, command: "true", depends_on: [sleeper]}
    """)
    pidfile = tmp_path / "child.pid"
    daemon.wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), what="job to start")
    child = int(pidfile.read_text())
    leader = daemon.attempts(daemon.jobs(wf)["sleeper"].id)[0].pid
    info = daemon.call("workflows.cancel", {"workflow_id": wf}, WorkflowSummary)
    assert info.state == "canceled"
    for pid in (leader, child):
        daemon.wait_for(lambda: not _alive(pid), what=f"pid {pid} to die")
    assert {j.status for j in daemon.jobs(wf).values()} == {"canceled"}


from torcd.services.processes import is_alive as _alive  # noqa: E402


def test_cpu_budget_limits_parallel_jobs(make_daemon, tmp_path):
    d = make_daemon(max_parallel_jobs=2).start()
    wf = d.submit("""
        name: budget
        jobs:
          - name: j{i}
            command: sleep 0.3
            parameters: {i: "1:6"}
          - {name: wide, command: sleep 0.3, num_cpus: 2}
    """)
    d.wait(wf)
    spans = [(a.start_time, a.end_time, j.num_cpus) for j in d.jobs(wf).values() for a in d.attempts(j.id)]
    for t, _, _ in spans:  # at every start, the CPUs in use never exceed the budget
        assert sum(c for s, e, c in spans if s <= t < e) <= 2


def test_a_flood_of_short_jobs_of_two_widths_never_goes_over_the_cpu_budget(make_daemon):
    # Most start in the place of one that ended, sent ahead while every slot was busy.
    d = make_daemon(max_parallel_jobs=3).start()
    wf = d.submit("""
        name: flood
        jobs:
          - {name: "n{i}", command: "true", parameters: {i: "1:160"}}
          - {name: "w{i}", command: "true", num_cpus: 2, parameters: {i: "1:40"}}
    """)
    assert d.wait(wf).counts == {"completed": 200}
    spans = [(a.start_time, a.end_time, j.num_cpus) for j in d.jobs(wf).values() for a in d.attempts(j.id)]
    assert len(spans) == 200
    for t, _, _ in spans:
        assert sum(c for s, e, c in spans if s <= t < e) <= 3


def test_daemon_restart_keeps_completed_state_and_event_log(daemon):
    wf = daemon.submit(DIAMOND)
    daemon.wait(wf)
    before = daemon.events(wf)
    assert daemon.stop() == 0
    daemon.restart()
    assert daemon.call("workflows.show", {"workflow_id": wf}, WorkflowSummary).counts == {"completed": 4}
    assert daemon.events(wf) == before
    assert [e.seq for e in before] == sorted(e.seq for e in before)


def test_socket_is_private_and_a_second_daemon_is_refused(daemon, make_daemon):
    st = os.stat(daemon.socket)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(daemon.socket)).st_mode) == 0o700
    code, _, err = make_daemon().ctl("ping")  # same socket: talks to the running one
    assert code == 0
    import subprocess
    import sys

    other = subprocess.run(
        [sys.executable, "-m", "torcd", "--socket", daemon.socket, "--state-dir", daemon.state_dir + "2"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert other.returncode == 1 and "already listening" in other.stderr


def test_stale_socket_is_cleaned(make_daemon, tmp_path):
    d = make_daemon()
    os.makedirs(os.path.dirname(d.socket), mode=0o700)
    s = socket.socket(socket.AF_UNIX)
    s.bind(d.socket)
    s.close()  # a socket file nobody listens on
    d.start()
    assert d.client.ping()


def test_sigterm_terminates_running_jobs_and_records_them(daemon):
    wf = daemon.submit("name: t\njobs:\n  - {name: long, command: sleep 300}\n")
    daemon.wait_for(lambda: daemon.jobs(wf)["long"].status == "running", what="job to run")
    t0 = time.monotonic()
    assert daemon.stop() == 0
    assert time.monotonic() - t0 < 10
    daemon.restart()
    job = daemon.jobs(wf)["long"]
    assert job.status == "terminated" and job.return_code == 128 + signal.SIGTERM


def test_a_command_that_missed_the_shutdown_sigterm_gets_it_again_and_is_recorded_143(daemon):
    """The flake's cause, made certain: the job's shell catches TERM (to record its status) and
    waits for its command, which missed the signal (forked between the TERM and the shell's
    trap, it kept the shell's handler until exec). Here the command catches the TERM and execs
    a fresh `sleep`, which never saw it; the job must still end 143 within the grace period,
    not be KILLed and recorded 137."""
    wf = daemon.submit("""name: t
jobs:
  - name: long
    command: bash -c 'trap "exec sleep 300" TERM; while :; do sleep 0.01; done'
""")
    daemon.wait_for(lambda: daemon.jobs(wf)["long"].status == "running", what="job to run")
    assert daemon.stop() == 0
    daemon.restart()
    job = daemon.jobs(wf)["long"]
    assert job.status == "terminated" and job.return_code == 128 + signal.SIGTERM


def test_rpc_errors_for_malformed_requests(daemon):
    from torcctl.transport import _UnixConnection

    def post(body: bytes):
        c = _UnixConnection(daemon.socket, 10)
        c.request("POST", "/rpc", body)
        r = c.getresponse()
        data = r.read()
        c.close()
        return msgspec.json.decode(data) if data else None

    assert post(b"{not json")["error"]["code"] == -32700
    assert post(b'{"jsonrpc": "2.0", "id": 1}')["error"]["code"] == -32600
    assert post(b"[]")["error"]["code"] == -32600
    assert post(b'{"jsonrpc": "2.0", "id": 1, "method": "nope"}')["error"]["code"] == -32601
    bad = post(b'{"jsonrpc": "2.0", "id": 1, "method": "workflows.show", "params": {"workflow_id": "x"}}')
    assert bad["error"]["code"] == -32602 and bad["error"]["data"]["field"] == "$.workflow_id"
    unknown = post(b'{"jsonrpc": "2.0", "id": 1, "method": "jobs.list", "params": {"workflow_id": 1, "x": 1}}')
    assert unknown["error"]["code"] == -32602 and "x" in unknown["error"]["message"]
    missing = post(b'{"jsonrpc": "2.0", "id": 5, "method": "workflows.show", "params": {"workflow_id": 999}}')
    assert missing["error"]["code"] == -32004 and missing["id"] == 5
    batch = post(
        b'[{"jsonrpc": "2.0", "id": 1, "method": "ping"}, {"jsonrpc": "2.0", "id": 2, "method": "x"},'
        b' {"jsonrpc": "2.0", "method": "ping"}, 7]'
    )
    assert [r.get("id") for r in batch] == [1, 2, None]
    assert "result" in batch[0] and batch[1]["error"]["code"] == -32601 and batch[2]["error"]["code"] == -32600
    assert post(b'{"jsonrpc": "2.0", "method": "ping"}') is None  # a notification
    assert daemon.client.ping()


def test_bad_spec_over_rpc_names_line_and_field_and_stores_nothing(daemon):
    code, out, err = daemon.ctl("submit", str(REPO / "tests" / "data" / "cycle.yaml"))
    assert code == 2 and "cycle.yaml:" in err and "dependency cycle" in err and "Traceback" not in err
    assert daemon.call("workflows.list") == []


def test_torcctl_run_exit_codes_and_summary(daemon, tmp_path):
    (tmp_path / "ok.yaml").write_text(DIAMOND)
    code, out, _ = daemon.ctl("run", "ok.yaml")
    assert code == 0 and "completed" in out and "workflow_done" in out
    (tmp_path / "bad.yaml").write_text("name: b\njobs:\n  - {name: x, command: 'exit 4'}\n")
    code, out, _ = daemon.ctl("run", "--quiet", "bad.yaml")
    assert code == 1 and "failed" in out and "job_started" not in out


def test_cli_errors_are_one_line_without_traceback(daemon, tmp_path):
    for args in (
        ["jobs", "show", "424242"],
        ["workflows", "show", "77"],
        ["submit", "missing.yaml"],
        ["jobs", "list", "1", "--status", "bogus"],
    ):
        code, out, err = daemon.ctl(*args)
        assert code == 2 and err.startswith("torcctl: error:") and "Traceback" not in err, (args, err)
        assert len(err.strip().splitlines()) == 1


def test_tables_print_text_as_written(daemon, tmp_path):
    """Square brackets and colons in names, descriptions and commands are text, not markup."""
    wf = daemon.submit("""
        name: "sweep [/] [bold]x[/bold]"
        description: "see [red]this[/] :smile:"
        jobs:
          - {name: "j[1]", command: "true"}
    """)
    daemon.wait(wf)
    code, out, err = daemon.ctl("workflows", "show", str(wf))
    assert code == 0 and err == ""
    assert "sweep [/] [bold]x[/bold]" in out and "see [red]this[/] :smile:" in out
    code, out, _ = daemon.ctl("jobs", "list", str(wf))
    assert code == 0 and "j[1]" in out


def test_torcctl_autostarts_a_daemon_and_run_stops_it(tmp_path):
    import subprocess
    import sys

    env = dict(os.environ, TORCD_SOCKET=str(tmp_path / "auto" / "s.sock"), TORCD_STATE_DIR=str(tmp_path / "st"))
    (tmp_path / "d.yaml").write_text(DIAMOND)
    r = subprocess.run(
        [sys.executable, "-m", "torcctl", "run", "d.yaml"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "completed" in r.stdout
    time.sleep(0.5)
    assert not os.path.exists(tmp_path / "auto" / "s.sock")  # the daemon it started has stopped
    r = subprocess.run(
        [sys.executable, "-m", "torcctl", "--no-autostart", "ping"], env=env, capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 2 and "no torcd answers" in r.stderr


def test_delete_removes_every_row_of_a_finished_workflow(daemon):
    import sqlite3

    wf = daemon.submit(DIAMOND)
    daemon.wait(wf)
    assert daemon.ctl("workflows", "delete", str(wf))[0] == 0
    assert daemon.call("workflows.list") == []
    with sqlite3.connect(os.path.join(daemon.state_dir, "torcd.store.db")) as db:
        for table in (
            "workflows",
            "jobs",
            "deps",
            "attempts",
            "events",
            "failure_handlers",
            "schedulers",
            "allocations",
            "workers",
        ):
            assert db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0, table


def test_jobs_start_in_their_directory_with_only_their_stdio_and_default_signals(make_daemon, tmp_path):
    """What a job inherits from the daemon: its workflow's directory, stdin from /dev/null, no
    other open descriptor (not even one the daemon inherited), no standard signal blocked or
    ignored (Python ignores SIGPIPE)."""
    with open(tmp_path / "held", "w") as held:
        daemon = make_daemon().start(pass_fds=(held.fileno(),))
    wf = daemon.submit("""
        name: inherit
        jobs:
          - name: j
            command: pwd; readlink /proc/$$/fd/0; ls -m /proc/$$/fd; grep -E '^Sig(Blk|Ign)' /proc/self/status
    """)  # no pipeline before the listing: the shell holds a pipe's descriptors while it builds one
    daemon.wait(wf)
    a = daemon.attempts(daemon.jobs(wf)["j"].id)[0]
    lines = open(a.stdout_path).read().splitlines()
    assert lines[:3] == [str(tmp_path), "/dev/null", "0, 1, 2"]
    masks = {k: int(v, 16) for k, v in (line.split(":\t") for line in lines[3:])}
    assert masks.keys() == {"SigBlk", "SigIgn"}
    # Bit N-1 is signal N; only 1-31 count (glibc's posix_spawn leaves its reserved 32 and 33
    # ignored). What whoever started the tests ignored (nohup: SIGHUP) is inherited, as it should be.
    standard = (1 << 31) - 1
    assert masks["SigBlk"] & standard == 0
    assert masks["SigIgn"] & (1 << signal.SIGPIPE - 1 | 1 << signal.SIGXFSZ - 1) == 0
    with open("/proc/self/status") as f:
        ours = next(int(line.split()[1], 16) for line in f if line.startswith("SigIgn"))
    assert masks["SigIgn"] & standard & ~ours == 0, hex(masks["SigIgn"])


def test_a_job_or_recovery_script_whose_directory_is_gone_fails_with_the_reason(daemon, tmp_path):
    logs = tmp_path / "logs"
    work = {name: tmp_path / name for name in ("job", "recovery")}
    for d in work.values():
        d.mkdir()
    first = daemon.submit(
        f"""
        name: gone
        output_dir: {logs}
        jobs:
          - {{name: remover, command: 'rm -rf "$PWD"'}}
          - {{name: after, command: 'true', depends_on: [remover]}}
    """,
        cwd=work["job"],
    )
    second = daemon.submit(
        f"""
        name: gone-before-recovery
        output_dir: {logs}
        failure_handlers:
          - name: h
            rules: [{{exit_codes: [10], recovery_script: 'true', max_retries: 2}}]
        jobs:
          - {{name: j, command: 'rm -rf "$PWD"; exit 10', failure_handler: h}}
    """,
        cwd=work["recovery"],
    )
    daemon.wait(first)
    after = daemon.jobs(first)["after"]
    att = daemon.attempts(after.id)[0]
    assert (after.status, att.return_code) == ("failed", 126)
    assert att.message == f"could not start: working directory not found ({work['job']})"
    assert open(att.stderr_path).read() == f"torcd: could not start: working directory not found ({work['job']})\n"
    daemon.wait(second)
    fin = [e.message for e in daemon.events(second) if e.kind == "recovery_finished"]
    assert fin == [f"recovery script could not start: working directory not found ({work['recovery']})"]
    assert daemon.jobs(second)["j"].status == "failed"


def test_deleting_the_output_directory_between_runs_fails_nothing(daemon, tmp_path):
    """A long-lived daemon once remembered having made a log directory; after `rm -rf output/`
    the next workflow's first jobs failed 126. The directory is opened (and made) per job."""
    spec = "name: w\njobs:\n  - {name: 'j{i}', command: 'echo {i}', parameters: {i: '1:20'}}\n"
    assert daemon.wait(daemon.submit(spec)).counts == {"completed": 20}
    shutil.rmtree(tmp_path / "output")
    assert daemon.wait(daemon.submit(spec.replace("name: w", "name: w2"))).counts == {"completed": 20}
    assert len(list((tmp_path / "output" / "job_stdio").iterdir())) == 40


def test_a_job_that_signals_its_parent_cannot_take_the_records_of_others(daemon, tmp_path):
    """A job's `kill $PPID` (or a `pkill python` on the node) reaches the process that starts
    and records jobs: it ignores what ends a process politely, and every job keeps its record."""
    wf = daemon.submit("""name: p
jobs:
  - {name: hostile, command: 'for s in TERM HUP INT QUIT USR1 USR2 ALRM; do kill -$s $PPID; done; exit 5'}
  - {name: after, command: 'sleep 0.2; exit 6', depends_on: [hostile], cancel_on_blocking_job_failure: false}
""")
    daemon.wait(wf)
    jobs = daemon.jobs(wf)
    assert (jobs["hostile"].return_code, jobs["after"].return_code) == (5, 6)


def test_a_command_runs_exactly_as_bash_c_whatever_it_starts_with(daemon, tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    wf = daemon.submit(
        """name: exact
jobs:
  - {name: dashes, command: '--version'}
  - {name: pwd, command: 'echo "$PWD"'}
""",
        cwd=tmp_path / "link",
    )
    daemon.wait(wf)
    jobs = daemon.jobs(wf)
    assert jobs["dashes"].return_code == 127  # a command named --version, not bash's option
    att = daemon.attempts(jobs["pwd"].id)[0]
    assert open(att.stdout_path).read() == f"{tmp_path / 'link'}\n"  # the directory as written


def test_a_job_sees_the_daemons_environment_under_its_own_variables_and_none_of_its_marks(make_daemon):
    daemon = make_daemon().start(env={"TORC_TEST_SHADOW": "daemon", "TORC_TEST_KEPT": "kept", "TORC_RETURN_CODE": "3"})
    wf = daemon.submit(
        "name: layers\njobs:\n"
        "  - {name: a, command: 'echo $TORC_TEST_SHADOW $TORC_TEST_KEPT ${TORC_RETURN_CODE-none}',"
        " env: {TORC_TEST_SHADOW: spec}}\n"
        "  - {name: b, command: 'echo $TORC_TEST_SHADOW', depends_on: [a]}\n"
    )
    daemon.wait(wf)
    out = {n: open(daemon.attempts(j.id)[0].stdout_path).read() for n, j in daemon.jobs(wf).items()}
    assert out == {"a": "spec kept none\n", "b": "daemon\n"}


def test_an_output_directory_under_the_double_slash_root_runs_its_jobs(daemon, tmp_path):
    """Found in review: the walk up from the log directory never ended at "//" (its own parent,
    kept apart from "/" by POSIX), and the daemon stopped answering anyone."""
    wf = daemon.submit(f"name: root2\noutput_dir: '/{tmp_path}/out'\njobs:\n  - {{name: j, command: 'echo hi'}}\n")
    assert daemon.wait(wf, timeout=30).counts == {"completed": 1}
    att = daemon.attempts(daemon.jobs(wf)["j"].id)[0]
    assert att.stdout_path.startswith("//") and open(att.stdout_path).read() == "hi\n"


def test_jobs_start_when_the_daemons_environment_holds_bytes_that_are_not_utf8(make_daemon, tmp_path):
    daemon = make_daemon().start(env={b"TORC_TEST_ODD": b"caf\xe9"})  # type: ignore[dict-item]
    wf = daemon.submit("name: odd\njobs:\n  - {name: j, command: 'printf %s \"$TORC_TEST_ODD\" | od -An -tx1'}\n")
    daemon.wait(wf)
    att = daemon.attempts(daemon.jobs(wf)["j"].id)[0]
    assert att.return_code == 0 and open(att.stdout_path).read().split() == ["63", "61", "66", "e9"]
