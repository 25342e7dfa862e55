"""A parameter sweep with a failure handler, from Python: python examples/python/sweep.py"""

from torcctl import Client, WorkflowSpec

spec = (
    WorkflowSpec("sweep", use_pending_failed=True)
    .failure_handler("retry_twice", [{"exit_codes": [75], "max_retries": 2}])
    .job(
        "sim_{n}",
        "echo simulating {n}",
        parameters={"n": "1:5"},
        resources={"num_cpus": 1, "memory": "100m", "runtime": "PT5M"},
        failure_handler="retry_twice",
    )
    .job("aggregate", "echo all five done", depends_on="sim_{n}", parameters={"n": "1:5"})
)

with Client() as client:
    wf = client.submit(spec).wait(timeout=120)
    print(f"workflow {wf.id}: {wf.state}, {wf.counts}")
    for attempt in wf.results():
        print(f"  {attempt.job_name:10} exit {attempt.return_code}")
