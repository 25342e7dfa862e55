"""Python functions as jobs, Torc's way: `map_function_to_jobs` and the `torcctl run-function`
entry point its jobs run (and the one Executor jobs run, `run-function --call DIR N`).

Torc's meaning: each params dict becomes a job named `{name_prefix}{index}` whose input is the
user data entry `input_{job}` ({module, func, params, job_name, module_directory}) and whose
result goes to `output_{job}`; an optional `postprocess` job runs `postprocess_func` on every
result (a list, in the order of `params`) and stores what it returns in `postprocess_result`.
Params and results are JSON values (1 MiB each at most, as any user data).
"""

from __future__ import annotations

import importlib
import os
import shlex
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import msgspec

from torcctl.api.client import Client
from torcctl.api.models import Job

__all__ = ["check_function", "map_function_to_jobs", "run_function", "run_postprocess"]


def check_function(module: str, func: str, module_directory: str | None = None) -> Callable[..., Any]:
    """Import `module` (from `module_directory` if given) and return its callable `func`; raise
    ValueError saying which of them is missing."""
    if module_directory is not None:
        directory = os.path.abspath(module_directory)
        if directory not in sys.path:
            sys.path.insert(0, directory)
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise ValueError(f"cannot import module {module!r}: {e}") from None
    fn = getattr(mod, func, None)
    if not callable(fn):
        raise ValueError(f"module {module!r} has no function {func!r}")
    return cast(Callable[..., Any], fn)


def map_function_to_jobs(
    client: Client,
    workflow_id: int | None,
    module: str,
    func: str,
    params: Sequence[Mapping[str, Any]],
    postprocess_func: str | None = None,
    module_directory: str | None = None,
    resource_requirements: Mapping[str, Any] | None = None,
    scheduler: Mapping[str, Any] | None = None,
    start_index: int = 1,
    name_prefix: str = "",
    depends_on_job_ids: Sequence[int] | None = None,
    failure_handler: Sequence[Mapping[str, Any]] | None = None,
    workflow_name: str = "mapped_function",
) -> list[Job]:
    """Add a job per params dict that calls `module.func(params)`, and with `postprocess_func`
    a job `postprocess` that calls it on all their results. Returns the jobs added.

    As in Torc, except: `resource_requirements`, `scheduler` and `failure_handler` are the
    entries themselves (their fields as in a spec), not ids, since torc-py keeps no separate
    records of them; and `workflow_id=None` creates the workflow (named `workflow_name`) with
    these jobs, where Torc would have you create an empty one first."""
    check_function(module, func, module_directory)
    if postprocess_func is not None:
        check_function(module, postprocess_func, module_directory)
    where = {"module_directory": os.path.abspath(module_directory)} if module_directory else {}
    spec, extra = _shared_entries(name_prefix, resource_requirements, scheduler, failure_handler)
    runner = " ".join(shlex.quote(a) for a in (sys.executable, "-m", "torcctl"))
    data: dict[str, Any] = {}
    names = []
    for i, job_params in enumerate(params, start=start_index):
        name = f"{name_prefix}{i}"
        data[f"input_{name}"] = {"module": module, "func": func, "params": dict(job_params), "job_name": name, **where}
        data[f"output_{name}"] = {}
        spec["jobs"].append({"name": name, "command": f"{runner} run-function", **extra})
        names.append(name)
    if postprocess_func is not None:
        outputs = [f"output_{n}" for n in names]
        data[f"input_{name_prefix}postprocess"] = {
            "module": module,
            "func": postprocess_func,
            "outputs": outputs,
            **where,
        }
        data[f"{name_prefix}postprocess_result"] = {}
        spec["jobs"].append(
            {"name": f"{name_prefix}postprocess", "command": f"{runner} run-postprocess", "depends_on": names, **extra}
        )
    if workflow_id is None:
        if depends_on_job_ids:
            raise ValueError("depends_on_job_ids needs a workflow_id: the jobs they name are in a workflow")
        spec["name"] = workflow_name
        spec["user_data"] = [{"name": k, "data": v} for k, v in data.items()]
        wf = client.submit(spec)
        return client.jobs(wf.id)
    taken = {j.name for j in client.jobs(workflow_id, limit=1_000_000)} & {j["name"] for j in spec["jobs"]}
    taken |= {u.name for u in client.user_data.list(workflow_id)} & set(data)
    if taken:  # checked before anything is written: a refused add must not leave new inputs behind
        raise ValueError(
            f"workflow {workflow_id} already has {', '.join(sorted(taken)[:5])}: choose another name_prefix"
        )
    for key, value in data.items():  # before the jobs exist, so that none starts without its input
        client.user_data.set(workflow_id, key, value)
    request = {
        "workflow_id": workflow_id,
        "spec_text": msgspec.json.encode(spec).decode(),
        "spec_path": "<map_function_to_jobs>",
        "spec_format": "json",
        "depends_on_ids": {n: list(depends_on_job_ids) for n in names} if depends_on_job_ids else {},
    }
    ids = client.call("workflows.add_jobs", request)["job_ids"]
    return [client.job(ids[job["name"]]) for job in spec["jobs"]]


def _shared_entries(
    prefix: str,
    resource_requirements: Mapping[str, Any] | None,
    scheduler: Mapping[str, Any] | None,
    failure_handler: Sequence[Mapping[str, Any]] | None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """The spec's entries every mapped job names, and the keys that name them."""
    spec: dict[str, Any] = {"name": "map", "jobs": []}
    extra: dict[str, str] = {}
    if resource_requirements:
        spec["resource_requirements"] = [{"name": f"{prefix}map", **resource_requirements}]
        extra["resource_requirements"] = f"{prefix}map"
    if scheduler:
        spec["slurm_schedulers"] = [{"name": f"{prefix}map", **scheduler}]
        extra["scheduler"] = f"{prefix}map"
    if failure_handler is not None:
        spec["failure_handlers"] = [{"name": f"{prefix}map", "rules": [dict(r) for r in failure_handler]}]
        extra["failure_handler"] = f"{prefix}map"
    return spec, extra


def _job_context() -> tuple[Client, int, str]:
    missing = [v for v in ("TORC_WORKFLOW_ID", "TORC_JOB_NAME") if not os.environ.get(v)]
    if missing:
        raise ValueError(f"run-function runs as a job: ${' and $'.join(missing)} not set")
    return Client(autostart=False), int(os.environ["TORC_WORKFLOW_ID"]), os.environ["TORC_JOB_NAME"]


def run_function() -> int:
    """The job side of map_function_to_jobs: call the function on this job's params."""
    client, wf, job = _job_context()
    data = client.user_data.get(wf, f"input_{job}")
    try:
        fn = check_function(data["module"], data["func"], data.get("module_directory"))
        result = fn(data["params"])
    except Exception:
        traceback.print_exc()
        return 1
    client.user_data.set(wf, f"output_{job}", result)
    return 0


def run_postprocess() -> int:
    """The job side of a postprocess: call the function on every job's result, in order."""
    client, wf, job = _job_context()
    prefix = job.removesuffix("postprocess")
    data = client.user_data.get(wf, f"input_{job}")
    results = [client.user_data.get(wf, name) for name in data["outputs"]]
    try:
        fn = check_function(data["module"], data["func"], data.get("module_directory"))
        result = fn(results)
    except Exception:
        traceback.print_exc()
        return 1
    client.user_data.set(wf, f"{prefix}postprocess_result", result)
    return 0
