"""How long reading and validating a 100,000-job spec takes in each format, against the floor
of PyYAML's C loader (libyaml) just loading the same YAML; finding the line of an error in its
last job; and `torcctl validate` on each file.

Each spec lists its jobs one by one (a chain: each depends on the one before), as a generated
spec would. Medians of `--repeat` runs (3 by default), in this process. The floor loads the
YAML text with `yaml.CSafeLoader`, the garbage collector paused; `ratio` is read_s over it.

    python benchmarks/spec_formats.py [--jobs 100000] [--repeat 3] [--formats yaml json json5 kdl]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import statistics
import tempfile
import time
from types import SimpleNamespace

import yaml

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


def json_spec(n: int) -> str:
    jobs = ",\n".join(
        f'  {{"name": "job_{i}", "command": "echo {i}"' + (f', "depends_on": ["job_{i - 1}"]' if i else "") + "}"
        for i in range(n)
    )
    return '{\n "name": "big",\n "jobs": [\n' + jobs + "\n ]\n}\n"


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


FORMATS = {
    "yaml": (yaml_spec, ("command: echo {last}\n", "command: echo {last}\n    bogus: 1\n")),
    "json": (json_spec, ('"command": "echo {last}"', '"command": "echo {last}", "bogus": 1')),
    "json5": (json5_spec, ("command: 'echo {last}'", "command: 'echo {last}', bogus: 1")),
    "kdl": (kdl_spec, ('command "echo {last}"\n', 'command "echo {last}"\n    bogus 1\n')),
}


def timed(f, repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs)


def c_floor(text: str) -> None:
    """PyYAML's C loader just loading the text, with the garbage collector paused."""
    gc.disable()
    try:
        yaml.load(text, Loader=yaml.CSafeLoader)
    finally:
        gc.enable()


def validate_file(path: str) -> None:
    """`torcctl validate PATH`, in this process (its output thrown away)."""
    from torcctl.checks import validate

    args = SimpleNamespace(spec=path, spec_format=None, json=False, print_yaml=False, strict=False)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert validate(None, args) == 0  # type: ignore[arg-type]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--formats", nargs="+", default=list(FORMATS), choices=list(FORMATS))
    ap.add_argument("--no-validate", action="store_true", help="skip the `torcctl validate` timings")
    args = ap.parse_args()
    n, repeat = args.jobs, args.repeat
    print(json.dumps({"yaml_with_libyaml": yaml.__with_libyaml__}))
    floor = round(timed(lambda: c_floor(yaml_spec(n)), repeat), 2)
    for fmt in args.formats:
        make, bad = FORMATS[fmt]
        text = make(n)
        broken = text.replace(bad[0].format(last=n - 1), bad[1].format(last=n - 1))
        assert broken != text
        assert len(parse_spec(text, f"big.{fmt}").jobs) == n

        last_lines = len(text.splitlines()) - 6
        named_line = []

        def error() -> None:
            try:
                parse_spec(broken, f"big.{fmt}")
            except SpecError as e:
                assert e.field == f"$.jobs[{n - 1}].bogus", e.message
                named_line.append(e.line is not None and e.line > last_lines)
            else:
                raise AssertionError("the broken spec was read")

        read_s = round(timed(lambda: parse_spec(text, f"big.{fmt}"), repeat), 2)
        row = {"format": fmt, "jobs": n, "MiB": round(len(text) / 2**20, 1), "read_s": read_s}
        row |= {"floor_s": floor, "ratio": round(read_s / floor, 2)}
        row["error_line_s"] = round(timed(error, repeat), 2)
        row["error_names_line"] = all(named_line)
        if not args.no_validate:
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, f"big.{fmt}")
                with open(path, "w") as f:
                    f.write(text)
                row["validate_s"] = round(timed(lambda: validate_file(path), repeat), 2)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
