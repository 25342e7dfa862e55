"""The diamond workflow, built and run from Python: python examples/python/diamond.py"""

from torcctl import Client, WorkflowSpec

spec = (
    WorkflowSpec("diamond", description="prepare, two branches, join")
    .job("prepare", "echo prepared > prepared.txt")
    .job("left", "cat prepared.txt && echo left", depends_on="prepare")
    .job("right", "cat prepared.txt && echo right", depends_on="prepare")
    .job("join", "echo joined", depends_on=["left", "right"])
)

with Client() as client:
    wf = client.submit(spec).wait(timeout=120)
    print(f"workflow {wf.id}: {wf.state}, {wf.counts}")
    for job in wf.jobs():
        print(f"  {job.name:8} {job.status:10} {client.logs(job.id).strip()!r}")
