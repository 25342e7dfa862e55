"""How long reading a 100,000-job spec takes in each format, and finding the line of an error
in its last job.

Each spec lists its jobs one by one (a chain: each depends on the one before), as a generated
spec would. Medians of three runs, in this process.

    python benchmarks/spec_formats.py [--jobs 100000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from torcd.errors import SpecError
from torcd.spec.parse import parse_spec


def yaml_spec(n: int) -> str:
    jobs = "".join(
        f"  - name: job_{i}\n    command: echo {i}\n    depends_on: [job_{i - 1}]\n"
        if i
        else f"  - name: job_{i}\n    command: echo {i}\n"
        for i in range(n)
    )
    return "name: big\njobs:\n" + jobs


def json5_spec(n: int) -> str:
    jobs = ",\n".join(
        f"  {{name: 'job_{i}', command: 'echo {i}'" + (f", depends_on: ['job_{i - 1}']" if i else "") + "}"
        for i in range(n)
    )
    return "// generated\n{\n name: 'big',\n jobs: [\n" + jobs + ",\n ],\n}\n"


def kdl_spec(n: int) -> str:
    jobs = "".join(
        f'job "job_{i}" {{\n    command "echo {i}"\n' + (f'    depends_on "job_{i - 1}"\n' if i else "") + "}\n"
        for i in range(n)
    )
    return 'name "big"\n' + jobs


def timed(f) -> float:
    runs = []
    for _ in range(3):
        t = time.perf_counter()
        f()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=100_000)
    n = ap.parse_args().jobs
    rows = []
    for fmt, make, bad in (
        ("yaml", yaml_spec, ("command: echo {last}\n", "command: echo {last}\n    bogus: 1\n")),
        ("json5", json5_spec, ("command: 'echo {last}'", "command: 'echo {last}', bogus: 1")),
        ("kdl", kdl_spec, ('command "echo {last}"\n', 'command "echo {last}"\n    bogus 1\n')),
    ):
        text = make(n)
        broken = text.replace(bad[0].format(last=n - 1), bad[1].format(last=n - 1))
        assert len(parse_spec(text, f"big.{fmt}").jobs) == n

        def error() -> None:
            try:
                parse_spec(broken, f"big.{fmt}")
            except SpecError as e:
                assert e.message.startswith(f"big.{fmt}:"), e.message

        rows.append(
            {
                "format": fmt,
                "jobs": n,
                "MiB": round(len(text) / 2**20, 1),
                "read_s": round(timed(lambda: parse_spec(text, f"big.{fmt}")), 2),
                "error_line_s": round(timed(error), 2),
            }
        )
    for r in rows:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
