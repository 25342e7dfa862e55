"""Memory: what each attempt used, limits enforced on real process trees (`oom`), the daemon's
memory budget, and rules that grow the next attempt's memory."""

from __future__ import annotations

import subprocess
import sys

import pytest

from torcctl.transport import RpcError
from torcd.core.resources import kernel_oom
from torcd.protocol import WorkflowSummary
from torcd.spec.lint import lint_spec
from torcd.spec.parse import parse_spec

MiB = 1 << 20


def hold(mib: int, seconds: float) -> str:
    """A job whose process tree holds `mib` MiB for `seconds` (tail keeps a line without newlines)."""
    return f"(head -c {mib}m /dev/zero; sleep {seconds}) | tail >/dev/null"


@pytest.mark.parametrize(
    "rc, peak, limit, oom",
    [
        (137, 95 * MiB, 100 * MiB, True),
        (137, 90 * MiB, 100 * MiB, True),
        (137, 89 * MiB, 100 * MiB, False),
        (137, 95 * MiB, None, False),
        (137, None, 100 * MiB, False),
        (1, 99 * MiB, 100 * MiB, False),
        (143, 99 * MiB, 100 * MiB, False),
        (137, 200 * MiB, 100 * MiB, True),
    ],
)
def test_a_sigkill_near_the_memory_limit_is_taken_for_the_oom_killer(rc, peak, limit, oom):
    assert kernel_oom(rc, peak, limit) is oom


def test_a_job_over_its_memory_limit_is_killed_and_recorded_as_oom(daemon):
    wf = daemon.submit(f"""name: m
resource_requirements:
  - {{name: small, memory: 100m}}
jobs:
  - {{name: big, command: "{hold(400, 30)}", resource_requirements: small}}
""")
    info = daemon.wait(wf, timeout=30)
    assert info.counts == {"failed": 1}
    (a,) = daemon.attempts(daemon.jobs(wf)["big"].id)
    assert (a.return_code, a.cause, a.memory_limit) == (137, "oom", 100 * MiB)
    assert a.peak_memory > 100 * MiB and "over its memory limit of 100.0 MiB" in a.message
    # Crossing 100 MiB takes tail a fraction of a second; one sampling interval (1 s) later it is gone.
    assert a.end_time - a.start_time < 3
    code, out, _ = daemon.ctl("jobs", "attempts", str(a.job_id))
    assert code == 0 and "oom" in out and "MiB" in out


def test_every_attempt_records_its_peak_memory_and_cpu_time(daemon):
    wf = daemon.submit(f"""name: usage
resource_monitor: {{sample_interval_seconds: 0.2}}
jobs:
  - {{name: sampled, command: "{hold(30, 1.5)}"}}
  - {{name: brief, command: "exec dd if=/dev/zero of=/dev/null bs=30M count=1"}}
  - {{name: busy, command: "python3 -c 'import time; t = time.process_time(); exec(\\"while time.process_time() - t < 0.5: pass\\")'"}}
""")  # noqa: E501 a spec line as a user writes it
    assert daemon.wait(wf, timeout=30).counts == {"completed": 3}
    jobs = daemon.jobs(wf)
    (sampled,) = daemon.attempts(jobs["sampled"].id)
    (brief,) = daemon.attempts(jobs["brief"].id)
    (busy,) = daemon.attempts(jobs["busy"].id)
    # Held for 1.5 s: the samples see the tree's 30 MiB, shared pages counted once.
    assert 0.8 * 30 * MiB <= sampled.peak_memory <= 1.2 * 30 * MiB, sampled.peak_memory
    # Over before its first sample: its CPU time is known (from reaping it), its memory is not.
    assert brief.peak_memory is None and brief.cpu_seconds is not None
    assert 0.45 <= busy.cpu_seconds < 5
    assert sampled.cause is None and brief.memory_limit is None
    code, out, _ = daemon.ctl("--json", "jobs", "attempts", str(jobs["sampled"].id))
    assert code == 0 and '"peak_memory"' in out and '"cpu_seconds"' in out


def test_an_oom_rule_grows_the_next_attempts_memory_until_it_fits(daemon):
    wf = daemon.submit(f"""name: grow
failure_handlers:
  - name: more_memory
    rules:
      - {{causes: [oom], memory_multiplier: 4, max_retries: 3}}
resource_requirements:
  - {{name: small, memory: 100m}}
jobs:
  - {{name: big, command: "{hold(300, 2)}", resource_requirements: small, failure_handler: more_memory}}
""")
    assert daemon.wait(wf, timeout=60).counts == {"completed": 1}
    job = daemon.jobs(wf)["big"]
    first, second = daemon.attempts(job.id)
    assert (first.cause, first.memory_limit) == ("oom", 100 * MiB)
    assert (second.return_code, second.memory_limit) == (0, 400 * MiB)
    assert second.peak_memory > 280 * MiB
    assert job.memory_bytes == 100 * MiB  # the job's own requirement is unchanged: only that attempt grew


def test_the_memory_budget_is_never_overcommitted(make_daemon, tmp_path):
    d = make_daemon(max_parallel_jobs=8).start("--memory", "250m")
    jobs = "\n".join(
        f"  - {{name: j{i}, command: 'echo start $(date +%s.%N) >> {tmp_path}/t{i}; sleep 0.6; "
        f"echo end $(date +%s.%N) >> {tmp_path}/t{i}', resource_requirements: r}}"
        for i in range(6)
    )
    wf = d.submit(f"name: budget\nresource_requirements:\n  - {{name: r, memory: 100m}}\njobs:\n{jobs}\n")
    assert d.wait(wf, timeout=60).counts == {"completed": 6}
    spans = []
    for i in range(6):
        start, end = (float(line.split()[1]) for line in (tmp_path / f"t{i}").read_text().splitlines())
        spans.append((start, end))
    # 250 MiB holds two 100 MiB jobs at a time, never three, though eight CPUs are free.
    most = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert most == 2


def test_a_job_needing_more_memory_than_the_budget_is_refused_at_submit(make_daemon):
    d = make_daemon().start("--memory", "1g")
    with pytest.raises(RpcError, match=r"job 'huge' needs 2.0 GiB of memory and this daemon's budget is 1.0 GiB"):
        d.submit(
            "name: x\nresource_requirements:\n  - {name: r, memory: 2g}\n"
            "jobs:\n  - {name: huge, command: 'true', resource_requirements: r}\n"
        )
    assert d.call("workflows.list", {}, list[WorkflowSummary]) == []


@pytest.mark.parametrize(
    "flag, message",
    [("20q", "--memory: memory '20q' must be a number"), ("0", "out of range"), ("-1g", "must be a number")],
)
def test_a_bad_memory_budget_is_refused_with_a_clear_error(tmp_path, flag, message):
    ran = subprocess.run(
        [
            sys.executable,
            "-m",
            "torcd",
            "--socket",
            str(tmp_path / "s"),
            "--state-dir",
            str(tmp_path / "st"),
            f"--memory={flag}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert ran.returncode == 2 and message in ran.stderr and "Traceback" not in ran.stderr


def test_a_worker_enforces_memory_and_reports_what_jobs_used(make_daemon, tmp_path):
    d = make_daemon().start("--listen", "127.0.0.1:0")
    spec = f"""name: w
resource_requirements:
  - {{name: r, memory: 100m}}
jobs:
  - {{name: big, command: "{hold(400, 30)}", resource_requirements: r}}
  - {{name: fits, command: "{hold(20, 1.5)}", resource_requirements: r}}
"""
    wf = d.call("workflows.create", {"spec_text": spec, "cwd": str(tmp_path), "executor": "slurm"}, WorkflowSummary).id
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
            "2",
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
    d.wait(wf, state="done")
    jobs = d.jobs(wf)
    (big,) = d.attempts(jobs["big"].id)
    (fits,) = d.attempts(jobs["fits"].id)
    assert (big.return_code, big.cause, big.memory_limit) == (137, "oom", 100 * MiB)
    assert fits.return_code == 0 and 16 * MiB < fits.peak_memory < 30 * MiB


MONITORED = """name: mon
resource_monitor:
  sample_interval_seconds: 5
  jobs: {enabled: true, granularity: time_series}
  compute_node: {enabled: true, granularity: summary}
jobs:
  - {name: a, command: "true"}
"""


def test_torcs_resource_monitor_key_is_read_and_its_unkept_parts_are_warned_about(tmp_path):
    spec = parse_spec(MONITORED, "m.yaml")
    assert (spec.monitoring.all_jobs, spec.monitoring.interval) == (True, 5.0)
    flat = parse_spec(
        "name: f\nresource_monitor: {enabled: false, sample_interval_seconds: 2}\n"
        "jobs:\n  - {name: a, command: 'true'}\n",
        "f.yaml",
    )
    assert (flat.monitoring.all_jobs, flat.monitoring.interval) == (False, 2.0)
    assert not parse_spec("name: n\njobs:\n  - {name: a, command: 'true'}\n", "n.yaml").monitoring.all_jobs
    findings = lint_spec(MONITORED, "m.yaml", str(tmp_path))
    assert [(f.line, f.field) for f in findings] == [
        (4, "$.resource_monitor.jobs.granularity"),
        (5, "$.resource_monitor.compute_node"),
    ]


@pytest.mark.parametrize(
    "monitor, field",
    [
        ("{sample_interval_seconds: 0}", "$.resource_monitor.sample_interval_seconds"),
        ("{granularity: hourly}", "$.resource_monitor.granularity"),
        ("{jobs: {enabled: maybe}}", "$.resource_monitor.jobs.enabled"),
        ("{every: 5}", "$.resource_monitor"),
    ],
)
def test_a_bad_resource_monitor_is_refused_with_its_field(monitor, field):
    from torcd.errors import SpecError

    with pytest.raises(SpecError) as e:
        parse_spec(f"name: b\nresource_monitor: {monitor}\njobs:\n  - {{name: a, command: 'true'}}\n", "b.yaml")
    assert e.value.line == 2 and e.value.field.startswith(field), (e.value.field, e.value.message)
