"""Workers and clients against what goes wrong on a shared cluster: another user planting the
journal's directory, an allocation credential reporting absurd times, a wrong CA file, a hung
daemon, a project path with a space. Real daemons, real workers, real Slurm where Slurm is
involved; throwaway users for the other person on the node."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import msgspec
import pytest
import test_slurm
from conftest import Daemon
from test_worker_credentials import certificate, held_allocation, tcp_call  # noqa: F401

from torcd.protocol import AttemptInfo

slurm = test_slurm.pytestmark
SPEC_IN = (
    "name: {name}\n"
    + test_slurm.scheduler(cpus=1)
    + """
jobs:
  - name: j{{i}}
    command: echo ran $TORC_JOB_NAME
    parameters: {{i: "1:2"}}
"""
)


@pytest.fixture
def stranger():
    """Another person on the node, for this test only (root and useradd, as in CI). A name of its
    own, so that tests run at the same time do not delete each other's user."""
    if os.getuid() != 0 or not shutil.which("useradd"):
        pytest.skip("creating a throwaway user needs root and useradd")
    name = f"torcw{os.getpid() % 100000}"
    subprocess.run(["userdel", name], capture_output=True)
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)
    yield pwd.getpwnam(name)
    subprocess.run(["userdel", name], capture_output=True)


def as_user(user, *command: str) -> None:
    subprocess.run(
        ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", *command], check=True
    )


def slurm_daemon(tmp_path, env: dict[str, str] | None = None) -> Daemon:
    return Daemon(tmp_path).start("--listen", "127.0.0.1:0", "--slurm-poll-interval", "0.5", env=env)


def stop_slurm_daemon(d: Daemon) -> None:
    for a in test_slurm._allocations_of(d):
        if a.slurm_job_id and a.state in ("pending", "running"):
            subprocess.run(["scancel", a.slurm_job_id])
    d.stop()


# 1. The worker's journal is never at a name another user can take first.


@slurm
@pytest.mark.parametrize("planted", ["directory", "symlink"])
def test_a_journal_directory_another_user_planted_does_not_stop_the_workers(tmp_path, stranger, planted):
    shared = tempfile.mkdtemp(prefix="torcpy-tmp-", dir="/tmp")  # a /tmp of its own: 1777, like /tmp
    os.chmod(shared, 0o1777)
    old = os.path.join(shared, f"torc-worker-{os.getuid()}")
    if planted == "directory":
        as_user(stranger, "mkdir", "-m", "0755", old)
        trap = old
    else:
        trap = os.path.join(shared, "theirs")
        as_user(stranger, "mkdir", "-m", "0777", trap)
        as_user(stranger, "ln", "-s", trap, old)
    env = {"TMPDIR": shared, "XDG_RUNTIME_DIR": ""}
    d = slurm_daemon(tmp_path, env)
    try:
        (tmp_path / "wf.yaml").write_text(SPEC_IN.format(name="planted"))
        code, out, err = d.ctl("submit-slurm", "wf.yaml")
        assert code == 0, err
        wf = int(out.strip())
        info = d.wait(wf, timeout=120, state=("done", "failed"))
        logs = "".join(p.read_text() for p in (tmp_path / "output" / "slurm").glob("slurm_*.out"))
        assert info.counts == {"completed": 2}, logs
        assert os.listdir(trap) == []  # nothing of ours went where the other user pointed
        journals = [json.loads(line)["journal"] for line in logs.splitlines() if "worker_registered" in line]
        assert journals and all(os.path.dirname(os.path.dirname(j)) == shared for j in journals), logs
        assert not {os.path.dirname(j) for j in journals} & {old, trap}, journals
    finally:
        stop_slurm_daemon(d)
        shutil.rmtree(shared, ignore_errors=True)


# 2. Times an allocation credential reports are bounded.


@slurm
def test_an_allocation_credential_cannot_store_an_end_time_outside_its_attempt(tmp_path):
    d = slurm_daemon(tmp_path)
    try:
        url = d.call("ping")["tcp_url"]
        wf, alloc, token = held_allocation(d, tmp_path, "times")
        worker = tcp_call(
            url, token, "workers.register", {"workflow_id": wf, "allocation_id": alloc.id, "host": "n1", "cpus": 2}
        )["result"]["worker_id"]
        got = tcp_call(url, token, "workers.poll", {"worker_id": worker, "free_cpus": 2})["result"]["jobs"]
        assert len(got) == 2
        early, late = got

        def report(job, end_time) -> dict:
            return tcp_call(
                url,
                token,
                "workers.poll",
                {
                    "worker_id": worker,
                    "claim": False,
                    "exits": [
                        {
                            "job_id": job["job_id"],
                            "run_id": job["run_id"],
                            "attempt_id": job["attempt_id"],
                            "return_code": 0,
                            "end_time": end_time,
                        }
                    ],
                },
            )

        for absurd in (1e308, -1.0):  # no clock says that: refused, naming the field
            reply = report(late, absurd)
            assert reply["error"]["code"] == -32602 and "end_time" in reply["error"]["message"], reply
        assert {j.status for j in d.jobs(wf).values()} == {"running"}
        # Possible clocks, but not for this attempt: kept within when it was handed out and now.
        before = time.time()
        assert "result" in report(late, before + 1e9)
        assert "result" in report(early, 1.0)
        after = time.time()
        assert d.wait(wf, state="done").counts == {"completed": 2}
        for job in (early, late):
            (a,) = d.call("jobs.attempts", {"job_id": job["job_id"]}, list[AttemptInfo])
            assert a.start_time <= a.end_time <= after, a
        for command in (("events", str(wf)), ("watch", str(wf))):
            code, out, err = d.ctl(*command)
            assert code == 0 and "job_completed" in out, err
    finally:
        stop_slurm_daemon(d)


# 3. A wrong CA file, and SIGTERM while the daemon does not answer.


def test_a_worker_with_the_wrong_ca_file_fails_at_once_with_one_line(tmp_path, certificate):
    cert, key = certificate
    d = Daemon(tmp_path).start("--listen", "127.0.0.1:0", "--tls-cert", cert, "--tls-key", key)
    try:
        url = d.call("ping")["tcp_url"]
        other = tmp_path / "other"
        other.mkdir()
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
                "-keyout",
                str(other / "key.pem"),
                "-out",
                str(other / "cert.pem"),
            ],
            check=True,
            capture_output=True,
        )
        env = {**os.environ, "TORC_API_TOKEN": open(os.path.join(d.state_dir, "token")).read().strip()}
        w = subprocess.run(
            [
                sys.executable,
                "-m",
                "torcctl",
                "worker",
                "--url",
                url,
                "--ca-file",
                str(other / "cert.pem"),
                "--workflow-id",
                "1",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert w.returncode != 0, w.stderr
        errors = [line for line in w.stderr.splitlines() if line.startswith("torcctl: error:")]
        assert len(errors) == 1 and "certificate" in errors[0] and "Traceback" not in w.stderr, w.stderr
        assert "rpc_retry" not in w.stderr + w.stdout
        # A job's torcctl through the same door says so in one line too.
        r = subprocess.run(
            [sys.executable, "-m", "torcctl", "user-data", "list", "-w", "1"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**env, "TORC_API_URL": url, "TORC_CA_FILE": str(other / "cert.pem")},
        )
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and "certificate" in r.stderr, r.stderr
    finally:
        d.stop()


def test_sigterm_stops_a_worker_waiting_for_its_daemon_and_keeps_its_jobs_exits(make_daemon, tmp_path):
    d = make_daemon().start("--listen", "127.0.0.1:0")
    wf = d.call(
        "workflows.create",
        {
            "spec_text": "name: t\njobs:\n  - {name: long, command: 'sleep 300'}\n",
            "cwd": str(tmp_path),
            "executor": "slurm",
        },
    )["id"]
    journal = tmp_path / "journal" / "w.journal"
    w = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "torcctl",
            "worker",
            "--url",
            f"unix://{d.socket}",
            "--workflow-id",
            str(wf),
            "--poll-interval",
            "0.1",
            "--cpus",
            "1",
            "--journal",
            str(journal),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        d.wait_for(lambda: d.jobs(wf)["long"].status == "running", what="the job to run")
        d.kill9()  # the worker now waits for it (20 minutes by default)
        output = ""
        while "rpc_retry" not in output:
            line = w.stdout.readline()
            assert line, output
            output += line
        w.send_signal(signal.SIGTERM)
        rest, _ = w.communicate(timeout=30)  # not 20 minutes
        output += rest
        assert w.returncode not in (0, None) and "Traceback" not in output, output
        errors = [line for line in output.splitlines() if line.startswith("torcctl: error:")]
        assert len(errors) == 1 and "signal" in errors[0] and str(journal) in errors[0], output
        saved = msgspec.json.decode(journal.read_bytes())
        assert [e["return_code"] for e in saved["exits"]] == [143], saved  # its job, stopped and kept
    finally:
        if w.poll() is None:
            w.kill()
            w.wait()


def test_sigterm_stops_a_worker_that_never_reached_its_daemon(tmp_path):
    probe = __import__("socket").socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    w = subprocess.Popen(
        [sys.executable, "-m", "torcctl", "worker", "--url", f"http://127.0.0.1:{port}", "--workflow-id", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output = ""
        while "rpc_retry" not in output:
            line = w.stdout.readline()
            assert line, output
            output += line
        w.send_signal(signal.SIGTERM)
        rest, _ = w.communicate(timeout=30)
        assert w.returncode not in (0, None) and "Traceback" not in output + rest, output + rest
    finally:
        if w.poll() is None:
            w.kill()
            w.wait()


# 4. A hung daemon is named, and no second one is started.


def test_torcctl_names_a_hung_daemon_and_starts_no_second_one(daemon):
    pid = daemon.proc.pid
    os.kill(pid, signal.SIGSTOP)  # alive, its socket accepting, never answering
    try:
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "torcctl",
                "--socket",
                daemon.socket,
                "--state-dir",
                daemon.state_dir,
                "workflows",
                "list",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        os.kill(pid, signal.SIGCONT)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"does not answer (pid {pid}" in r.stderr and daemon.socket in r.stderr, r.stderr
    assert not os.path.exists(os.path.join(daemon.state_dir, "torcd.log"))  # no second daemon was started
    assert daemon.call("ping")  # and the first, woken, still serves


# 5. A project path with a space.


@slurm
def test_a_workflow_submitted_from_a_directory_with_a_space_runs_on_slurm(tmp_path):
    d = slurm_daemon(tmp_path)
    project = tmp_path / "my project 100%"
    project.mkdir()
    try:
        (project / "wf.yaml").write_text(SPEC_IN.format(name="spaced"))
        code, out, err = d.ctl("submit-slurm", "wf.yaml", cwd=project)
        assert code == 0, err
        wf = int(out.strip())
        info = d.wait(wf, timeout=120, state=("done", "failed"))
        allocs = test_slurm.allocations(d, wf)
        assert info.counts == {"completed": 2}, [a.reason for a in allocs]
        assert all(a.slurm_job_id for a in allocs)
        assert list((project / "output" / "slurm").glob("slurm_*.out"))
    finally:
        stop_slurm_daemon(d)
