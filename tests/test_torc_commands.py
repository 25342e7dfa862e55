"""Torc's command names and flags, in torc-py: `run WORKFLOW_ID`, `results`, `-f json`, `jobs list -s`."""

from __future__ import annotations

import json
import socket

SPEC = """name: mixed
failure_handlers:
  - name: h
    rules:
      - {exit_codes: [10], max_retries: 2}
jobs:
  - {name: ok, command: "true"}
  - {name: flaky, command: "[ $TORC_ATTEMPT_ID -ge 2 ] || exit 10", failure_handler: h}
  - {name: broken, command: "exit 3"}
"""


def test_run_takes_the_id_of_a_workflow_already_submitted(daemon):
    wf = daemon.submit(SPEC)
    code, out, _ = daemon.ctl("run", str(wf))
    assert code == 1 and f"workflow {wf}: mixed (3 jobs" in out and "failed" in out
    code, out, err = daemon.ctl("run", "999")
    assert code == 2 and "no workflow 999" in err


def test_results_lists_every_attempt_with_filters(daemon):
    wf = daemon.submit(SPEC)
    daemon.wait(wf)
    code, out, _ = daemon.ctl("--json", "results", str(wf))
    rows = json.loads(out)
    assert sorted((r["job_name"], r["attempt_id"], r["return_code"]) for r in rows) == [
        ("broken", 1, 3),
        ("flaky", 1, 10),
        ("flaky", 2, 0),
        ("ok", 1, 0),
    ]
    code, out, _ = daemon.ctl("-f", "json", "results", str(wf), "--failed")
    assert sorted(r["job_name"] for r in json.loads(out)) == ["broken", "flaky"]
    code, out, _ = daemon.ctl("results", str(wf), "--return-code", "3")
    assert code == 0 and "broken" in out and "flaky" not in out
    daemon.ctl("workflows", "reset-status", str(wf), "--failed-only")
    daemon.wait(wf)
    _, out, _ = daemon.ctl("--json", "results", str(wf), "--return-code", "3")
    assert [r["run_id"] for r in json.loads(out)] == [2]  # the current run only
    _, out, _ = daemon.ctl("--json", "results", str(wf), "--return-code", "3", "--all-runs")
    assert [r["run_id"] for r in json.loads(out)] == [1, 2]


def test_jobs_list_takes_torcs_short_flags(daemon):
    wf = daemon.submit(SPEC)
    daemon.wait(wf)
    code, out, _ = daemon.ctl("-f", "json", "jobs", "list", str(wf), "-s", "failed")
    assert code == 0 and [j["name"] for j in json.loads(out)] == ["broken"]
    _, out, _ = daemon.ctl("--json", "jobs", "list", str(wf), "--sort-by", "name")
    assert [j["name"] for j in json.loads(out)] == ["broken", "flaky", "ok"]
    _, out, _ = daemon.ctl("jobs", "list", str(wf), "--format", "json")
    assert json.loads(out)


def test_torcs_workflow_fields_are_stored_and_shown(daemon):
    import getpass

    wf = daemon.submit("""name: about
project: climate
metadata: {owner: team-a, tags: [x, y]}
jobs:
  - {name: a, command: "echo $1", invocation_script: "bash -c 'echo wrapped' && true", depends_on: null}
  - {name: b, command: "true", depends_on: [a]}
""")
    code, out, _ = daemon.ctl("--json", "workflows", "show", str(wf))
    shown = json.loads(out)
    assert (shown["user"], shown["project"], shown["metadata"]) == (
        getpass.getuser(),
        "climate",
        {"owner": "team-a", "tags": ["x", "y"]},
    )
    code, out, _ = daemon.ctl("workflows", "show", str(wf))
    assert "climate" in out and "team-a" in out
    assert daemon.wait(wf).counts == {"completed": 2}
    assert daemon.jobs(wf)["a"].command == "bash -c 'echo wrapped' && true echo $1"
    wf2 = daemon.submit("name: u\nuser: someone\njobs:\n  - {name: a, command: 'true'}\n")
    assert daemon.call("workflows.show", {"workflow_id": wf2})["user"] == "someone"


def test_a_job_that_does_not_cancel_on_a_failed_dependency_runs_anyway(daemon, tmp_path):
    wf = daemon.submit("""name: all_done
jobs:
  - {name: a, command: "exit 3"}
  - {name: g, command: "sleep 1"}
  - {name: b, command: "true", depends_on: [a]}
  - {name: c, command: "true", depends_on: [a], cancel_on_blocking_job_failure: false}
  - {name: d, command: "true", depends_on: [c]}
  - {name: e, command: "true", depends_on: [b], cancel_on_blocking_job_failure: false}
  - {name: f, command: "true", depends_on: [a, g], cancel_on_blocking_job_failure: false}
  - {name: h, command: "true", depends_on: [b]}
""")
    daemon.wait(wf)
    jobs = daemon.jobs(wf)
    assert {n: j.status for n, j in jobs.items()} == {
        "a": "failed",
        "b": "canceled",
        "h": "canceled",  # Torc's default: what a failure blocks is canceled
        "c": "completed",
        "d": "completed",  # c runs anyway, and what waits for c runs after it
        "e": "completed",  # its dependency was canceled: ended, for a job that runs whatever happened
        "f": "completed",
        "g": "completed",
    }
    f, g = (daemon.attempts(jobs[n].id)[0] for n in ("f", "g"))
    assert f.start_time >= g.end_time  # f still waited for its dependency that was running


def test_jobs_update_resources_sets_the_next_attempts_limits_and_refuses_a_running_job(daemon):
    wf = daemon.submit("name: upd\njobs:\n  - {name: slow, command: 'sleep 30'}\n  - {name: done, command: 'true'}\n")
    daemon.wait_for(lambda: daemon.jobs(wf)["slow"].status == "running", what="slow to run")
    daemon.wait_for(lambda: daemon.jobs(wf)["done"].status == "completed", what="done to complete")
    slow, done = daemon.jobs(wf)["slow"].id, daemon.jobs(wf)["done"].id
    code, _, err = daemon.ctl("jobs", "update-resources", str(slow), "--memory", "1g", "--reason", "more")
    assert code == 2 and "is running; change its resources once this attempt has ended" in err
    code, out, _ = daemon.ctl(
        "jobs",
        "update-resources",
        str(done),
        "--memory",
        "1g",
        "--runtime",
        "PT2M",
        "--num-cpus",
        "2",
        "--reason",
        "bigger input next time",
    )
    assert code == 0 and f"job {done}: memory none -> 1.0 GiB" in out and "num_cpus 1 -> 2" in out
    for args, message in (
        (["--memory", "1q"], "1q"),
        (["--num-cpus", "0"], "invalid params"),
        (["--memory", "99999t"], "more than this daemon's memory budget"),
    ):
        code, _, err = daemon.ctl("jobs", "update-resources", str(done), *args, "--reason", "r")
        assert code == 2 and message in err and "Traceback" not in err, err
    daemon.call("workflows.cancel", {"workflow_id": wf})


def test_torcs_spellings_of_commands_and_flags_work(daemon, tmp_path):
    (tmp_path / "mixed.yaml").write_text(SPEC)
    code, out, err = daemon.ctl("workflows", "check", "mixed.yaml")
    assert code == 0, err
    code, out, err = daemon.ctl("workflows", "create", "mixed.yaml")
    assert code == 0, err
    wf = int(out.strip())
    daemon.wait(wf)
    code, out, _ = daemon.ctl("--json", "workflows", "get", str(wf))
    assert code == 0 and json.loads(out)["id"] == wf
    job = daemon.jobs(wf)["ok"].id
    code, out, _ = daemon.ctl("--json", "jobs", "get", str(job))
    assert code == 0 and json.loads(out)["name"] == "ok"
    code, out, err = daemon.ctl("watch", str(wf), "-r", "-m", "1", "-p", "5", "-s")
    assert code == 1 and "Traceback" not in err  # `broken` failed for a reason recover does not handle
    log = tmp_path / "output" / f"watch_{socket.gethostname()}_wf{wf}.log"
    assert "job_completed" in log.read_text() and "workflow_done" in log.read_text()  # Torc's watch log
    code, out, err = daemon.ctl("watch", str(wf), "-o", "elsewhere", "-q")
    assert code == 1 and (tmp_path / "elsewhere" / log.name).exists(), err
    code, out, err = daemon.ctl("--json", "user-data", "list", str(wf))
    assert code == 0 and json.loads(out) == [], err
    code, out, err = daemon.ctl("user-data", "list", str(wf), "-w", str(wf + 1))
    assert code == 2 and "two workflows given" in err


def test_format_json_may_follow_the_command_as_torcs_docs_write_it(daemon):
    wf = daemon.submit(SPEC)
    daemon.wait(wf)
    code, out, _ = daemon.ctl("jobs", "list", str(wf), "-f", "json")
    assert code == 0 and {j["name"] for j in json.loads(out)} == {"ok", "flaky", "broken"}
    code, out, _ = daemon.ctl("events", str(wf), "--format", "json")
    assert code == 0 and json.loads(out.splitlines()[0])["workflow_id"] == wf


def test_watch_goes_on_without_its_log_where_it_cannot_write_one(daemon, tmp_path):
    wf = daemon.submit(SPEC)
    daemon.wait(wf)
    (tmp_path / "blocker").write_text("a file where the log's directory would be")
    code, out, err = daemon.ctl("watch", str(wf), "-o", "blocker/logs", "-q")
    assert code == 1 and "warning: no watch log: cannot write" in err and "Traceback" not in err
