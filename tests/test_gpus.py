"""GPUs as a budget: each job sees exactly the devices it was given, and no device serves two
running jobs (TORCD_GPUS stands in for real devices; the machine needs none)."""

from __future__ import annotations

import pytest

from torcctl.transport import RpcError
from torcd.core.resources import gpu_ids

FOUR = """
name: gpus
resource_requirements:
  - {name: one_gpu, num_gpus: 1}
jobs:
  - name: train_{i}
    command: echo "$CUDA_VISIBLE_DEVICES $TORC_GPUS" > seen_{i}; sleep 1
    resource_requirements: one_gpu
    parameters: {i: "1:4"}
  - name: cpu_only
    command: echo "[$CUDA_VISIBLE_DEVICES]" > seen_cpu
"""


@pytest.mark.parametrize(
    "env, smi, expected",
    [
        ({"TORCD_GPUS": "2"}, None, ["0", "1"]),
        ({"TORCD_GPUS": "0", "CUDA_VISIBLE_DEVICES": "0,1"}, None, []),
        ({"CUDA_VISIBLE_DEVICES": "2,3"}, ["GPU 0: A", "GPU 1: B"], ["2", "3"]),
        ({"CUDA_VISIBLE_DEVICES": ""}, ["GPU 0: A"], []),
        ({}, ["GPU 0: NVIDIA H100 (UUID: GPU-1)", "GPU 1: NVIDIA H100 (UUID: GPU-2)"], ["0", "1"]),
        ({}, None, []),
    ],
)
def test_which_gpus_a_daemon_hands_out(env, smi, expected):
    assert gpu_ids(env, smi) == expected


def test_four_one_gpu_jobs_on_two_gpus_never_share_a_device(make_daemon, tmp_path):
    d = make_daemon(max_parallel_jobs=8).start(env={"TORCD_GPUS": "2"})
    wf = d.submit(FOUR)
    assert d.wait(wf, timeout=60).counts == {"completed": 5}
    spans = []
    for name, job in d.jobs(wf).items():
        (a,) = d.attempts(job.id)
        if name == "cpu_only":
            assert (tmp_path / "seen_cpu").read_text() == "[]\n" and a.gpus is None  # no device at all
            continue
        seen = (tmp_path / f"seen_{name.split('_')[1]}").read_text().split()
        assert seen[0] == seen[1] == a.gpus and a.gpus in ("0", "1")
        spans.append((a.start_time, a.end_time, a.gpus))
    for s1, _e1, g1 in spans:  # at each start: who runs then, and on which device
        running = [g for s2, e2, g in spans if s2 <= s1 < e2]
        assert len(running) <= 2 and running.count(g1) == 1, spans


def test_a_job_needing_more_gpus_than_the_machine_has_is_refused_at_submit(make_daemon):
    d = make_daemon().start(env={"TORCD_GPUS": "2"})
    with pytest.raises(RpcError, match="needs 3 GPUs and this daemon has 2"):
        d.submit(
            "name: big\nresource_requirements:\n  - {name: r, num_gpus: 3}\n"
            "jobs:\n  - {name: a, command: 'true', resource_requirements: r}\n"
        )
    assert d.call("workflows.list") == []


def test_an_adopted_job_keeps_its_device(make_daemon):
    d = make_daemon().start(env={"TORCD_GPUS": "1"})
    wf = d.submit(
        "name: a\nresource_requirements:\n  - {name: g, num_gpus: 1}\njobs:\n"
        "  - {name: first, command: sleep 3, resource_requirements: g}\n"
    )
    d.wait_for(lambda: d.jobs(wf)["first"].status == "running", what="the first job to run")
    d.kill9()
    d.start(env={"TORCD_GPUS": "1"})
    wf2 = d.submit(
        "name: b\nresource_requirements:\n  - {name: g, num_gpus: 1}\njobs:\n"
        "  - {name: second, command: 'true', resource_requirements: g}\n",
        name="b.yaml",
    )
    d.wait(wf2, timeout=30)
    d.wait(wf, timeout=30)
    (first,) = d.attempts(d.jobs(wf)["first"].id)
    (second,) = d.attempts(d.jobs(wf2)["second"].id)
    assert first.gpus == second.gpus == "0" and second.start_time >= first.end_time, (
        first,
        second,
        d.log.read_text()[-3000:],
    )
