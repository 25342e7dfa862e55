"""Torc's map_function_to_jobs and `torcctl run-function`, against a real daemon."""

from __future__ import annotations

import pytest
from conftest import REPO

from torcctl import map_function_to_jobs

MODULE_DIR = str(REPO / "examples" / "python")
PARAMS = [{"input1": i, "input2": i + 1, "input3": i + 2} for i in (1, 4, 7)]


def test_jobs_added_to_an_existing_workflow_wait_for_the_jobs_named(client, daemon):
    wf = client.submit({"name": "pre", "jobs": [{"name": "setup", "command": "sleep 0.3"}]}, cwd=daemon.tmp)
    setup = client.jobs(wf.id)[0]
    jobs = map_function_to_jobs(
        client,
        wf.id,
        "simulation",
        "run",
        PARAMS,
        postprocess_func="postprocess",
        module_directory=MODULE_DIR,
        name_prefix="sim_",
        depends_on_job_ids=[setup.id],
    )
    assert [j.name for j in jobs] == ["sim_1", "sim_2", "sim_3", "sim_postprocess"]
    assert all(client.job(j.id).depends_on == [setup.id] for j in jobs[:3])
    done = client.wait(wf.id, timeout=120)
    assert done.counts == {"completed": 5}
    assert client.user_data.get(wf.id, "output_sim_2") == {"sum": 15}
    assert client.user_data.get(wf.id, "sim_postprocess_result") == {"total": 45}
    started = {a.job_name: a.start_time for a in client.results(wf.id)}
    ended_setup = client.attempts(setup.id)[0].end_time
    assert all(started[f"sim_{i}"] >= ended_setup for i in (1, 2, 3))


def test_a_function_that_raises_fails_its_job_with_the_traceback_in_its_log(client, daemon):
    jobs = map_function_to_jobs(client, None, "simulation", "run", [{"input1": 1}], module_directory=MODULE_DIR)
    wf = client.wait(jobs[0].workflow_id, timeout=120)
    assert wf.counts == {"failed": 1}
    assert "KeyError: 'input2'" in client.logs(jobs[0].id, stream="stderr")


def test_a_module_or_function_that_is_not_there_is_refused_before_anything_is_added(client, daemon):
    with pytest.raises(ValueError, match="cannot import module 'no_such_module'"):
        map_function_to_jobs(client, None, "no_such_module", "run", PARAMS)
    with pytest.raises(ValueError, match="has no function 'nope'"):
        map_function_to_jobs(client, None, "simulation", "nope", PARAMS, module_directory=MODULE_DIR)
    with pytest.raises(ValueError, match="has no function 'nope'"):
        map_function_to_jobs(client, None, "simulation", "run", PARAMS, "nope", module_directory=MODULE_DIR)
    assert client.workflows() == []


def test_run_function_outside_a_job_is_a_clear_error(daemon, monkeypatch):
    monkeypatch.delenv("TORC_WORKFLOW_ID", raising=False)
    code, out, err = daemon.ctl("run-function")
    assert code == 2 and "runs as a job" in err and "Traceback" not in err
    code, out, err = daemon.ctl("run-function", "--call", "/nowhere", "x")
    assert code == 2 and "call number" in err


def test_a_refused_map_overwrites_no_input_of_the_jobs_already_there(client, daemon):
    jobs = map_function_to_jobs(client, None, "simulation", "run", PARAMS[:1], module_directory=MODULE_DIR)
    wf = jobs[0].workflow_id
    before = client.user_data.get(wf, "input_1")
    with pytest.raises(ValueError, match="already has 1, input_1, output_1"):
        map_function_to_jobs(client, wf, "simulation", "run", [{"input1": 100}], module_directory=MODULE_DIR)
    assert client.user_data.get(wf, "input_1") == before
