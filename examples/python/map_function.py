"""Torc's "map a Python function" tutorial: python examples/python/map_function.py"""

import os

from torcctl import Client, map_function_to_jobs

params = [
    {"input1": 1, "input2": 2, "input3": 3},
    {"input1": 4, "input2": 5, "input3": 6},
    {"input1": 7, "input2": 8, "input3": 9},
]
here = os.path.dirname(os.path.abspath(__file__))
with Client() as client:
    jobs = map_function_to_jobs(
        client,
        None,  # create the workflow (Torc creates an empty one first)
        "simulation",
        "run",
        params,
        module_directory=here,
        resource_requirements={"num_cpus": 1, "memory": "1g", "runtime": "PT1H"},
        postprocess_func="postprocess",
    )
    wf_id = jobs[0].workflow_id
    print(f"Created workflow {wf_id} with {len(jobs)} jobs.")
    client.wait(wf_id, timeout=120)
    for job in jobs[:-1]:
        print(f"  {job.name}: {client.user_data.get(wf_id, f'output_{job.name}')}")
    print(f"  postprocess: {client.user_data.get(wf_id, 'postprocess_result')}")
