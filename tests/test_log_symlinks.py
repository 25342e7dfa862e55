"""Job logs are never written through a symlink someone else planted in a shared output directory."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import run_as

SPEC = "name: w\njobs:\n  - {name: j, command: echo secret}\n"


def plant(stdio_dir, victim, owner: int | None, mode: int) -> None:
    """A job_stdio directory with symlinks, at the names the first job's logs will have, to `victim`."""
    stdio_dir.mkdir(parents=True)
    for suffix in (".o", ".e"):
        link = stdio_dir / f"job_wf1_j1_r1_a1{suffix}"
        link.symlink_to(victim)
        if owner is not None:
            os.lchown(link, owner, owner)
    if owner is not None:
        os.chown(stdio_dir, owner, owner)
    stdio_dir.chmod(mode)


def failed_attempt(d, wf):
    d.wait(wf, state="done")
    job = d.jobs(wf)["j"]
    attempts = d.attempts(job.id)
    assert job.status == "failed" and [a.return_code for a in attempts] == [126], (job, attempts)
    return attempts[0]


def test_a_log_directory_owned_by_another_user_fails_the_job_naming_it(daemon, tmp_path, other_user):
    victim = tmp_path / "bashrc"
    victim.write_text("mine\n")
    stdio_dir = tmp_path / "output" / "job_stdio"
    plant(stdio_dir, victim, other_user.pw_uid, 0o755)
    attempt = failed_attempt(daemon, daemon.submit(SPEC))
    assert f"owned by user {other_user.pw_name} (uid {other_user.pw_uid})" in attempt.message
    assert str(stdio_dir) in attempt.message
    assert victim.read_text() == "mine\n"


def test_a_log_directory_others_can_write_fails_the_job(daemon, tmp_path):
    victim = tmp_path / "bashrc"
    victim.write_text("mine\n")
    stdio_dir = tmp_path / "output" / "job_stdio"
    plant(stdio_dir, victim, None, 0o777)
    attempt = failed_attempt(daemon, daemon.submit(SPEC))
    assert "writable by others (mode 0777" in attempt.message and str(stdio_dir) in attempt.message
    assert victim.read_text() == "mine\n"


def test_a_recovery_log_is_never_opened_through_a_symlink(daemon, tmp_path):
    victim = tmp_path / "bashrc"
    victim.write_text("mine\n")
    stdio_dir = tmp_path / "output" / "job_stdio"
    stdio_dir.mkdir(parents=True, mode=0o755)
    (stdio_dir / "recovery_wf1_j1_r1_a1.o").symlink_to(victim)
    wf = daemon.submit("""\
name: w
failure_handlers:
  - name: h
    rules:
      - {exit_codes: [3], recovery_script: "echo recovered", max_retries: 2}
jobs:
  - {name: j, command: "exit 3", failure_handler: h}
""")
    daemon.wait(wf, state="done")
    job = daemon.jobs(wf)["j"]
    assert job.status == "failed" and "recovery script could not start" in job.reason, job
    assert victim.read_text() == "mine\n"


def test_a_group_member_who_swaps_the_output_directory_mid_run_redirects_nothing(make_daemon, shared_tmp, other_user):
    """The attack found in review: in a setgid project directory (2775) a group member renames
    `output/` while a workflow runs and puts a directory of symlinks in its place. Logs are
    opened by the daemon, relative to the directory it checked, so the swap redirects nothing:
    the next job's logs would land in the attacker's directory, which is refused."""
    root = Path(shared_tmp)
    victim = root / "bashrc"
    victim.write_text("mine\n")
    project = root / "project"
    project.mkdir()
    os.chown(project, os.getuid(), other_user.pw_gid)
    os.chmod(project, 0o2775)
    d = make_daemon()
    d.tmp = root
    d.start()
    wf = d.submit(
        """\
name: w
output_dir: project/output
jobs:
  - {name: first, command: "echo one; while [ ! -e go ]; do sleep 0.02; done; echo two"}
  - {name: second, command: "echo secret", depends_on: [first]}
""",
        cwd=root,
    )
    d.wait_for(lambda: d.jobs(wf)["first"].status == "running", what="the first job to run")
    second = d.jobs(wf)["second"].id

    def swap() -> None:
        os.rename(project / "output", project / "old")
        (project / "output" / "job_stdio").mkdir(parents=True)
        for suffix in (".o", ".e"):
            (project / "output" / "job_stdio" / f"job_wf{wf}_j{second}_r1_a1{suffix}").symlink_to(victim)

    run_as(other_user, swap)
    (root / "go").touch()
    d.wait(wf, state="done")
    assert victim.read_text() == "mine\n"
    assert (project / "old" / "job_stdio" / f"job_wf{wf}_j{d.jobs(wf)['first'].id}_r1_a1.o").read_text() == "one\ntwo\n"
    [attempt] = d.attempts(second)
    assert attempt.return_code == 126 and f"owned by user {other_user.pw_name}" in attempt.message, attempt


def test_a_fifo_or_symlink_a_job_leaves_at_its_next_log_fails_that_attempt_not_the_daemon(daemon, tmp_path):
    """A job may plant what it likes in its own log directory; the next attempt's log opened
    without following or blocking, and the daemon carries on."""
    wf = daemon.submit("""\
name: w
failure_handlers:
  - name: h
    rules: [{match_all_exit_codes: true, max_retries: 3}]
jobs:
  - name: j
    failure_handler: h
    command: |
      d=$(dirname "$(readlink /proc/$$/fd/1)")
      n=$(basename "$(readlink /proc/$$/fd/1)" .o)
      mkfifo "$d/${n%_a*}_a$((TORC_ATTEMPT_ID + 1)).o"
      ln -s /etc/passwd "$d/${n%_a*}_a$((TORC_ATTEMPT_ID + 2)).e"
      exit 3
""")
    daemon.wait(wf, state="done")
    job = daemon.jobs(wf)["j"]
    codes = [(a.return_code, a.message) for a in daemon.attempts(job.id)]
    assert [c for c, _ in codes] == [3, 126, 126], codes
    assert "is a FIFO" in codes[1][1] and "symbolic link" in codes[2][1], codes
    assert daemon.client.ping(2)


def test_a_job_that_turns_its_own_logs_into_a_fifo_or_dev_zero_hangs_no_reader(daemon):
    """Found in review: `mkfifo` at the job's own stderr path hung the event loop in open() for
    `jobs list`, `jobs show` and the MCP tools (SIGTERM could not stop it); a symlink to
    /dev/zero read until memory ran out. Logs are read only as regular files, bounded, off the
    event loop."""
    wf = daemon.submit("""\
name: w
jobs:
  - name: fifo
    command: 'e=$(readlink /proc/$$/fd/2); rm -f "$e"; mkfifo "$e"; exit 1'
  - name: zero
    command: 'e=$(readlink /proc/$$/fd/2); rm -f "$e"; ln -sf /dev/zero "$e"; o=$(readlink /proc/$$/fd/1); rm -f "$o"; ln -s /dev/zero "$o"; exit 1'
""")  # noqa: E501 a spec line as a user writes it
    daemon.wait(wf, state="done")
    jobs = daemon.jobs(wf, "failed")  # with stderr tails: must answer, not hang
    assert set(jobs) == {"fifo", "zero"} and all(j.stderr_tail is None for j in jobs.values())
    for job in jobs.values():
        assert daemon.call("jobs.show", {"job_id": job.id})["status"] == "failed"
    for name, stream in (("fifo", "--stderr"), ("zero", "--stderr"), ("zero", "--tail=5")):
        code, out, err = daemon.ctl("logs", str(jobs[name].id), stream)
        assert code == 2 and "cannot read" in err and "Traceback" not in err, (code, err)
    assert daemon.stop() == 0  # SIGTERM still stops it


def test_a_directory_above_the_logs_that_another_user_owns_or_anyone_can_write_fails_the_job(
    daemon, tmp_path, other_user
):
    """Defense in depth beside the descriptors: a layout where another user can swap a directory
    above the logs at will (theirs, or world-writable without the sticky bit) is refused."""
    victim = tmp_path / "bashrc"
    victim.write_text("mine\n")
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)  # anyone may write here, no sticky bit
    wf = daemon.submit(SPEC.replace("name: w", "name: w\noutput_dir: shared/output"))
    attempt = failed_attempt(daemon, wf)
    assert "can be written by anyone (mode 0777, no sticky bit)" in attempt.message and str(shared) in attempt.message
    os.chmod(shared, 0o755)
    theirs = shared / "theirs"
    theirs.mkdir()
    os.chown(theirs, other_user.pw_uid, other_user.pw_gid)
    wf = daemon.submit(SPEC.replace("name: w", "name: w2\noutput_dir: shared/theirs/output"))
    attempt = failed_attempt(daemon, wf)
    assert f"owned by user {other_user.pw_name}" in attempt.message and str(theirs) in attempt.message
    assert victim.read_text() == "mine\n"
