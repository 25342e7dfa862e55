"""What labelled jobs nobody serves cost the daemon's claims: one dispatcher claim pass, in
process on a fresh store, with N ready labelled jobs ahead of one unlabelled job (Torc's
`label`: such jobs wait, ready, for a `run --label`). Prints the median of 20 passes.

    python benchmarks/label_claims.py [N]

Measured on 2 CPUs (#27), N = 200,000: 39 ms a pass with the claim's `label IS NULL OR ...`
(c8d44a3), 0.19 ms with a partial index for each kind of job (main).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from torcd.bus import EventBus
from torcd.spec.parse import parse_spec
from torcd.store.store import Store


async def main(count: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        store = await Store.open(str(Path(d) / "torcd.db"))
        bus = EventBus()
        store.on_commit = lambda events: bus.publish(list(events))
        waiting = (
            f"name: w\njobs:\n  - {{name: 'l{{i}}', command: 'true', label: later, parameters: {{i: '1:{count}'}}}}\n"
        )
        for text in (waiting, "name: u\njobs:\n  - {name: u, command: 'true'}\n"):
            await store.workflows.create_workflow(parse_spec(text, "spec.yaml"), d, "spec.yaml", "local")
        times = []
        for _ in range(20):
            started = time.perf_counter()
            claimed, _ = await store.execution.dispatch([], [], 1, "host")
            times.append(time.perf_counter() - started)
            assert [j.name for j in claimed] in (["u"], []), claimed  # `u` once, then nothing
        await store.close()
    print(f"{count:,} unserved labelled jobs ready ahead: a claim pass takes {statistics.median(times) * 1000:.2f} ms")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000))
