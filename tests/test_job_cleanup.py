"""What a job leaves running does not outlive it: its group when it ends, and even processes
that left its session (setsid) when it is canceled."""

from __future__ import annotations

from torcd.services.processes import is_alive


def test_a_background_child_of_a_finished_job_is_gone(daemon, tmp_path):
    wf = daemon.submit("name: w\njobs:\n  - {name: j, command: 'sleep 300 & echo $! > bg.pid'}\n")
    assert daemon.wait(wf, state="done").counts == {"completed": 1}
    pid = int((tmp_path / "bg.pid").read_text())
    daemon.wait_for(lambda: not is_alive(pid), what=f"the background child {pid} to be gone")


def test_a_setsid_child_is_gone_after_cancel(daemon, tmp_path):
    wf = daemon.submit("name: w\njobs:\n  - {name: j, command: 'setsid sleep 300 & echo $! > s.pid; sleep 300'}\n")
    pid_file = tmp_path / "s.pid"
    daemon.wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), what="the setsid child")
    pid = int(pid_file.read_text())
    assert is_alive(pid)
    code, _, err = daemon.ctl("workflows", "cancel", str(wf))
    assert code == 0, err
    daemon.wait_for(lambda: not is_alive(pid), what=f"the setsid child {pid} to be gone")


def test_a_setsid_or_double_forked_child_is_gone_when_its_job_is_stopped_for_its_runtime(daemon, tmp_path):
    """Found in review: a child started with setsid, or double-forked, outlived the runtime
    limit that stopped its job."""
    wf = daemon.submit("""\
name: w
resource_requirements:
  - {name: short, runtime: PT1S}
jobs:
  - name: j
    resource_requirements: short
    command: "setsid sleep 300 & echo $! > s.pid; (sleep 300 & echo $! > d.pid) ; sleep 300"
""")
    assert daemon.wait(wf, state="done").counts == {"failed": 1}
    assert daemon.attempts(daemon.jobs(wf)["j"].id)[0].cause == "timeout"
    for name in ("s.pid", "d.pid"):
        pid = int((tmp_path / name).read_text())
        daemon.wait_for(lambda: not is_alive(pid), timeout=10, what=f"the escaped child {pid} to be gone")
