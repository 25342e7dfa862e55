"""How long, and how much memory, refusing each expansion bomb costs.

Each bomb is parsed in a fresh Python process, which reports the seconds until the
SpecError and how far its peak resident size grew beyond what the import left it at.
Target (issue 12): each refused in under 1 s with under 100 MB extra.

Finding the line of an error (Hardening III, item 7), measured on a loaded 2-core machine:

    bomb                                   before                  after
    KDL unclosed '/* ' x 100,000 (300 KB)  23.0 s                  0.006 s
    KDL unclosed '/* ' x 400,000 (1.2 MB)  over 100 s (quadratic)  0.014 s
    KDL unclosed string in job 100,001     26.1 s, +162 MB         5.0 s, +116 MB (2.3 s of it ckdl's first parse)
    JSON5 unknown key in job 52,000        31.8 s, +766 MB         1.1 s, +77 MB (the line: 0.14 s, 3 KB)
    JSON5 syntax error after job 52,000    0.07 s                  0.07 s

    python benchmarks/spec_bombs.py
"""

from __future__ import annotations

import json
import subprocess
import sys


def _alias_bomb(levels: int, width: int = 10) -> str:
    lines = ["a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\nname: bomb\njobs:\n  - {name: a, command: 'true'}\n"


def _kdl_jobs(jobs: int) -> str:
    return 'name "big"\n' + "".join(
        f'job "job_{i}" {{\n    command "echo {i}"\n' + (f'    depends_on "job_{i - 1}"\n' if i else "") + "}\n"
        for i in range(jobs)
    )


def _json5_late_error(jobs: int, bad: str = "bogus: 1") -> str:
    """A generated JSON5 spec whose last job holds an error (a key no job has, by default)."""
    body = ",\n".join(
        f"  {{name: 'job_{i}', command: 'echo {i}', depends_on: ['job_{i - 1}']}}"
        if i
        else f"  {{name: 'job_{i}', command: 'echo {i}'}}"
        for i in range(jobs)
    )
    return "{\n name: 'big',\n jobs: [\n" + body[:-1] + ", " + bad + "}\n ],\n}\n"


BOMBS = {
    "range 1:30000000": "name: b\njobs:\n  - {name: 'a_{i}', command: 'true', parameters: {i: '1:30000000'}}\n",
    "range 1:1000000000000": "name: b\njobs:\n  - {name: 'a_{i}', command: 'true', "
    "parameters: {i: '1:1000000000000'}}\n",
    "product 2000 x 2000": "name: b\njobs:\n  - {name: 'a_{i}_{j}', command: 'true', "
    "parameters: {i: '1:2000', j: '1:2000'}}\n",
    "name padded past 512": "name: b\njobs:\n  - {name: 'a_{i:>600}', command: x, parameters: {i: '1:9'}}\n",
    "names of 500 chars x 700,000 (89 bytes)": "name: b\njobs:\n  - {name: 'j{i:>500}', command: x, "
    "parameters: {i: '1:700000'}}\n",
    "command of 1 MB": "name: b\njobs:\n  - {name: a, command: '" + "x" * (1 << 20) + "'}\n",
    "command padded to 200 KB": "name: b\njobs:\n  - {name: 'a{i}', command: '"
    + "{i:>1000}" * 200
    + "', parameters: {i: '1:3'}}\n",
    "dependencies 2000 x 2000 x 2": "name: b\njobs:\n  - {name: 'a_{i}', command: x, parameters: {i: '1:2000'}}\n"
    "  - {name: 'b_{j}', command: x, depends_on: ['a_{i}', 'a_{i}x'], "
    "parameters: {i: '1:2000', j: '1:2000'}}\n",
    "YAML aliases, 9 levels (~560 bytes)": _alias_bomb(9),
    "YAML aliases, 30 levels": _alias_bomb(30),
    # Syntax and field errors whose line is costly to find (Hardening III, item 7).
    "KDL unclosed '/* ' x 100,000 (300 KB)": ("bomb.kdl", 'name "b"\n' + "/* " * 100_000),
    "KDL unclosed '/* ' x 400,000 (1.2 MB)": ("bomb.kdl", 'name "b"\n' + "/* " * 400_000),
    "KDL open string in job 100,001 (6.8 MiB)": ("bomb.kdl", _kdl_jobs(100_000) + 'job "x" {\n    command "a\n}\n'),
    "JSON5 unknown key in job 52,000 (3.6 MiB)": ("bomb.json5", _json5_late_error(52_000)),
    "JSON5 syntax error after job 52,000": ("bomb.json5", _json5_late_error(52_000, "}}")),
}

_CHILD = """
import json, resource, sys, time
from torcd.errors import SpecError
from torcd.spec.parse import parse_spec
file, text = json.loads(sys.stdin.read())
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
try:
    parse_spec(text, file)
    outcome = "accepted"
except SpecError as e:
    outcome = e.message
seconds = time.perf_counter() - start
extra_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps({"seconds": seconds, "extra_mb": extra_kib / 1024, "outcome": outcome}))
"""


LIMIT_S = 60  # a bomb still parsing after this is reported as such and stopped


def main() -> int:
    worst = 0.0
    print(f"{'bomb':42} {'spec bytes':>10} {'seconds':>8} {'extra MB':>9}  outcome")
    for name, bomb in BOMBS.items():
        file, text = bomb if isinstance(bomb, tuple) else ("bomb.yaml", bomb)
        try:
            out = subprocess.run(
                [sys.executable, "-c", _CHILD],
                input=json.dumps([file, text]),
                capture_output=True,
                text=True,
                check=True,
                timeout=LIMIT_S,
            )
        except subprocess.TimeoutExpired:
            print(f"{name:42} {len(text):>10,} {'>' + str(LIMIT_S):>8} {'?':>9}  (stopped)")
            continue
        r = json.loads(out.stdout)
        worst = max(worst, r["seconds"])
        print(f"{name:42} {len(text):>10,} {r['seconds']:>8.3f} {r['extra_mb']:>9.1f}  {r['outcome'][:110]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
