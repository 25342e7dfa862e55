"""Jobs as srun steps of their worker's allocation (Torc's `execution_config.mode: slurm`): the
srun words, what sacct says a step used, the spec's refusals, and on the local cluster (with
slurmdbd) a workflow whose steps Slurm accounts for."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess

import anyio
import pytest
from conftest import REPO
from test_mcp import _session, _structured
from test_slurm import pytestmark as needs_slurm
from test_slurm import sdaemon, submit_slurm  # noqa: F401

from torcd.core.attempts import Runnable, SrunOptions
from torcd.core.srun import StepUsage, srun_words, step_name, step_usage
from torcd.errors import SpecError
from torcd.services.step_accounting import StepAccounting
from torcd.spec.parse import parse_spec


def job(**kw) -> Runnable:
    fields = dict(
        job_id=7,
        workflow_id=3,
        name="j",
        command="true",
        run_id=1,
        attempt_id=2,
        num_cpus=4,
        env={},
        cwd="/w",
        output_dir="/w/out",
        stdout_path="o",
        stderr_path="e",
    )
    return Runnable(**{**fields, **kw})


BASE = [
    "srun",
    "--jobid=812",
    "--nodes=1",
    "--ntasks=1",
    "--nodelist=n2",
    "--exact",
    "--job-name=wf3_j7_r1_a2",
    "--cpus-per-task=4",
    "--quiet",
]


@pytest.mark.parametrize(
    "runnable, options, in_step, tail",
    [
        (job(), SrunOptions(), False, ["--cpu-bind=none"]),
        (job(memory=1_500_000_000), SrunOptions(), False, ["--cpu-bind=none", "--mem=1431M"]),
        (job(num_gpus=2, runtime=125.0), SrunOptions(cpu_bind=True), False, ["--gpus=2", "--time=4"]),
        (job(), SrunOptions(signal="TERM@120"), False, ["--cpu-bind=none", "--signal=TERM@120"]),
    ],
)
def test_the_srun_words_of_a_step(runnable, options, in_step, tail):
    assert srun_words(runnable, options, "812", "n2", in_step) == BASE + tail


def test_a_worker_that_is_itself_a_step_overlaps_its_jobs_steps():
    words = srun_words(job(), SrunOptions(), "812", "n2", in_step=True)
    assert "--overlap" in words and "--exact" not in words
    assert step_name(job()) == "wf3_j7_r1_a2"


SACCT = """812|allocation|COMPLETED|0:0|9||00:00.132|n1
812.batch|batch|COMPLETED|0:0|9|12340K|00:00.009|n1
812.0|wf3_j7_r1_a1|FAILED|3:0|4|2.5G|1-02:03:04|n1
812.1|wf3_j7_r1_a2|COMPLETED|0:0|2|119072K|00:01.250|n1
812.2|wf3_j8_r1_a1|RUNNING|0:0|1|||
812.3|wf3_j9_r1_a1|CANCELLED by 0|0:9|1|0|00:00:00|n2
"""


@pytest.mark.parametrize(
    "name, usage",
    [
        ("wf3_j7_r1_a2", StepUsage(119072 * 1024, 1.25, "n1")),
        ("wf3_j7_r1_a1", StepUsage(int(2.5 * 2**30), 93784.0, "n1")),
        ("wf3_j8_r1_a1", None),  # still running: its figures are not in yet
        ("wf3_j9_r1_a1", StepUsage(0, 0.0, "n2")),
        ("wf3_j7_r1_a3", None),  # not (yet) listed
    ],
)
def test_what_sacct_says_a_step_used(name, usage):
    assert step_usage(SACCT, name) == usage


HEAD = "name: s\njobs:\n  - {name: a, command: 'true'}\nexecution_config:\n"
SCHEDULERS = "slurm_schedulers: [{name: s, account: a}]\n"


@pytest.mark.parametrize(
    "config, extra, field, words",
    [
        ("  mode: slurm\n", "", "mode", "has no `slurm_schedulers`"),
        ("  mode: slurm\n  limit_resources: false\n", SCHEDULERS, "limit_resources", "always ask for"),
        (
            "  mode: slurm\n  srun_termination_signal: 'TERM; rm -rf'\n",
            SCHEDULERS,
            "srun_termination_signal",
            "not srun's",
        ),
        ("  enable_cpu_bind: true\n", "", "enable_cpu_bind", "for `mode: slurm`"),
        ("  mode: slurm\n  srun_mpi: pmix\n", SCHEDULERS, "srun_mpi", "srun --mpi="),
    ],
)
def test_what_srun_steps_cannot_take_is_refused_with_its_field(config, extra, field, words):
    with pytest.raises(SpecError) as info:
        parse_spec(HEAD + config + extra, "s.yaml")
    assert info.value.field == f"$.execution_config.{field}" and words in info.value.message, info.value.message


def test_auto_means_steps_in_a_slurm_workflow_and_direct_elsewhere():
    config = "  mode: auto\n  enable_cpu_bind: true\n  srun_termination_signal: R:USR1@60\n"
    assert parse_spec(HEAD + config + SCHEDULERS, "s.yaml").execution.srun == SrunOptions(True, "R:USR1@60")
    assert parse_spec(HEAD + "  mode: auto\n", "s.yaml").execution.srun is None


def fake_sacct(tmp_path, body: str) -> str:
    path = tmp_path / "sacct"
    path.write_text(f"#!/bin/sh\necho run >> {tmp_path}/calls\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


async def test_without_accounting_steps_are_recorded_without_figures_and_sacct_is_asked_once(tmp_path):
    steps = StepAccounting(
        fake_sacct(tmp_path, "echo 'sacct: error: Slurm accounting storage is disabled' >&2; exit 1")
    )
    assert await steps.usage("812", "wf1_j1_r1_a1") is None
    assert await steps.usage("812", "wf1_j2_r1_a1") is None
    assert (tmp_path / "calls").read_text() == "run\n" and not steps.available


async def test_a_step_whose_figures_come_late_is_asked_for_again(tmp_path):
    # Listed as running at first, as a step just ended is until slurmdbd has its record.
    body = (
        f'n=$(wc -l < {tmp_path}/calls); if [ "$n" -lt 3 ]; then echo "812.0|wf1_j1_r1_a1|RUNNING|0:0|1|||"; '
        'else echo "812.0|wf1_j1_r1_a1|COMPLETED|0:0|1|2048K|00:00.500|n1"; fi'
    )
    steps = StepAccounting(fake_sacct(tmp_path, body))
    assert await steps.usage("812", "wf1_j1_r1_a1") == StepUsage(2 * 2**20, 0.5, "n1")
    assert (tmp_path / "calls").read_text().count("run") == 3


@needs_slurm
def test_jobs_run_as_srun_steps_that_slurm_accounts_for(sdaemon):
    shutil.copytree(REPO / "examples", sdaemon.tmp / "examples")
    wf = submit_slurm(sdaemon, (REPO / "examples" / "srun_steps.yaml").read_text())
    assert sdaemon.wait(wf, timeout=120).counts == {"completed": 2, "failed": 2}
    jobs = sdaemon.jobs(wf)
    (where,) = sdaemon.attempts(jobs["where"].id)
    said = open(where.stdout_path).read().split()
    assert said[0] == "step" and said[1].isdigit() and said[5] == f"wf{wf}_j{jobs['where'].id}_r1_a1", said
    slurm_job = said[3]
    (hold,) = sdaemon.attempts(jobs["hold"].id)
    # The step's peak memory and CPU are Slurm's (sacct), not the srun process's.
    assert hold.return_code == 0 and hold.peak_memory is not None and 100 * 2**20 < hold.peak_memory < 400 * 2**20
    assert hold.cpu_seconds is not None
    (fails,) = sdaemon.attempts(jobs["fails"].id)
    assert fails.return_code == 3
    listed = subprocess.run(
        ["sacct", "-j", slurm_job, "-n", "-P", "-o", "JobName,State,ExitCode"], capture_output=True, text=True
    ).stdout.splitlines()
    assert f"wf{wf}_j{jobs['fails'].id}_r1_a1|FAILED|3:0" in listed, listed
    # Past its runtime the worker signals srun, which passes it to the step.
    (sleeps,) = sdaemon.attempts(jobs["sleeps"].id)
    assert (sleeps.return_code, sleeps.cause) == (152, "timeout") and sleeps.end_time - sleeps.start_time < 30
    # Torc's `slurm sacct WF`, and its MCP tool: the allocation, its steps, the walltime in all.
    code, out, err = sdaemon.ctl("-f", "json", "slurm", "sacct", str(wf))
    assert code == 0, err
    report = json.loads(out)
    steps = {r["name"]: r for r in report["rows"] if r["step"] is not None}
    hold_step = steps[f"wf{wf}_j{jobs['hold'].id}_r1_a1"]
    assert hold_step["max_rss_bytes"] > 100 * 2**20 and hold_step["slurm_job_id"] == slurm_job
    assert report["total_walltime_seconds"] > 0 and "Total walltime consumed" in report["summary"]

    async def ask(session):
        return _structured(await session.call_tool("get_slurm_sacct", {"workflow_id": wf}))

    asked = anyio.run(_session, sdaemon, ask)  # the allocation may still be ending: its elapsed time grows
    job_steps = {name for name in steps if name.startswith("wf")}  # the jobs', beside the batch step
    assert {r["name"] for r in asked["rows"] if r["name"].startswith("wf")} == job_steps and len(job_steps) == 4
    assert asked["total_walltime_seconds"] >= report["total_walltime_seconds"]
    assert f"wf{wf}_j{jobs['sleeps'].id}_r1_a1|CANCELLED" in " ".join(listed) or any(
        line.startswith(f"wf{wf}_j{jobs['sleeps'].id}_r1_a1|") and "COMPLETED" not in line for line in listed
    ), listed


def test_slurm_sacct_says_plainly_when_the_cluster_keeps_no_accounting(tmp_path):
    from torcctl.sacct import SacctUnavailable, sacct_report

    disabled = fake_sacct(tmp_path, "echo 'sacct: error: Slurm accounting storage is disabled' >&2; exit 1")
    with pytest.raises(SacctUnavailable, match="keeps no job accounting"):
        sacct_report(1, ["812"], sacct=disabled)
    with pytest.raises(SacctUnavailable, match="not found"):
        sacct_report(1, ["812"], sacct=str(tmp_path / "nope"))
    assert sacct_report(1, [], sacct=disabled)["total_walltime_seconds"] == 0  # no allocation: nothing to ask
