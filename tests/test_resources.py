"""Resource requirements: Torc's memory and duration formats, the spec's errors, and runtimes
enforced on real processes (locally, after a daemon restart, and in a worker)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from torcd.core.resources import parse_duration, parse_memory
from torcd.errors import SpecError
from torcd.protocol import WorkflowSummary
from torcd.spec.parse import parse_spec


@pytest.mark.parametrize(
    "text, expected",
    [
        ("20g", 20 << 30),
        ("20G", 20 << 30),
        ("512m", 512 << 20),
        ("1.5g", 3 << 29),
        ("100k", 100 << 10),
        ("2t", 2 << 40),
        ("1024", 1024),
        ("8gb", 8 << 30),
        (" 4M ", 4 << 20),
    ],
)
def test_memory(text, expected):
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["20q", "", "g", "-1g", "1.g", "0", "1e3", "2p", "20 gigs"])
def test_memory_refused(text):
    with pytest.raises(ValueError, match=r"must be a number|out of range"):
        parse_memory(text)


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("PT1H", 3600),
        ("PT90S", 90),
        ("P0DT1M", 60),
        ("P1DT2H", 93600),
        ("PT1.5H", 5400),
        ("P1W", 604800),
        ("pt30m", 1800),
        ("PT0,5S", 0.5),
        ("P2D", 172800),
        ("PT1H30M15S", 5415),
    ],
)
def test_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["1h", "PT", "P", "PT0S", "90", "P1H", "PT1D", "T1H", "P100000W", "PT-1S"])
def test_duration_refused(text):
    with pytest.raises(ValueError, match=r"ISO-8601|out of range"):
        parse_duration(text)


SPEC = """name: r
resource_requirements:
  - name: small
    num_cpus: 2
    memory: 1.5g
    runtime: PT90S
  - name: gpu
    num_gpus: 1
jobs:
  - {name: a, command: "true", resource_requirements: small}
  - {name: b, command: "true", num_cpus: 3}
  - {name: c, command: "true"}
"""


def test_jobs_take_their_requirements():
    jobs = {j.name: j for j in parse_spec(SPEC, "r.yaml").jobs}
    a = jobs["a"]
    assert (a.num_cpus, a.num_gpus, a.memory_bytes, a.runtime_seconds) == (2, 0, 3 << 29, 90.0)
    assert (jobs["b"].num_cpus, jobs["b"].runtime_seconds) == (3, None)
    assert (jobs["c"].num_cpus, jobs["c"].memory_bytes) == (1, None)  # the default: 1 CPU, no limits


@pytest.mark.parametrize(
    "change, line, field, message",
    [
        (("memory: 1.5g", "memory: 20q"), 5, "$.resource_requirements[0].memory", "must be a number"),
        (("runtime: PT90S", "runtime: 1h"), 6, "$.resource_requirements[0].runtime", "ISO-8601"),
        (("num_cpus: 2", "num_cpus: -2"), 4, "$.resource_requirements[0].num_cpus", ">= 1"),
        (("num_gpus: 1", "num_gpus: -1"), 8, "$.resource_requirements[1].num_gpus", ">= 0"),
        (
            ("resource_requirements: small}", "resource_requirements: big}"),
            10,
            "$.jobs[0].resource_requirements",
            "unknown resource requirement 'big'",
        ),
        (
            ("resource_requirements: small}", "resource_requirements: small, num_cpus: 2}"),
            10,
            "$.jobs[0].num_cpus",
            "either `num_cpus` or `resource_requirements`",
        ),
        (("  - name: gpu", "  - name: small"), 7, "$.resource_requirements[1].name", "duplicate"),
    ],
)
def test_bad_requirements_name_line_and_field(change, line, field, message):
    with pytest.raises(SpecError) as e:
        parse_spec(SPEC.replace(*change), "r.yaml")
    assert (e.value.line, e.value.field) == (line, field) and message in e.value.message


TIMED = """
name: timed
failure_handlers:
  - name: h
    rules:
      - {exit_codes: [143], max_retries: 2}
resource_requirements:
  - {name: short, runtime: PT4S}
jobs:
  - {name: slow, command: "sleep 8", resource_requirements: short, failure_handler: h}
  - {name: quick, command: "sleep 0.2", resource_requirements: short}
"""


def test_a_job_past_its_runtime_is_stopped_and_recorded_as_a_timeout(daemon):
    wf = daemon.submit(TIMED)
    info = daemon.wait(wf, timeout=60)
    assert info.counts == {"failed": 1, "completed": 1}
    jobs = daemon.jobs(wf)
    slow = daemon.attempts(jobs["slow"].id)
    assert [(a.return_code, a.cause) for a in slow] == [(143, "timeout"), (143, "timeout")]
    for a in slow:
        assert 4.0 <= a.end_time - a.start_time < 7.0
        assert "stopped after its runtime of 4s" in a.message
    assert [a.cause for a in daemon.attempts(jobs["quick"].id)] == [None]
    code, out, _ = daemon.ctl("jobs", "show", str(jobs["slow"].id))
    assert code == 0 and "4s" in out
    code, out, _ = daemon.ctl("jobs", "attempts", str(jobs["slow"].id))
    assert code == 0 and "timeout" in out


def test_a_job_adopted_after_a_crash_keeps_its_deadline(daemon):
    wf = daemon.submit(
        "name: t\nresource_requirements:\n  - {name: r, runtime: PT3S}\n"
        "jobs:\n  - {name: long, command: sleep 30, resource_requirements: r}\n"
    )
    daemon.wait_for(lambda: daemon.jobs(wf)["long"].status == "running", what="the job to run")
    daemon.kill9()
    daemon.restart()
    daemon.wait(wf, timeout=30)
    (a,) = daemon.attempts(daemon.jobs(wf)["long"].id)
    assert a.cause == "timeout" and a.end_time - a.start_time < 3 + 1 + 3  # runtime + grace + a restart


def test_a_worker_stops_a_job_past_its_runtime_and_reports_the_cause(make_daemon, tmp_path):
    d = make_daemon().start("--listen", "127.0.0.1:0")
    spec = (
        "name: w\nresource_requirements:\n  - {name: r, runtime: PT2S}\njobs:\n"
        "  - {name: slow, command: sleep 20, resource_requirements: r}\n"
    )
    wf = d.call("workflows.create", {"spec_text": spec, "cwd": str(tmp_path), "executor": "slurm"}, WorkflowSummary).id
    t0 = time.monotonic()
    ran = subprocess.run(
        [
            sys.executable,
            "-m",
            "torcctl",
            "worker",
            "--url",
            f"unix://{d.socket}",
            "--workflow-id",
            str(wf),
            "--cpus",
            "1",
            "--poll-interval",
            "0.1",
            "--idle-timeout",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert ran.returncode == 0, ran.stderr
    assert time.monotonic() - t0 < 15
    d.wait(wf, state="done")
    (a,) = d.attempts(d.jobs(wf)["slow"].id)
    assert (a.return_code, a.cause) == (143, "timeout")
