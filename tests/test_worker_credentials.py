"""What a holder of one allocation's credential can do over the TCP door: only workers.* for
that allocation, and only report what was handed to its own worker. TLS on the TCP door."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
import urllib.error
import urllib.request

import msgspec
import pytest
import test_user_data as user_data
from conftest import Daemon
from test_slurm import _allocations_of, allocations, pytestmark, scheduler, sdaemon, submit_slurm  # noqa: F401

from torcd.protocol import AllocationInfo, WorkflowSummary

HELD = """
name: held
slurm_schedulers:
  - name: debug
    partition: debug
    walltime: "00:05:00"
    cpus: 1
    mem: 100M
    extra: ["--hold"]
jobs:
  - name: a
    command: echo a
  - name: b
    command: echo b
"""


def tcp_call(url: str, token: str, method: str, params: dict | None = None, context=None) -> dict:
    body = msgspec.json.encode({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}})
    req = urllib.request.Request(url + "/rpc", data=body, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=20, context=context) as r:
            return msgspec.json.decode(r.read())
    except urllib.error.HTTPError as e:
        return {"http": e.code}


def held_allocation(d: Daemon, tmp_path, name: str = "held") -> tuple[int, AllocationInfo, str]:
    """A Slurm workflow with one allocation held in the queue (it never starts): its credential."""
    (tmp_path / f"{name}.yaml").write_text(HELD.replace("name: held", f"name: {name}"))
    wf = d.call(
        "workflows.create",
        {"spec_text": (tmp_path / f"{name}.yaml").read_text(), "cwd": str(tmp_path), "executor": "slurm"},
        WorkflowSummary,
    ).id
    (alloc,) = d.call("allocations.submit", {"workflow_id": wf, "count": 1}, list[AllocationInfo])
    assert alloc.slurm_job_id, alloc.reason
    path = os.path.join(d.state_dir, "credentials", f"alloc_{alloc.id}.token")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    with open(alloc.script_path) as f:
        script = f.read()
    assert path in script and open(os.path.join(d.state_dir, "token")).read().strip() not in script
    return wf, alloc, open(path).read().strip()


def test_an_allocation_credential_only_reaches_its_own_workers(sdaemon, tmp_path):
    url = sdaemon.call("ping")["tcp_url"]
    wf, alloc, token = held_allocation(sdaemon, tmp_path, "one")
    wf2, alloc2, token2 = held_allocation(sdaemon, tmp_path, "two")
    # Nothing but workers.*: no workflows (running any command as the user), no shutdown, no events.
    spec = "name: evil\njobs:\n  - name: x\n    command: touch /tmp/pwned\n"
    for method, params in (
        ("workflows.create", {"spec_text": spec, "cwd": "/tmp"}),
        ("shutdown", {}),
        ("workflows.delete", {"workflow_id": wf}),
        ("workflows.list", {}),
        ("jobs.list", {"workflow_id": wf}),
    ):
        reply = tcp_call(url, token, method, params)
        assert reply["error"]["code"] == -32001, (method, reply)
    req = urllib.request.Request(f"{url}/events?workflow_id={wf}", headers={"Authorization": f"Bearer {token}"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 403
    # Registering for another allocation or workflow is refused; for its own, it works.
    for params in ({"workflow_id": wf2, "allocation_id": alloc2.id}, {"workflow_id": wf, "allocation_id": alloc2.id}):
        reply = tcp_call(url, token, "workers.register", {**params, "host": "n1", "cpus": 1})
        assert reply.get("error", {}).get("code") == -32001, reply
    mine = tcp_call(
        url, token, "workers.register", {"workflow_id": wf, "allocation_id": alloc.id, "host": "n1", "cpus": 1}
    )["result"]["worker_id"]
    theirs = tcp_call(
        url, token2, "workers.register", {"workflow_id": wf2, "allocation_id": alloc2.id, "host": "n2", "cpus": 1}
    )["result"]["worker_id"]
    # Another allocation's worker cannot be polled (its jobs taken) or finished.
    for method, params in (
        ("workers.poll", {"worker_id": theirs, "free_cpus": 4}),
        ("workers.finish", {"worker_id": theirs}),
    ):
        assert tcp_call(url, token, method, params)["error"]["code"] == -32001
    # Its own worker claims a job; it cannot report the other job (never handed to it) as done.
    got = tcp_call(url, token, "workers.poll", {"worker_id": mine, "free_cpus": 1})["result"]["jobs"]
    assert len(got) == 1
    other = next(j for name, j in sdaemon.jobs(wf).items() if j.id != got[0]["job_id"])
    forged = {"job_id": other.id, "run_id": 1, "attempt_id": 1, "return_code": 0, "end_time": time.time()}
    tcp_call(url, token, "workers.poll", {"worker_id": mine, "claim": False, "exits": [forged]})
    assert sdaemon.jobs(wf)[other.name].status == "ready"
    assert sdaemon.call("workflows.list")  # the daemon is still serving
    # The admin token still does everything.
    admin = open(os.path.join(sdaemon.state_dir, "token")).read().strip()
    assert "result" in tcp_call(url, admin, "workflows.list")


def test_a_worker_cannot_finish_a_local_workflows_recovery(sdaemon, tmp_path):
    url = sdaemon.call("ping")["tcp_url"]
    _, alloc, token = held_allocation(sdaemon, tmp_path, "cred")
    wf = sdaemon.submit("""
name: local
failure_handlers:
  - name: h
    rules:
      - exit_codes: [10]
        recovery_script: sleep 2; exit 1
        max_retries: 3
jobs:
  - name: victim
    command: exit 10
    failure_handler: h
""")
    sdaemon.wait_for(lambda: sdaemon.jobs(wf)["victim"].status == "recovering", what="recovery running")
    worker = tcp_call(
        url,
        token,
        "workers.register",
        {"workflow_id": alloc.workflow_id, "allocation_id": alloc.id, "host": "n1", "cpus": 1},
    )["result"]["worker_id"]
    victim = sdaemon.jobs(wf)["victim"].id
    report = {"job_id": victim, "run_id": 1, "attempt_id": 1, "ok": True, "return_code": 0, "message": "forged"}
    tcp_call(url, token, "workers.poll", {"worker_id": worker, "claim": False, "recoveries": [report]})
    assert sdaemon.wait(wf).counts == {"failed": 1}  # the real script's verdict, not the forged one
    assert [a.attempt_id for a in sdaemon.attempts(victim)] == [1]


@pytest.fixture
def certificate(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return str(cert), str(key)


def test_tls_door_runs_a_workflow_on_slurm_and_refuses_plain_http(tmp_path, certificate):
    import ssl

    cert, key = certificate
    d = Daemon(tmp_path).start(
        "--listen", "127.0.0.1:0", "--tls-cert", cert, "--tls-key", key, "--slurm-poll-interval", "0.5"
    )
    try:
        url = d.call("ping")["tcp_url"]
        assert url.startswith("https://127.0.0.1:")
        admin = open(os.path.join(d.state_dir, "token")).read().strip()
        ctx = ssl.create_default_context(cafile=cert)
        assert tcp_call(url, admin, "workflows.list", context=ctx)["result"] == []
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            tcp_call("http" + url[5:], admin, "workflows.list")
        spec = tmp_path / "tls.yaml"
        spec.write_text(HELD.replace('extra: ["--hold"]', "").replace("name: held", "name: tls"))
        code, out, err = d.ctl("submit-slurm", str(spec))
        assert code == 0, err
        info = d.wait(int(out.strip()), timeout=120, state="done")
        assert info.counts == {"completed": 2}
        script = _allocations_of(d)[0].script_path
        assert f"--ca-file {cert}" in open(script).read()
        assert "tcp_door_without_tls" not in d.log.read_text()
    finally:
        for a in _allocations_of(d):
            if a.slurm_job_id and a.state in ("pending", "running"):
                subprocess.run(["scancel", a.slurm_job_id])
        d.stop()


def test_doors_are_logged_and_a_non_loopback_door_without_tls_is_warned_about(tmp_path):
    d = Daemon(tmp_path).start("--listen", "0.0.0.0:0")
    try:
        log = d.log.read_text()
        assert "tcp_door_without_tls" in log and "doors" in log and "unix socket" in log
    finally:
        d.stop()
    (tmp_path / "loop").mkdir()
    d = Daemon(tmp_path / "loop").start("--listen", "127.0.0.1:0")
    try:
        assert "tcp_door_without_tls" not in d.log.read_text()
    finally:
        d.stop()


def raw_status(url: str, authorization: bytes) -> int:
    """The HTTP status of a request whose Authorization header is these exact bytes."""
    import http.client
    import urllib.parse

    u = urllib.parse.urlparse(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    body = b'{"jsonrpc": "2.0", "id": 1, "method": "workers.poll", "params": {"worker_id": 1}}'
    c.putrequest("POST", "/rpc")
    c.putheader("Authorization", authorization)
    c.putheader("Content-Length", str(len(body)))
    c.endheaders(body)
    status = c.getresponse().status
    c.close()
    return status


def test_found_in_review_ended_deleted_odd_and_repeated(sdaemon, tmp_path):
    from torcctl.transport import _UnixConnection

    url = sdaemon.call("ping")["tcp_url"]
    wf, alloc, token = held_allocation(sdaemon, tmp_path, "ended")
    worker = tcp_call(
        url, token, "workers.register", {"workflow_id": wf, "allocation_id": alloc.id, "host": "n1", "cpus": 1}
    )["result"]["worker_id"]
    # Odd credentials are refused (401), never an internal error; a credential cannot ping or
    # learn which worker ids exist.
    for header in ("Bearer torc-alloc.\u00b2.abc".encode(), b"Bearer torc-alloc.1.\xff\xfe", b"Bearer \xff\xfe"):
        assert raw_status(url, header) == 401, header
    assert tcp_call(url, token, "ping")["error"]["code"] == -32001
    assert tcp_call(url, token, "workers.poll", {"worker_id": 999_999})["error"]["code"] == -32001
    # Slurm ends the allocation: however alive its worker claims to be, it takes no more work.
    subprocess.run(["scancel", alloc.slurm_job_id], check=True)
    sdaemon.wait_for(
        lambda: sdaemon.call("allocations.list", {"workflow_id": wf})[0]["state"] == "done",
        what="the allocation to leave the queue",
    )
    reply = tcp_call(url, token, "workers.poll", {"worker_id": worker, "free_cpus": 4})["result"]
    assert reply["stop"] is True and reply["jobs"] == []
    assert {j.status for j in sdaemon.jobs(wf).values()} == {"ready"}
    # A repeated allocations.submit (its reply lost) submits nothing more.
    body = msgspec.json.encode(
        {"jsonrpc": "2.0", "id": 7, "method": "allocations.submit", "params": {"workflow_id": wf, "count": 1}}
    )
    for _ in range(2):
        c = _UnixConnection(sdaemon.socket, 30)
        c.request("POST", "/rpc", body, {"Idempotency-Key": "submit-once"})
        assert len(msgspec.json.decode(c.getresponse().read())["result"]) == 1
        c.close()
    allocs = sdaemon.call("allocations.list", {"workflow_id": wf}, list[AllocationInfo])
    assert len(allocs) == 2
    for a in allocs:
        if a.state in ("pending", "running"):
            subprocess.run(["scancel", a.slurm_job_id])
    # Deleting the workflow revokes its credentials; ids are never reused.
    sdaemon.wait_for(
        lambda: all(
            a["state"] not in ("pending", "running") for a in sdaemon.call("allocations.list", {"workflow_id": wf})
        ),
        what="ended",
    )
    sdaemon.call("workflows.cancel", {"workflow_id": wf})
    sdaemon.call("workflows.delete", {"workflow_id": wf})
    assert tcp_call(url, token, "workers.poll", {"worker_id": worker}) == {"http": 401}
    _, again, _ = held_allocation(sdaemon, tmp_path, "after")
    assert again.id > max(a.id for a in allocs)


def test_events_refuses_out_of_range_numbers(daemon):
    from torcctl.transport import _UnixConnection

    for query in (
        "workflow_id=99999999999999999999999",
        "workflow_id=1&after=99999999999999999999999",
        "workflow_id=-1",
        "workflow_id=x",
    ):
        c = _UnixConnection(daemon.socket, 10)
        c.request("GET", f"/events?{query}")
        assert c.getresponse().status == 400, query
        c.close()


def test_jobs_in_an_allocation_hand_on_user_data_with_its_credential(sdaemon, tmp_path):
    wf = submit_slurm(sdaemon, user_data.PIPELINE.replace("name: handoff\n", "name: handoff\n" + scheduler(cpus=1)))
    assert sdaemon.wait(wf, timeout=120).counts == {"completed": 2}
    assert json.loads(user_data.stdout_of(sdaemon, wf, "consume")) == {"sum": 20}
    assert allocations(sdaemon, wf)


def test_an_allocation_credential_reaches_only_its_own_workflows_user_data(sdaemon, tmp_path):
    url = sdaemon.call("ping")["tcp_url"]
    wf, _, token = held_allocation(sdaemon, tmp_path, "one")
    other, _, _ = held_allocation(sdaemon, tmp_path, "two")
    # Only what the spec declared (or the user added): a credential cannot fill the database with new entries.
    reply = tcp_call(url, token, "user_data.set", {"workflow_id": wf, "name": "x", "data": [1, 2]})
    assert "declares no user data named 'x'" in reply["error"]["message"]
    sdaemon.call("user_data.set", {"workflow_id": wf, "name": "x", "data": None})
    reply = tcp_call(url, token, "user_data.set", {"workflow_id": wf, "name": "x", "data": [1, 2]})
    assert reply["result"] == {"name": "x", "bytes": 5}
    assert tcp_call(url, token, "user_data.get", {"workflow_id": wf, "name": "x"})["result"]["data"] == [1, 2]
    for method, params in (
        ("user_data.set", {"workflow_id": other, "name": "x", "data": 1}),
        ("user_data.get", {"workflow_id": other, "name": "x"}),
        ("user_data.list", {"workflow_id": other}),
    ):
        assert tcp_call(url, token, method, params)["error"]["code"] == -32001, method
    assert sdaemon.call("user_data.list", {"workflow_id": other}) == []


def start_a_job(url: str, token: str, wf: int, allocation_id: int) -> dict:
    """A worker of the allocation registers, takes one job and says it started: the job, running."""
    params = {"workflow_id": wf, "allocation_id": allocation_id, "host": "n1", "cpus": 1}
    worker = tcp_call(url, token, "workers.register", params)["result"]["worker_id"]
    (got,) = tcp_call(url, token, "workers.poll", {"worker_id": worker, "free_cpus": 1})["result"]["jobs"]
    started = {"job_id": got["job_id"], "run_id": got["run_id"], "attempt_id": got["attempt_id"], "pid": 1234}
    tcp_call(url, token, "workers.poll", {"worker_id": worker, "claim": False, "started": [started]})
    return got


def test_an_allocation_credential_adds_jobs_only_from_jobs_running_in_its_allocation(sdaemon, tmp_path):
    url = sdaemon.call("ping")["tcp_url"]
    wf, alloc, token = held_allocation(sdaemon, tmp_path, "one")
    _, alloc2, token2 = held_allocation(sdaemon, tmp_path, "two")
    local = sdaemon.submit("name: local\njobs:\n  - {name: l, command: 'while [ ! -f go ]; do sleep 0.02; done'}\n")
    sdaemon.wait_for(lambda: sdaemon.jobs(local)["l"].status == "running", what="the local job running")
    got = start_a_job(url, token, wf, alloc.id)
    sdaemon.wait_for(lambda: any(j.status == "running" for j in sdaemon.jobs(wf).values()), what="a running job")
    spawn = {"job_id": got["job_id"], "lineage": "L", "jobs": [{"name": "added", "command": "true"}]}
    # Another allocation's credential, and this one for a job it does not run, add nothing.
    for who, job in ((token2, got["job_id"]), (token, sdaemon.jobs(local)["l"].id)):
        reply = tcp_call(url, who, "jobs.spawn", {**spawn, "job_id": job})
        assert reply["error"]["code"] == -32001, reply
    assert tcp_call(url, token2, "jobs.lineage", {"workflow_id": wf, "lineage": "L"})["error"]["code"] == -32001
    reply = tcp_call(url, token, "jobs.spawn", spawn)
    assert reply["result"]["iteration"] == 1, reply
    added = sdaemon.jobs(wf)["added"]
    assert (added.status, added.lineage) == ("blocked", "L")
    assert tcp_call(url, token, "jobs.lineage", {"workflow_id": wf, "lineage": "L"})["result"]["iterations"] == 1
    assert "added" not in sdaemon.jobs(local) and alloc2.workflow_id != wf
    (sdaemon.tmp / "go").touch()


def test_jobs_added_on_slurm_run_under_their_orchestrators_scheduler_or_one_they_fit_or_name(sdaemon, tmp_path):
    url = sdaemon.call("ping")["tcp_url"]
    spec = HELD.replace(
        'extra: ["--hold"]',
        'extra: ["--hold"]\n  - {name: big, partition: debug, walltime: "00:05:00", cpus: 4, mem: 1G, extra: [--hold]}',
    ).replace("jobs:", "default_scheduler: debug\nresource_requirements: [{name: four, num_cpus: 4}]\njobs:")
    (tmp_path / "two.yaml").write_text(spec)
    wf = sdaemon.call(
        "workflows.create", {"spec_text": spec, "cwd": str(tmp_path), "executor": "slurm"}, WorkflowSummary
    ).id
    submitted = sdaemon.call("allocations.submit", {"workflow_id": wf, "count": 1}, list[AllocationInfo])
    (alloc,) = [a for a in submitted if a.scheduler == "debug"]
    token = open(os.path.join(sdaemon.state_dir, "credentials", f"alloc_{alloc.id}.token")).read().strip()
    got = start_a_job(url, token, wf, alloc.id)
    jobs = [
        {"name": "here", "command": "true"},
        {"name": "there", "command": "true", "scheduler": "big"},
        {"name": "wide", "command": "true", "resource_requirements": "four"},  # fits only big's nodes
    ]
    reply = tcp_call(url, token, "jobs.spawn", {"job_id": got["job_id"], "lineage": "L", "jobs": jobs})
    assert reply.get("result", {}).get("iteration") == 1, reply
    added = sdaemon.jobs(wf)
    assert [added[n].scheduler for n in ("here", "there", "wide")] == ["debug", "big", "big"]
    nope = [{"name": "x", "command": "true", "scheduler": "nope"}]
    bad = tcp_call(url, token, "jobs.spawn", {"job_id": got["job_id"], "lineage": "L", "jobs": nope})
    assert bad["error"]["code"] == -32602 and "no scheduler named 'nope' (big, debug)" in bad["error"]["message"]
