"""A real torcd per test: temporary socket and state dir, driven through the public client."""

from __future__ import annotations

import io
import os
import pwd
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from torcctl import cli
from torcctl.transport import Transport
from torcd.protocol import AttemptInfo, Event, JobInfo, WorkflowSummary

REPO = Path(__file__).resolve().parent.parent


class Daemon:
    """A torcd subprocess that tests can stop, kill -9 and restart."""

    def __init__(self, tmp: Path, max_parallel_jobs: int = 4):
        self.tmp = tmp
        self.socket = str(tmp / "run" / "torcd.sock")
        self.state_dir = str(tmp / "state")
        self.log = tmp / "torcd.log"
        self.max_parallel_jobs = max_parallel_jobs
        self.proc: subprocess.Popen | None = None
        self.client = Transport(self.socket, timeout=30)

    def start(
        self,
        *extra: str,
        crash_at: str | None = None,
        wait: bool = True,
        env: dict[str, str] | None = None,
        pass_fds: tuple[int, ...] = (),
        max_open_files: int | None = None,
    ) -> Daemon:
        env = {**os.environ, **(env or {})}
        env.pop("TORCD_CRASH_AT", None)
        for name in ("TORC_REQUIRE_SLURM", "TORC_REQUIRE_SYSTEMD", "TORC_REQUIRE_BROWSER"):
            env.pop(name, None)  # keep job environments exactly as users get them
        if crash_at:
            env["TORCD_CRASH_AT"] = crash_at
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "torcd",
                    "--socket",
                    self.socket,
                    "--state-dir",
                    self.state_dir,
                    "--max-parallel-jobs",
                    str(self.max_parallel_jobs),
                    "--shutdown-grace",
                    "2",
                    *extra,
                ],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                env=env,
                pass_fds=pass_fds,
                preexec_fn=None
                if max_open_files is None
                else lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (max_open_files, max_open_files)),
            )
        return self.wait_ready(crash_at) if wait else self

    def wait_ready(self, crash_at: str | None = None) -> Daemon:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.client.ping(0.5):
                return self
            if self.proc.poll() is not None:
                if crash_at:
                    return self  # died at its crash point before answering: the caller expects it
                raise RuntimeError(f"torcd exited {self.proc.returncode}:\n{self.log.read_text()}")
            time.sleep(0.02)
        raise RuntimeError("torcd did not answer")

    def stop(self) -> int:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)
        self.client.close()
        return self.proc.returncode if self.proc else 0

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self.client.close()

    def restart(self, crash_at: str | None = None) -> Daemon:
        self.client.close()
        return self.start(crash_at=crash_at)

    def wait_dead(self, timeout: float = 30) -> int:
        """Wait for a daemon started with a crash point to die there."""
        assert self.proc is not None
        code = self.proc.wait(timeout)
        self.client.close()
        return code

    # -- helpers over the public client --

    def call(self, method: str, params: dict | None = None, result_type=None):
        return self.client.call(method, params, result_type)

    def submit(self, spec: str, cwd: Path | None = None, name: str = "spec.yaml") -> int:
        cwd = cwd or self.tmp
        path = cwd / name
        path.write_text(textwrap.dedent(spec))
        wf = self.call(
            "workflows.create",
            {"spec_text": path.read_text(), "spec_path": str(path), "cwd": str(cwd)},
            WorkflowSummary,
        )
        return wf.id

    def wait(
        self, wf: int, timeout: float = 60, state: str | tuple = ("done", "awaiting_classification")
    ) -> WorkflowSummary:
        deadline = time.monotonic() + timeout
        while True:
            info = self.call("workflows.show", {"workflow_id": wf}, WorkflowSummary)
            if info.state in ((state,) if isinstance(state, str) else state):
                return info
            if time.monotonic() > deadline:
                raise AssertionError(f"workflow {wf} still {info.state} after {timeout}s: {info.counts}")
            time.sleep(0.02)

    def wait_for(self, predicate, timeout: float = 30, what: str = "condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}")

    def jobs(self, wf: int, status: str | None = None) -> dict[str, JobInfo]:
        params = {"workflow_id": wf}
        if status:
            params["status"] = status
        return {j.name: j for j in self.call("jobs.list", params, list[JobInfo])}

    def attempts(self, job_id: int) -> list[AttemptInfo]:
        return self.call("jobs.attempts", {"job_id": job_id}, list[AttemptInfo])

    def events(self, wf: int) -> list[Event]:
        return self.call("events.list", {"workflow_id": wf}, list[Event])

    def ctl_process(self, *args: str, stdin: bytes = b"", timeout: float = 120) -> subprocess.CompletedProcess:
        """Run torcctl as a process of its own against this daemon, in its directory, with `stdin`."""
        return subprocess.run(
            [sys.executable, "-m", "torcctl", "--socket", self.socket, "--no-autostart", *args],
            input=stdin,
            capture_output=True,
            cwd=self.tmp,
            timeout=timeout,
        )

    def ctl(self, *args: str, cwd: Path | None = None) -> tuple[int, str, str]:
        """Run torcctl in-process against this daemon; return (exit code, stdout, stderr)."""
        out, err = io.StringIO(), io.StringIO()
        old = os.getcwd()
        os.chdir(cwd or self.tmp)
        try:
            with redirect_stdout(out), redirect_stderr(err):
                code = cli.main(["--socket", self.socket, "--no-autostart", *args])
        finally:
            os.chdir(old)
        return code, out.getvalue(), err.getvalue()


@pytest.fixture
def daemon(tmp_path: Path):
    d = Daemon(tmp_path).start()
    yield d
    d.stop()


@pytest.fixture
def client(daemon: Daemon):
    """The public Python API's client of the test's daemon."""
    from torcctl import Client as ApiClient

    c = ApiClient(daemon.socket, autostart=False)
    yield c
    c.close()


@pytest.fixture
def make_daemon(tmp_path: Path):
    made: list[Daemon] = []

    def make(max_parallel_jobs: int = 4) -> Daemon:
        d = Daemon(tmp_path, max_parallel_jobs)
        made.append(d)
        return d

    yield make
    for d in made:
        d.stop()


@pytest.fixture
def other_user():
    """A user that exists for one test: another person on the same host (needs root, as in CI)."""
    if os.getuid() != 0 or not shutil.which("useradd"):
        pytest.skip("creating a throwaway user needs root and useradd")
    name = "torcpytest"
    subprocess.run(["userdel", name], capture_output=True)
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)
    yield pwd.getpwnam(name)
    subprocess.run(["userdel", name], capture_output=True)


@pytest.fixture
def shared_tmp():
    """A directory every user can traverse, like a project area under /tmp."""
    path = tempfile.mkdtemp(prefix="torcpy-shared-", dir="/tmp")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run_as(user, action) -> None:
    """Run `action()` in a forked process that has become `user` (with the user's group only);
    raise if it failed."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setgroups([user.pw_gid])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            action()
            code = 0
        except BaseException as e:
            print(f"as {user.pw_name}: {e!r}", file=sys.stderr)
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, f"the action as {user.pw_name} failed"
