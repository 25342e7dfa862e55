"""Torc's chained allocations (`serialize_allocations`): every allocation of such a scheduler has
one Slurm job name and `--dependency=singleton`, so Slurm runs them one at a time; `slurm
schedule-nodes -n N` queues a whole chain at once."""

from __future__ import annotations

import json
import subprocess

import pytest
from test_slurm import pytestmark as needs_slurm
from test_slurm import sdaemon  # noqa: F401

from torcd.errors import SpecError
from torcd.slurm import render_script
from torcd.spec.parse import SlurmSchedulerSpec, parse_spec


def sbatch_lines(scheduler: SlurmSchedulerSpec, workflow_id: int = 1, allocation_id: int = 2) -> list[str]:
    text = render_script(
        workflow_id=workflow_id,
        allocation_id=allocation_id,
        scheduler=scheduler,
        cpus=4,
        account=None,
        url="http://h:1",
        token_file="/t",
        log_dir="/out/slurm",
    )
    return [line.removeprefix("#SBATCH ") for line in text.splitlines() if line.startswith("#SBATCH")]


def job_name(lines: list[str]) -> str:
    return next(line.removeprefix("--job-name=") for line in lines if line.startswith("--job-name="))


def test_a_chained_schedulers_allocations_share_a_name_and_wait_for_each_other():
    chain = SlurmSchedulerSpec(name="chain", serialize_allocations=True)
    first, second = sbatch_lines(chain, allocation_id=2), sbatch_lines(chain, allocation_id=3)
    assert job_name(first) == job_name(second) and job_name(first).startswith("torc-wf1-")
    assert "--dependency=singleton" in first
    # Another scheduler, or another workflow, chains on its own.
    assert job_name(sbatch_lines(SlurmSchedulerSpec(name="other", serialize_allocations=True))) != job_name(first)
    assert job_name(sbatch_lines(chain, workflow_id=9)) != job_name(first)
    plain = sbatch_lines(SlurmSchedulerSpec(name="chain"))
    assert job_name(plain) == "torc_wf1_a2" and "--dependency=singleton" not in plain


@pytest.mark.parametrize("option", ["--dependency=afterok:1", "-d", "-dafterok:1", "--job-name=x", "-J", "-Jx"])
def test_an_extra_option_that_would_break_the_chain_is_refused_at_its_line(option):
    text = (
        "name: s\nslurm_schedulers:\n"
        f"  - {{name: chain, serialize_allocations: true, extra: ['--constraint=ib', '{option}']}}\n"
        "jobs:\n  - {name: a, command: 'true'}\n"
    )
    with pytest.raises(SpecError) as e:
        parse_spec(text, "s.yaml")
    assert (e.value.line, e.value.field) == (3, "$.slurm_schedulers[0].extra[1]")
    assert "would break the chain" in e.value.message
    parse_spec(text.replace("serialize_allocations: true", "serialize_allocations: false"), "s.yaml")


@needs_slurm
def test_a_chain_queued_at_once_runs_one_allocation_at_a_time(sdaemon):
    (sdaemon.tmp / "chain.yaml").write_text(
        "name: chain\n"
        "slurm_schedulers:\n"
        "  - {name: chain, partition: debug, walltime: '00:05:00', cpus: 1, mem: 100M, serialize_allocations: true}\n"
        "jobs:\n"
        "  - {name: a, command: 'while [ ! -f go ]; do sleep 0.1; done'}\n"
        "  - {name: b, command: 'true', depends_on: [a]}\n"
    )
    code, out, err = sdaemon.ctl("submit-slurm", "chain.yaml")
    assert code == 0, err
    wf = int(out.strip())
    code, out, err = sdaemon.ctl("slurm", "schedule-nodes", str(wf), "-n", "2", "--json")
    assert code == 0, err
    queued = [a["slurm_job_id"] for a in json.loads(out)]
    assert len(queued) == 2
    sdaemon.wait_for(lambda: sdaemon.jobs(wf)["a"].status == "running", timeout=60, what="a running")

    def pending_on_dependency() -> list[str]:
        listed = subprocess.run(
            ["squeue", "-h", "-o", "%i %j %T %r", "-j", ",".join(queued)], capture_output=True, text=True
        ).stdout.split("\n")
        return [line for line in listed if line.split()[2:4] == ["PENDING", "Dependency"]]

    # The first allocation runs a; the two queued behind it wait on the singleton dependency.
    waiting = sdaemon.wait_for(lambda: len(pending_on_dependency()) == 2 and pending_on_dependency(), what="a chain")
    names = {line.split()[1] for line in waiting}
    running = [a for a in sdaemon.call("allocations.list", {"workflow_id": wf}) if a["state"] == "running"]
    assert len(names) == 1 and len(running) == 1
    (sdaemon.tmp / "go").touch()
    assert sdaemon.wait(wf, timeout=120).counts == {"completed": 2}

    # Done: the two still queued behind it are cancelled, not left to start and find nothing.
    def cancelled() -> bool:
        allocations = {a["slurm_job_id"]: a for a in sdaemon.call("allocations.list", {"workflow_id": wf})}
        return all(
            (allocations[q]["state"], allocations[q].get("slurm_state")) == ("done", "CANCELLED") for q in queued
        )

    sdaemon.wait_for(cancelled, timeout=60, what="the queued allocations cancelled")
    assert not any(
        a.get("started") for a in sdaemon.call("allocations.list", {"workflow_id": wf}) if a["slurm_job_id"] in queued
    )
    code, out, err = sdaemon.ctl("slurm", "schedule-nodes", str(wf), "--scheduler", "nope")
    assert code == 2 and "no scheduler named 'nope' (chain)" in err
