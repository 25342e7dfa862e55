"""The Python API against a real daemon: every Client method, as a script and a notebook use it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import torcctl
from torcctl import AsyncClient, Client, ConnectError, InvalidTransition, NotFound, SpecError
from torcctl.api.client import Workflow

DIAMOND = {
    "name": "diamond",
    "jobs": [
        {"name": "prep", "command": "echo prepared"},
        {"name": "left", "command": "echo left", "depends_on": ["prep"]},
        {"name": "right", "command": "echo right >&2", "depends_on": ["prep"]},
        {"name": "join", "command": "echo joined", "depends_on": ["left", "right"]},
    ],
}

PARKS = """
name: parks
use_pending_failed: true
failure_handlers:
  - name: h
    rules:
      - exit_codes: [3]
        max_retries: 1
jobs:
  - name: flaky
    command: test -e ok || exit 7
    failure_handler: h
  - name: after
    command: echo after
    depends_on: [flaky]
"""


def test_submit_a_dict_and_wait_returns_the_final_summary(client, daemon):
    wf = client.submit(DIAMOND, cwd=daemon.tmp)
    assert isinstance(wf, Workflow) and wf.name == "diamond"
    done = wf.wait(timeout=60)
    assert done.state == "done" and done.counts == {"completed": 4}
    assert {j.name: j.status for j in done.jobs()} == dict.fromkeys(("prep", "left", "right", "join"), "completed")
    assert [w.id for w in client.workflows()] == [wf.id]
    assert client.workflow(wf.id).counts == {"completed": 4}


def test_submit_a_path_and_a_text_in_every_format(client, daemon):
    path = daemon.tmp / "one.yaml"
    path.write_text("name: one\njobs:\n  - name: a\n    command: echo a\n")
    assert client.submit(str(path)).wait(timeout=60).counts == {"completed": 1}
    assert client.submit(Path(path)).wait(timeout=60).counts == {"completed": 1}
    text = '{name: "j5", jobs: [{name: "a", command: "echo a"}]}'
    assert client.submit(text, spec_format="json5", cwd=daemon.tmp).wait(timeout=60).counts == {"completed": 1}
    kdl = 'name "k"\njob "a" {\n    command "echo a"\n}\n'
    assert client.submit(kdl, spec_format="kdl", cwd=daemon.tmp).wait(timeout=60).counts == {"completed": 1}


def test_a_bad_spec_lists_every_error_with_its_line_and_creates_nothing(client, daemon):
    text = "name: bad\njobs:\n  - name: a\n    command: echo a\n    bogus: 1\n  - name: b\n    depends_on: [nope]\n"
    with pytest.raises(SpecError) as e:
        client.submit(text, cwd=daemon.tmp)
    lines = [(p.line, p.field) for p in e.value.errors]
    assert (5, "$.jobs[0].bogus") in lines and len(lines) >= 2, lines
    assert all(p.message.startswith("<text>:") for p in e.value.errors)
    assert client.workflows() == []


def test_a_missing_input_file_is_a_spec_error_naming_it(client, daemon):
    spec = {
        "name": "f",
        "files": [{"name": "in", "path": "nowhere.txt"}],
        "jobs": [{"name": "a", "command": "cat nowhere.txt", "input_files": ["in"]}],
    }
    with pytest.raises(SpecError, match=r"nowhere\.txt"):
        client.submit(spec, cwd=daemon.tmp)
    assert client.workflows() == []


def test_a_spec_path_that_does_not_exist_is_named(client, daemon):
    with pytest.raises(FileNotFoundError, match=r"missing\.yaml"):
        client.submit(str(daemon.tmp / "missing.yaml"))


def test_wait_times_out_and_the_workflow_goes_on(client, daemon):
    wf = client.submit({"name": "slow", "jobs": [{"name": "s", "command": "sleep 30"}]}, cwd=daemon.tmp)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        wf.wait(timeout=0.5)
    assert time.monotonic() - started < 10
    assert wf.refresh().state == "active"
    wf.cancel()
    assert wf.wait(timeout=30).state == "canceled"
    wf.delete()
    with pytest.raises(NotFound):
        client.workflow(wf.id)


def test_jobs_attempts_results_and_logs(client, daemon):
    wf = client.submit(DIAMOND, cwd=daemon.tmp).wait(timeout=60)
    jobs = {j.name: j for j in client.jobs(wf.id)}
    assert [j.name for j in client.jobs(wf.id, status="completed", limit=2, offset=1)] == ["left", "right"]
    assert client.job(jobs["join"].id).depends_on == sorted([jobs["left"].id, jobs["right"].id])
    attempts = client.attempts(jobs["prep"].id)
    assert len(attempts) == 1 and attempts[0].return_code == 0
    assert {a.job_name for a in client.results(wf.id)} == set(jobs)
    assert client.logs(jobs["prep"].id) == "prepared\n"
    assert client.logs(jobs["right"].id, stream="stderr") == "right\n"
    assert client.logs(jobs["right"].id, attempts[0].attempt_id, "stdout") == ""
    with pytest.raises(ValueError, match="stream"):
        client.logs(jobs["prep"].id, stream="both")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no such attempt"):
        client.logs(jobs["prep"].id, attempt_id=9)


def test_retry_fail_classify_reset_and_recover(client, daemon):
    wf = client.submit(PARKS, cwd=daemon.tmp).wait(timeout=60)
    assert wf.state == "awaiting_classification"
    flaky = client.jobs(wf.id, status="pending_failed")[0]
    with pytest.raises(InvalidTransition):
        client.retry(client.jobs(wf.id, status="blocked")[0].id, reason="not parked")
    (daemon.tmp / "ok").write_text("")
    assert client.retry(flaky.id, reason="the input is there now") == [flaky.id]
    assert client.wait(wf.id, timeout=60).counts == {"completed": 2}
    (daemon.tmp / "ok").unlink()
    assert client.reset(wf.id) == 2
    parked = client.wait(wf.id, timeout=60)
    assert parked.state == "awaiting_classification"
    assert client.classify(wf.id, {flaky.id: ("fail", "a real failure")}) == [flaky.id]
    done = client.wait(wf.id, timeout=60)
    assert done.counts == {"failed": 1, "canceled": 1}
    plan = client.recover(wf.id, dry_run=True)
    assert plan.dry_run and plan.reset == 0
    assert client.workflow(wf.id).counts == {"failed": 1, "canceled": 1}  # a dry run changes nothing


def test_user_data_get_set_list(client, daemon):
    wf = client.submit(DIAMOND, cwd=daemon.tmp)
    client.user_data.set(wf.id, "config", {"alpha": [1, 2.5, None]})
    assert client.user_data.get(wf.id, "config") == {"alpha": [1, 2.5, None]}
    assert [u.name for u in client.user_data.list(wf.id)] == ["config"]
    with pytest.raises(NotFound):
        client.user_data.get(wf.id, "absent")


def test_events_listed_and_followed(client, daemon):
    wf = client.submit(DIAMOND, cwd=daemon.tmp).wait(timeout=60)
    listed = list(client.events(wf.id, follow=False))
    assert listed[0].kind == "workflow_created" and listed[-1].kind == "workflow_done"
    assert [e.seq for e in listed] == sorted(e.seq for e in listed)
    assert [e.kind for e in client.events(wf.id, follow=False, kinds=frozenset({"job_completed"}))] == [
        "job_completed"
    ] * 4
    followed = []
    for event in wf.events(after=listed[2].seq):
        followed.append(event)
        if event.kind == "workflow_done":
            break
    assert followed == listed[3:]


def test_a_followed_stream_resumes_after_a_daemon_restart(client, daemon):
    wf = client.submit(
        {"name": "r", "jobs": [{"name": "gate", "command": "while [ ! -e go ]; do sleep 0.05; done"}]}, cwd=daemon.tmp
    )
    seen: list[str] = []
    errors: list[BaseException] = []

    def follow() -> None:
        try:
            for event in Client(daemon.socket, autostart=False).events(wf.id):
                seen.append(event.kind)
                if event.kind == "workflow_done":
                    return
        except BaseException as e:
            errors.append(e)

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    daemon.wait_for(lambda: "job_started" in seen, what="the job to start")
    daemon.stop()
    daemon.start()
    (daemon.tmp / "go").write_text("")
    reader.join(60)
    assert not errors and not reader.is_alive()
    assert seen.count("workflow_created") == 1  # resumed after the last event seen, not from the start
    assert seen[-1] == "workflow_done"


def test_no_daemon_and_no_autostart_is_a_clear_error(tmp_path):
    c = Client(str(tmp_path / "none.sock"), autostart=False)
    with pytest.raises(ConnectError, match="no torcd answers"):
        c.workflows()


def test_a_client_starts_a_daemon_when_none_answers(tmp_path):
    c = Client(str(tmp_path / "run" / "d.sock"), state_dir=str(tmp_path / "state"))
    try:
        assert c.ping().pid == c.started.pid
    finally:
        c.call("shutdown")
        c.started.wait(30)


def test_async_client_inside_a_running_loop(daemon):
    async def main() -> tuple[str, list[str], int]:
        async with AsyncClient(daemon.socket, autostart=False) as ac:
            wf = await ac.submit(DIAMOND, cwd=daemon.tmp)
            kinds = []
            async for event in ac.events(wf.id):
                kinds.append(event.kind)
                if event.kind == "workflow_done":
                    break
            done = await ac.wait(wf.id, timeout=30)
            # the loop stays free while a call waits: a timer fires meanwhile
            ticks = 0

            async def tick() -> None:
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0.01)

            ticker = asyncio.create_task(tick())
            slow = await ac.submit({"name": "s", "jobs": [{"name": "s", "command": "sleep 0.5"}]}, cwd=daemon.tmp)
            await ac.wait(slow.id, timeout=30)
            ticker.cancel()
            return done.state, kinds, ticks

    state, kinds, ticks = asyncio.run(main())
    assert state == "done" and kinds.count("job_completed") == 4
    assert ticks > 10


def test_a_job_uses_the_client_to_reach_its_daemon(client, daemon):
    script = daemon.tmp / "job.py"
    script.write_text(
        textwrap.dedent(
            """
            import os
            from torcctl import Client
            c = Client()
            wf = int(os.environ["TORC_WORKFLOW_ID"])
            c.user_data.set(wf, "seen", [j.name for j in c.jobs(wf)])
            """
        )
    )
    wf = client.submit(
        {"name": "self", "jobs": [{"name": "me", "command": f"{sys.executable} {script}"}]}, cwd=daemon.tmp
    ).wait(timeout=60)
    assert wf.counts == {"completed": 1}, client.logs(client.jobs(wf.id)[0].id, stream="stderr")
    assert client.user_data.get(wf.id, "seen") == ["me"]


def test_the_public_names_are_typed_and_exported():
    for name in torcctl.__all__:
        assert getattr(torcctl, name) is not None
    assert (Path(torcctl.__file__).parent / "py.typed").exists()
    with pytest.raises(AttributeError):
        torcctl.NoSuchThing  # noqa: B018


def test_the_public_module_passes_mypy_strict(tmp_path):
    user = tmp_path / "user.py"
    user.write_text(
        textwrap.dedent(
            """
            from torcctl import Client, Executor, Workflow

            def run(c: Client) -> int:
                wf: Workflow = c.submit({"name": "x", "jobs": [{"name": "a", "command": "true"}]})
                with Executor(client=c) as ex:
                    f = ex.submit(pow, 2, 3)
                    n: int = f.result()
                return wf.wait(timeout=1.0).id + n
            """
        )
    )
    out = subprocess.run(
        # What a user's code sees of the package: its own errors only (--follow-imports=silent).
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--follow-imports=silent", str(user)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "MYPYPATH": str(Path(torcctl.__file__).parent.parent)},
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_spec_built_in_python_is_submitted_as_is(client, daemon):
    spec = (
        torcctl.WorkflowSpec("built")
        .failure_handler("again", [{"exit_codes": [3], "max_retries": 2}])
        .job("make_{i}", "echo {i}", parameters={"i": "1:3"}, resources={"num_cpus": 1}, failure_handler="again")
        .job("sum", "echo done", depends_on=["make_{i}"], parameters={"i": "1:3"})
    )
    wf = client.submit(spec, cwd=daemon.tmp).wait(timeout=60)
    assert wf.counts == {"completed": 4}
    assert sorted(j.name for j in wf.jobs()) == ["make_1", "make_2", "make_3", "sum"]


@pytest.mark.parametrize("script", ["diamond.py", "sweep.py", "map_function.py", "flaky_map.py"])
def test_the_python_examples_run_as_scripts(daemon, script):
    from conftest import REPO

    out = subprocess.run(
        [sys.executable, str(REPO / "examples" / "python" / script)],
        capture_output=True,
        text=True,
        cwd=daemon.tmp,
        env={**os.environ, "TORCD_SOCKET": daemon.socket},
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    expected = {
        "diamond.py": "'completed': 4",
        "sweep.py": "'completed': 6",
        "map_function.py": "postprocess: {'total': 45}",
        "flaky_map.py": "100 results, sum 661.463; workflow 1\n20 calls needed more than one attempt",
    }[script]
    assert expected in out.stdout, out.stdout


def test_wait_with_a_progress_bar_counts_the_finished_jobs(client, daemon, capsys):
    wf = client.submit(
        {"name": "bar", "jobs": [{"name": f"j{i}", "command": "sleep 0.2"} for i in range(4)]}, cwd=daemon.tmp
    )
    done = wf.wait(timeout=60, progress=True)
    assert done.counts == {"completed": 4}
    assert "4/4" in capsys.readouterr().out


def test_a_mistyped_path_is_named_not_read_as_a_spec(client, daemon):
    with pytest.raises(FileNotFoundError, match="no spec file 'specs/diamond'"):
        client.submit("specs/diamond", cwd=daemon.tmp)
    with pytest.raises(TypeError, match="retry"):
        client.classify(1, {1: "retry"})  # type: ignore[dict-item]
