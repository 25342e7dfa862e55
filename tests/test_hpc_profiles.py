"""HPC profiles and `slurm generate` (Torc's): the shipped profiles, custom ones in Torc's config
file, the cluster read from sinfo, which partition suits a job, and schedulers made for a spec
that then runs on the local Slurm cluster."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml
from test_slurm import pytestmark as needs_slurm
from test_slurm import sdaemon  # noqa: F401

from torcctl.hpc import catalog
from torcctl.hpc.profiles import Need, Partition, Profile, detected, matching, walltime
from torcd.spec.parse import parse_spec

KESTREL = catalog.builtin()["kestrel"]
GiB = 1 << 30


# -- which partition suits a job ------------------------------------------


@pytest.mark.parametrize(
    "need, explicit, best",
    [
        (Need(cpus=8, memory_bytes=16 * GiB, runtime_seconds=2 * 3600), None, "short"),
        (Need(cpus=1, memory_bytes=GiB, runtime_seconds=1800), None, "short"),  # debug only if nothing else
        (Need(cpus=8, memory_bytes=300 * GiB), None, "medmem"),
        (Need(cpus=8, memory_bytes=1000 * GiB), None, "bigmem"),
        (Need(cpus=8, runtime_seconds=48 * 3600 + 1), None, "long"),
        (Need(cpus=16, gpus=2), None, "gpu-h100"),  # GPUs only where there are GPUs
        (Need(cpus=110), None, "gpu-h100"),  # the only nodes with more than 104 CPUs
        (Need(cpus=8), "nvme", "nvme"),  # asked for by name only
        (Need(cpus=8), "debug", "debug"),
        (Need(cpus=200), None, None),
        (Need(gpus=8), None, None),
        (Need(memory_bytes=3000 * GiB), None, None),
        (Need(runtime_seconds=11 * 86400), None, None),
    ],
)
def test_the_partition_that_suits_a_job_best(need, explicit, best):
    found = matching(KESTREL, need, explicit)
    assert (found[0].name if found else None) == best
    assert all(p.name != "nvme" for p in found) or explicit == "nvme"


def test_a_partition_needing_many_nodes_is_only_for_jobs_that_use_them():
    assert "hbw" not in [p.name for p in matching(KESTREL, Need(nodes=2))]
    assert "hbw" in [p.name for p in matching(KESTREL, Need(nodes=10))]


def test_a_debug_partition_is_taken_when_nothing_else_fits():
    only = Profile("x", [Partition("debug", 4, 1000, 3600), Partition("batch", 2, 1000, 86400)])
    assert [p.name for p in matching(only, Need(cpus=4))] == ["debug"]
    assert [p.name for p in matching(only, Need(cpus=2))] == ["batch"]


@pytest.mark.parametrize(
    "seconds, text",
    [
        (1, "00:01:00"),
        (60, "00:01:00"),
        (61, "00:02:00"),
        (3600, "01:00:00"),
        (86400, "1-00:00:00"),
        (90061, "1-01:02:00"),
    ],
)
def test_a_runtime_becomes_a_walltime_rounded_up_to_the_minute(seconds, text):
    assert walltime(seconds) == text


@pytest.mark.parametrize(
    "limit, seconds",
    [
        ("infinite", catalog.INFINITE_SECONDS),
        ("UNLIMITED", catalog.INFINITE_SECONDS),
        ("30", 1800),
        ("30:15", 1815),
        ("1:00:00", 3600),
        ("2-00:00:00", 172800),
        ("2-12", 216000),
        ("1-02:03", 93780),
    ],
)
def test_slurm_time_limits_are_read(limit, seconds):
    assert catalog.time_limit(limit) == seconds


@pytest.mark.parametrize("limit", ["", "0", "abc", "1:2:3:4", "-5"])
def test_a_time_limit_that_is_not_one_is_refused(limit):
    with pytest.raises(ValueError):
        catalog.time_limit(limit)


def test_a_profile_from_sinfo_takes_each_partitions_smallest_node():
    text = "\n".join(
        [
            "batch|64|256000|2-00:00:00|(null)|NO",
            "batch|128+|512000|2-00:00:00|(null)|NO",
            "gpu|32|128000|1-00:00:00|gpu:a100:4(S:0-1)|NO",
            "shared|16|64000|4:00:00|(null)|FORCE:4",
            "batch-stdby|64|256000|infinite|(null)|NO",
            "garbage line",
            "empty|0|0|n/a|(null)|NO",
        ]
    )
    profile = catalog.from_sinfo(text)
    parts = {p.name: p for p in profile.partitions}
    assert set(parts) == {"batch", "gpu", "shared", "batch-stdby"}
    assert (parts["batch"].cpus_per_node, parts["batch"].memory_mb, parts["batch"].max_walltime_secs) == (
        64,
        256000,
        172800,
    )
    assert (parts["gpu"].gpus_per_node, parts["gpu"].gpu_type) == (4, "a100") and parts["shared"].shared
    assert "batch-stdby" not in {p.name for p in catalog.from_sinfo(text, skip_standby=True).partitions}
    with pytest.raises(catalog.ProfileError, match="no partition"):
        catalog.from_sinfo("nonsense\n")


def test_a_profile_is_detected_by_its_variable_or_host_name():
    assert detected(KESTREL, {"NREL_CLUSTER": "kestrel"}, "x") and not detected(KESTREL, {"NREL_CLUSTER": "k"}, "x")
    dane = catalog.builtin()["dane"]
    assert detected(dane, {}, "dane12") and detected(dane, {}, "dane3.llnl.gov") and not detected(dane, {}, "rzdane")
    assert not detected(Profile("bad", KESTREL.partitions, detect_hostname="(("), {}, "anything")


# -- the command line -------------------------------------------------------


def ctl(*args: str, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    import os
    import sys

    return subprocess.run(
        [sys.executable, "-m", "torcctl", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=60,
    )


def test_hpc_commands_show_the_shipped_profiles(tmp_path):
    env = {"TORC_CONFIG": str(tmp_path / "none.toml")}
    listed = json.loads(ctl("hpc", "list", "--json", env=env).stdout)
    assert {p["name"] for p in listed} >= {"kestrel", "dane"}
    shown = json.loads(ctl("hpc", "show", "kestrel", "--json", env=env).stdout)
    assert shown["detect_env_var"] == "NREL_CLUSTER=kestrel" and len(shown["partitions"]) == 10
    found = ctl("hpc", "match", "--profile", "kestrel", "--cpus", "8", "--memory", "300g", "--walltime", "2h", env=env)
    assert found.returncode == 0 and found.stdout.splitlines()[2].startswith("medmem"), found.stdout
    assert ctl("hpc", "detect", env={**env, "NREL_CLUSTER": "kestrel"}).stdout.strip() == "kestrel"
    none = ctl("hpc", "match", "--profile", "dane", "--gpus", "1", env=env)
    assert none.returncode == 1 and "no partition of dane fits" in none.stderr


@pytest.mark.parametrize(
    "args, words",
    [
        (["hpc", "show", "nowhere"], "no HPC profile named 'nowhere' (known: dane, kestrel, slurm)"),
        (["hpc", "match", "--profile", "kestrel", "--memory", "lots"], "--memory: memory 'lots'"),
        (["hpc", "match", "--profile", "kestrel", "--walltime", "soon"], "--walltime 'soon'"),
        (["hpc", "match", "--profile", "kestrel", "--walltime=-1h"], "--walltime '-1h'"),
    ],
)
def test_hpc_commands_refuse_what_they_cannot_read(tmp_path, args, words):
    done = ctl(*args, env={"TORC_CONFIG": str(tmp_path / "none.toml")})
    assert done.returncode == 2 and words in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_custom_profiles_and_overrides_come_from_torcs_config_file(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(
        """
[client.hpc.profile_overrides.kestrel]
default_account = "myproj"

[client.hpc.custom_profiles.research]
display_name = "Research Cluster"
detect_env_var = "CLUSTER_NAME=research"

[[client.hpc.custom_profiles.research.partitions]]
name = "batch"
cpus_per_node = 48
memory_mb = 192000
max_walltime_secs = 259200
"""
    )
    env = {"TORC_CONFIG": str(config), "CLUSTER_NAME": "research"}
    assert ctl("hpc", "detect", env=env).stdout.strip() == "research"
    assert json.loads(ctl("hpc", "show", "kestrel", "--json", env=env).stdout)["default_account"] == "myproj"
    config.write_text('[client.hpc.custom_profiles.bad]\ndisplay_name = "x"\n')
    done = ctl("hpc", "list", env=env)
    assert done.returncode == 2 and "custom profile 'bad'" in done.stderr and "partitions" in done.stderr
    config.write_text("[client\n")
    done = ctl("hpc", "list", env=env)
    assert done.returncode == 2 and f"cannot read {config}" in done.stderr


SPEC = """
name: pipeline
resource_requirements:
  - {name: small, num_cpus: 1, memory: 1g, runtime: PT10M}
  - {name: fat, num_cpus: 8, memory: 300g, runtime: PT2H}
  - {name: gpu, num_cpus: 16, num_gpus: 2, memory: 64g, runtime: PT8H}
jobs:
  - {name: "prep_{i}", command: "echo {i}", resource_requirements: small, parameters: {i: "1:3"}}
  - {name: train, command: "echo train", resource_requirements: gpu, depends_on_regexes: ["^prep_"]}
  - {name: report, command: "echo report", resource_requirements: fat, depends_on: [train]}
  - {name: note, command: "echo note"}
"""


def test_slurm_generate_makes_a_scheduler_per_requirement_in_its_best_partition(tmp_path):
    (tmp_path / "wf.yaml").write_text(SPEC)
    env = {"TORC_CONFIG": str(tmp_path / "none.toml")}
    done = ctl("slurm", "generate", "--profile", "kestrel", "--account", "proj", "wf.yaml", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = yaml.safe_load(done.stdout)
    schedulers = {s["name"]: s for s in out["slurm_schedulers"]}
    assert {n: s["partition"] for n, s in schedulers.items()} == {
        "small_scheduler": "short",
        "fat_scheduler": "medmem",
        "gpu_scheduler": "gpu-h100",
        "default_scheduler": "short",
    }
    assert schedulers["small_scheduler"] == {
        "name": "small_scheduler",
        "account": "proj",
        "partition": "short",
        "walltime": "00:13:00",
        "nodes": 1,
        "node_cpus": 104,
        "node_memory": "245760m",
    }
    assert schedulers["gpu_scheduler"]["gres"] == "gpu:4" and schedulers["gpu_scheduler"]["walltime"] == "08:50:00"
    assert [j["scheduler"] for j in out["jobs"]] == [
        "small_scheduler",
        "gpu_scheduler",
        "fat_scheduler",
        "default_scheduler",
    ]
    # Allocations at the start only for what can start then; the rest when their jobs are ready.
    assert sorted(a["scheduler"] for a in out["actions"]) == ["default_scheduler", "small_scheduler"]
    assert "gpu_scheduler, fat_scheduler: no job of theirs can start at once" in done.stderr
    parsed = parse_spec(done.stdout, "out.yaml")
    assert len(parsed.jobs) == 6 and {j.scheduler for j in parsed.jobs} == set(schedulers)
    # As JSON, into a file; without actions.
    done = ctl(
        "slurm",
        "generate",
        "--profile",
        "kestrel",
        "--account",
        "p",
        "--no-actions",
        "-o",
        "o.json",
        "wf.yaml",
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0 and "actions" not in json.loads((tmp_path / "o.json").read_text())


@pytest.mark.parametrize(
    "spec, args, words",
    [
        ("name: x\njobs: [{name: a, command: 'true', bogus: 1}]\n", [], "wf.yaml:2: unknown key `bogus`"),
        (
            "name: x\nresource_requirements: [{name: huge, num_cpus: 500}]\n"
            "jobs: [{name: a, command: 'true', resource_requirements: huge}]\n",
            [],
            "no partition of kestrel fits resource requirement 'huge' (500 CPUs)",
        ),
        (
            "name: x\nslurm_schedulers: [{name: s}]\njobs: [{name: a, command: 'true'}]\n",
            [],
            "the spec has slurm_schedulers already: give --force",
        ),
        ("name: x\njobs: [{name: a, command: 'true'}]\n", ["--no-account"], "which Slurm account?"),
        (
            "name: x\nvariables: {m: 2g}\nresource_requirements: [{name: r, memory: '{m}'}]\n"
            "jobs: [{name: a, command: 'true', resource_requirements: r}]\n",
            [],
            "resource requirement 'r': memory '{m}'",
        ),
    ],
    ids=["invalid-spec", "fits-nothing", "has-schedulers", "no-account", "variable"],
)
def test_slurm_generate_refuses_with_a_reason(tmp_path, spec, args, words):
    (tmp_path / "wf.yaml").write_text(spec)
    account = [] if "--no-account" in args else ["--account", "p"]
    done = ctl(
        "slurm",
        "generate",
        "--profile",
        "kestrel",
        *account,
        "wf.yaml",
        env={"TORC_CONFIG": str(tmp_path / "n")},
        cwd=tmp_path,
    )
    assert done.returncode == 2 and words in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert done.stdout == ""


def test_slurm_generate_with_force_replaces_the_schedulers_and_their_actions(tmp_path):
    (tmp_path / "wf.yaml").write_text(
        "name: x\nslurm_schedulers: [{name: old}]\n"
        "actions: [{trigger_type: on_workflow_start, action_type: schedule_nodes, scheduler: old,"
        " scheduler_type: slurm}]\n"
        "jobs: [{name: a, command: 'true', scheduler: old}]\n"
    )
    done = ctl("slurm", "generate", "--profile", "dane", "--account", "p", "--force", "wf.yaml", cwd=tmp_path)
    out = yaml.safe_load(done.stdout)
    assert [s["name"] for s in out["slurm_schedulers"]] == ["default_scheduler"]
    assert [a["scheduler"] for a in out["actions"]] == ["default_scheduler"]
    assert out["slurm_schedulers"][0]["partition"] == "pbatch"


@needs_slurm
def test_a_generated_spec_runs_on_the_local_cluster(sdaemon):
    partitions = ctl("hpc", "partitions", "slurm", "--json")
    assert partitions.returncode == 0 and json.loads(partitions.stdout)[0]["name"] == "debug", partitions.stderr
    (sdaemon.tmp / "wf.yaml").write_text(
        "name: generated\n"
        "resource_requirements: [{name: small, num_cpus: 1, memory: 100m, runtime: PT5M}]\n"
        "jobs:\n"
        "  - {name: 'part_{i}', command: 'echo {i} > part_{i}.txt', resource_requirements: small, "
        "parameters: {i: '1:3'}}\n"
        "  - {name: total, command: 'cat part_*.txt > total.txt', resource_requirements: small, "
        "depends_on_regexes: ['^part_']}\n"
    )
    done = ctl(
        "slurm", "generate", "--profile", "slurm", "--account", "torc", "-o", "slurm.yaml", "wf.yaml", cwd=sdaemon.tmp
    )
    assert done.returncode == 0 and "small_scheduler: partition debug" in done.stderr, done.stderr
    code, out, err = sdaemon.ctl("submit-slurm", "slurm.yaml")
    assert code == 0, err
    assert sdaemon.wait(int(out.strip()), timeout=180).counts == {"completed": 4}
    assert sorted((sdaemon.tmp / "total.txt").read_text().split()) == ["1", "2", "3"]
