"""How long, and how much memory, refusing each expansion bomb costs.

Each bomb is parsed in a fresh Python process, which reports the seconds until the
SpecError and how far its peak resident size grew beyond what the import left it at.
Target (issue 12): each refused in under 1 s with under 100 MB extra.

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


BOMBS = {
    "range 1:30000000": "name: b\njobs:\n  - {name: 'a_{i}', command: 'true', parameters: {i: '1:30000000'}}\n",
    "range 1:1000000000000":
        "name: b\njobs:\n  - {name: 'a_{i}', command: 'true', parameters: {i: '1:1000000000000'}}\n",
    "product 2000 x 2000": "name: b\njobs:\n  - {name: 'a_{i}_{j}', command: 'true', "
                           "parameters: {i: '1:2000', j: '1:2000'}}\n",
    "name padded past 512": "name: b\njobs:\n  - {name: 'a_{i:>600}', command: x, parameters: {i: '1:9'}}\n",
    "names of 500 chars x 700,000 (89 bytes)":
        "name: b\njobs:\n  - {name: 'j{i:>500}', command: x, parameters: {i: '1:700000'}}\n",
    "command of 1 MB": "name: b\njobs:\n  - {name: a, command: '" + "x" * (1 << 20) + "'}\n",
    "command padded to 200 KB": "name: b\njobs:\n  - {name: 'a{i}', command: '"
                                + "{i:>1000}" * 200 + "', parameters: {i: '1:3'}}\n",
    "dependencies 2000 x 2000 x 2": "name: b\njobs:\n  - {name: 'a_{i}', command: x, parameters: {i: '1:2000'}}\n"
                                    "  - {name: 'b_{j}', command: x, depends_on: ['a_{i}', 'a_{i}x'], "
                                    "parameters: {i: '1:2000', j: '1:2000'}}\n",
    "YAML aliases, 9 levels (~560 bytes)": _alias_bomb(9),
    "YAML aliases, 30 levels": _alias_bomb(30),
}

_CHILD = """
import json, resource, sys, time
from torcd.errors import SpecError
from torcd.spec import parse_spec
text = sys.stdin.read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
try:
    parse_spec(text, "bomb.yaml")
    outcome = "accepted"
except SpecError as e:
    outcome = e.message
seconds = time.perf_counter() - start
extra_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps({"seconds": seconds, "extra_mb": extra_kib / 1024, "outcome": outcome}))
"""


def main() -> int:
    worst = 0.0
    print(f"{'bomb':42} {'spec bytes':>10} {'seconds':>8} {'extra MB':>9}  outcome")
    for name, text in BOMBS.items():
        out = subprocess.run([sys.executable, "-c", _CHILD], input=text, capture_output=True, text=True,
                             check=True)
        r = json.loads(out.stdout)
        worst = max(worst, r["seconds"])
        print(f"{name:42} {len(text):>10,} {r['seconds']:>8.3f} {r['extra_mb']:>9.1f}  {r['outcome'][:110]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
