"""Executor.map over 100 inputs with a flaky function that a failure handler retries:
python examples/python/flaky_map.py"""

import os

from torcctl import Executor


def simulate(x: int) -> float:
    # A fifth of the calls fail on their first attempt, as on a flaky node ($TORC_ATTEMPT_ID
    # counts a job's attempts from 1).
    if x % 5 == 0 and os.environ["TORC_ATTEMPT_ID"] == "1":
        raise RuntimeError(f"transient failure on input {x}")
    return x**0.5


retry = [{"exit_codes": [1], "max_retries": 5}]
with Executor(resources={"num_cpus": 1, "memory": "200m"}, failure_handler=retry) as ex:
    results = list(ex.map(simulate, range(100)))
    print(f"{len(results)} results, sum {sum(results):.3f}; workflow {ex.workflow_id}")
    retried = [j for j in ex.client.jobs(ex.workflow_id) if j.attempt_id > 1]
    print(f"{len(retried)} calls needed more than one attempt")
