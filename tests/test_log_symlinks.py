"""Job logs are never written through a symlink someone else planted in a shared output directory."""

from __future__ import annotations

import os

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


def test_a_directory_above_the_logs_that_another_user_owns_or_anyone_can_write_fails_the_job(
        daemon, tmp_path, other_user):
    """The swap found in review: another user's (or a world-writable) `output/` lets them replace
    `job_stdio` with a directory of symlinks after torcd checked it."""
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
