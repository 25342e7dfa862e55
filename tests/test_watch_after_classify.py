"""`torcctl watch` follows a workflow from where it is now to its next end, not to an old end in the log."""

from __future__ import annotations

SPEC = """
name: parked
failure_handlers:
  - name: h
    rules:
      - exit_codes: [10]
        max_retries: 2
jobs:
  - name: needs_input
    command: sleep 0.5; test -f input.txt || exit 3
    failure_handler: h
  - name: after
    command: sleep 0.5; echo done
    depends_on: [needs_input]
"""


def test_watch_after_a_retry_returns_when_the_retried_job_and_its_dependents_completed(daemon, tmp_path):
    wf = daemon.submit(SPEC)
    assert daemon.wait(wf).state == "awaiting_classification"
    (tmp_path / "input.txt").write_text("fixed\n")
    code, out, err = daemon.ctl("jobs", "retry", str(daemon.jobs(wf)["needs_input"].id), "--reason", "input fixed")
    assert code == 0, err
    code, out, err = daemon.ctl("watch", str(wf))
    assert code == 0, (out, err)
    assert {j.status for j in daemon.jobs(wf).values()} == {"completed"}
    assert out.count("workflow_awaiting_classification") == 1 and "workflow_done" in out


def test_watch_after_a_reset_follows_the_new_run_to_its_end(daemon):
    wf = daemon.submit(
        "name: again\njobs:\n  - name: a\n    command: sleep 0.5\n  - name: b\n"
        "    command: sleep 0.5\n    depends_on: [a]\n"
    )
    daemon.wait(wf)
    code, _, err = daemon.ctl("workflows", "reset-status", str(wf))
    assert code == 0, err
    code, out, err = daemon.ctl("--json", "watch", str(wf))
    assert code == 0, err
    assert out.count('"workflow_done"') == 2
    info = daemon.call("workflows.show", {"workflow_id": wf})
    assert info["run_id"] == 2 and info["state"] == "done" and info["counts"] == {"completed": 2}


def test_watch_of_an_idle_workflow_returns_at_once(daemon):
    wf = daemon.submit("name: idle\njobs:\n  - name: a\n    command: 'true'\n")
    daemon.wait(wf)
    code, out, _ = daemon.ctl("watch", "-q", str(wf))
    assert code == 0 and "completed" in out
