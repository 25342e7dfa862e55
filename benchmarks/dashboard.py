"""What the dashboard's reads cost on a large workflow: 100,000 jobs and 200,000 dependencies.

    python benchmarks/dashboard.py [--dir DIR] [--runs 5]

Starts a daemon of its own, submits a workflow whose jobs all wait for one `sleep` (so nothing
else runs while it measures), and prints the median of `--runs` calls of each read, in ms, as
the Python client sees it (the round trip included).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

PY = sys.executable
THIRD = 33_333
SPEC = f"""
name: dashboard-scale
jobs:
  - {{name: root, command: "sleep 3600"}}
  - {{name: "a_{{i}}", command: "true", depends_on: [root], parameters: {{i: "1:{THIRD}"}}}}
  - {{name: "b_{{i}}", command: "true", depends_on: ["a_{{i}}", "a_{{j}}"], parameters: {{i: "1:{THIRD}", j: "1:2"}}}}
  - {{name: "c_{{i}}", command: "true", depends_on: ["b_{{i}}", root], parameters: {{i: "1:{THIRD}"}}}}
"""


def timed(call: Callable[[], object], runs: int) -> float:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        call()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", default=None)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="torc-dash-", dir=args.dir))
    socket = str(root / "torcd.sock")
    env = dict(os.environ, TORCD_SOCKET=socket, TORCD_STATE_DIR=str(root / "state"))
    daemon = subprocess.Popen(
        [PY, "-m", "torcd", "--log-level", "warning"], env=env, stderr=open(root / "torcd.log", "wb")
    )
    from torcctl import Client

    try:
        client = Client(socket, autostart=False, timeout=600)
        for _ in range(200):
            if client.transport.ping(0.5):
                break
            time.sleep(0.05)
        t0 = time.perf_counter()
        wf = client.submit(SPEC, spec_format="yaml", cwd=root).id
        print(f"submit: {time.perf_counter() - t0:.1f} s")
        jobs = client.count_jobs(wf)
        deps = sum(n.internal_deps for n in client.graph(wf).nodes) + sum(e.count for e in client.graph(wf).edges)
        print(f"workflow {wf}: {jobs:,} jobs, {deps:,} dependencies")
        reads: dict[str, Callable[[], object]] = {
            "jobs.list offset 50,000 by id (100 jobs)": lambda: client.jobs(wf, limit=100, offset=50_000),
            "jobs.list offset 50,000 by name": lambda: client.jobs(wf, limit=100, offset=50_000, sort="name"),
            "jobs.list offset 50,000 by name, descending": lambda: client.jobs(
                wf, limit=100, offset=50_000, sort="name", descending=True
            ),
            "jobs.list offset 50,000 by status": lambda: client.jobs(wf, limit=100, offset=50_000, sort="status"),
            "jobs.list offset 50,000 by updated": lambda: client.jobs(wf, limit=100, offset=50_000, sort="updated"),
            "jobs.list name contains '_77', first page": lambda: client.jobs(wf, limit=100, name="_77"),
            "jobs.count": lambda: client.count_jobs(wf),
            "jobs.count status=blocked": lambda: client.count_jobs(wf, status="blocked"),
            "jobs.count name contains '_77'": lambda: client.count_jobs(wf, name="_77"),
            "jobs.count template=b_{i}": lambda: client.count_jobs(wf, template="b_{i}"),
            "workflows.graph (by template)": lambda: client.graph(wf),
            "workflows.graph max_nodes=2 (folded)": lambda: client.graph(wf, max_nodes=2),
        }
        for what, call in reads.items():
            print(f"{what}: {timed(call, args.runs):.1f} ms")
        client.cancel(wf)
        client.close()
    finally:
        daemon.terminate()
        daemon.wait(60)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
