"""Planning allocations: jobs packed into node shapes and the walltime (pure tables)."""

import pytest

from torcd.core.slurm_plan import JobNeed, NodeShape, misfit, pack, plan

G = 1 << 30
NODE = NodeShape(cpus=16, memory=64 * G, gpus=2)
HOUR = 3600.0


def jobs(n: int, **need) -> list[JobNeed]:
    return [JobNeed(f"j{i}", **need) for i in range(n)]


@pytest.mark.parametrize(
    "batch, nodes_per_allocation, limit, current, allocations, nodes",
    [
        (jobs(16), 1, 10, 0, 1, [16]),  # sixteen 1-CPU jobs: one whole node, not sixteen allocations
        (jobs(17), 1, 10, 0, 2, [16, 1]),
        (jobs(40), 2, 10, 0, 2, [16, 16, 8]),  # 3 nodes in 2-node allocations
        (jobs(64, cpus=4), 1, 3, 1, 2, [4, 4]),  # capped by max_allocations, counting the open one: 2 nodes planned
        (jobs(4, gpus=1), 1, 10, 0, 2, [2, 2]),  # GPUs fill a node before its CPUs do
        (jobs(64, runtime=HOUR / 4), 1, 10, 0, 1, [64]),  # four rounds of 16 fit an hour on one node
        (jobs(65, runtime=HOUR / 4), 1, 10, 0, 2, [64, 1]),
        ([JobNeed("big", cpus=16), *jobs(3)], 1, 10, 0, 2, [1, 3]),  # first-fit decreasing: the wide one alone
        ([], 1, 10, 0, 0, []),
    ],
)
def test_jobs_pack_into_node_shapes(batch, nodes_per_allocation, limit, current, allocations, nodes):
    p = plan("s", batch, NODE, HOUR, nodes_per_allocation, limit, current)
    assert p.allocations == allocations
    assert sorted(map(len, p.nodes), reverse=True) == sorted(nodes, reverse=True)


@pytest.mark.parametrize(
    "job, why",
    [
        (JobNeed("a", cpus=17), "needs 17 CPUs; a node has 16"),
        (JobNeed("a", memory=65 * G), "needs 65.0 GiB of memory; a node has 64.0 GiB"),
        (JobNeed("a", gpus=3), "needs 3 GPUs; a node has 2"),
        (JobNeed("a", runtime=2 * HOUR), "needs a runtime of 2h; the walltime is 60min"),
        (JobNeed("a", cpus=16, memory=64 * G, gpus=2, runtime=HOUR), None),
    ],
)
def test_a_job_that_fits_no_node_says_why(job, why):
    assert misfit(job, NODE, HOUR) == why
    p = plan("s", [job], NODE, HOUR, 1, 4, 0)
    assert p.refused == ({} if why is None else {"a": why}) and len(p.nodes) == (why is None)


def test_memory_unknown_on_either_side_is_not_checked():
    assert misfit(JobNeed("a", memory=10 * G), NodeShape(4), HOUR) is None
    assert len(pack(jobs(3, memory=None), NodeShape(4, 1 * G), HOUR)) == 1
