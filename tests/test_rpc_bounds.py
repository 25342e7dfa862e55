"""Integers too large for SQLite and control characters bound for a batch script are invalid
params at the door, never an internal error, and the daemon keeps serving."""

from __future__ import annotations

import pytest

from torcctl.transport import RpcError

TOO_BIG = 2**63
CASES = [
    ("workflows.show", {"workflow_id": TOO_BIG}, "workflow_id"),
    ("workflows.show", {"workflow_id": 2**64 + 5}, "workflow_id"),
    ("workflows.cancel", {"workflow_id": TOO_BIG}, "workflow_id"),
    ("jobs.show", {"job_id": TOO_BIG}, "job_id"),
    ("jobs.attempts", {"job_id": TOO_BIG}, "job_id"),
    ("jobs.retry", {"job_ids": [1, TOO_BIG]}, "job_ids[1]"),
    ("jobs.list", {"workflow_id": 1, "offset": TOO_BIG}, "offset"),
    ("events.list", {"workflow_id": 1, "after": TOO_BIG}, "after"),
    ("workflows.set_auto_schedule", {"workflow_id": 1, "threshold": TOO_BIG}, "threshold"),
    ("workers.poll", {"worker_id": TOO_BIG}, "worker_id"),
    ("workers.poll", {"worker_id": 1, "free_cpus": TOO_BIG}, "free_cpus"),
    ("workers.poll", {"worker_id": 1, "started": [{"job_id": 1, "run_id": 1, "attempt_id": 1, "pid": TOO_BIG}]}, "pid"),
    (
        "workers.poll",
        {
            "worker_id": 1,
            "recoveries": [
                {"job_id": 1, "run_id": 1, "attempt_id": 1, "ok": True, "return_code": TOO_BIG, "message": ""}
            ],
        },
        "return_code",
    ),
    (
        "workers.poll",
        {
            "worker_id": 1,
            "exits": [
                {"job_id": 1, "run_id": 1, "attempt_id": 1, "return_code": 0, "end_time": 1.0, "peak_memory": -1}
            ],
        },
        "peak_memory",
    ),
    (
        "workers.poll",
        {
            "worker_id": 1,
            "exits": [
                {"job_id": 1, "run_id": 1, "attempt_id": 1, "return_code": 0, "end_time": 1.0, "peak_memory": TOO_BIG}
            ],
        },
        "peak_memory",
    ),
    (
        "workers.poll",
        {
            "worker_id": 1,
            "exits": [
                {"job_id": 1, "run_id": 1, "attempt_id": 1, "return_code": 0, "end_time": 1.0, "cpu_seconds": 1e13}
            ],
        },
        "cpu_seconds",
    ),
    (
        "workers.poll",
        {
            "worker_id": 1,
            "exits": [{"job_id": 1, "run_id": 1, "attempt_id": 1, "return_code": 0, "end_time": 1.0, "cause": "bored"}],
        },
        "cause",
    ),
    (
        "workflows.add_jobs",
        {
            "workflow_id": 1,
            "spec_text": "name: x\njobs: [{name: a, command: 'true'}]\n",
            "depends_on_ids": {"a": [TOO_BIG]},
        },
        "depends_on_ids",
    ),
    (
        "workflows.add_jobs",
        {"workflow_id": 1, "spec_text": "name: x\njobs: [{name: a, command: 'true'}]\n", "spec_path": "x\ny"},
        "spec_path",
    ),
    ("workflows.recover", {"workflow_id": 1, "memory_multiplier": 0.5}, "memory_multiplier"),
    ("workflows.recover", {"workflow_id": 1, "runtime_multiplier": 1e4}, "runtime_multiplier"),
    (
        "workflows.create",
        {"spec_text": "name: x\njobs: [{name: a, command: 'true'}]\n", "account": "acct\n#SBATCH --wrap=id"},
        "account",
    ),
    (
        "workflows.create",
        {"spec_text": "name: x\njobs: [{name: a, command: 'true'}]\n", "account": "acct\n"},
        "account",
    ),
    ("workflows.create", {"spec_text": "name: x\njobs: [{name: a, command: 'true'}]\n", "cwd": "/tmp\x00x"}, "cwd"),
    (
        "workflows.create",
        {"spec_text": "name: x\njobs: [{name: a, command: 'true'}]\n", "spec_path": "x\x1b[2Jy.yaml"},
        "spec_path",
    ),
]


@pytest.mark.parametrize("method,params,field", CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_out_of_range_or_control_characters_are_invalid_params(daemon, method, params, field):
    with pytest.raises(RpcError) as info:
        daemon.call(method, params)
    assert info.value.code == -32602, info.value.message
    assert field in info.value.message
    assert daemon.call("workflows.list") == []
    assert daemon.client.ping()


def test_the_largest_sqlite_integer_is_a_plain_not_found(daemon):
    with pytest.raises(RpcError) as info:
        daemon.call("workflows.show", {"workflow_id": 2**63 - 1})
    assert info.value.code == -32004
