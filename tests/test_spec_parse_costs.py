"""What a hostile or unlucky spec costs the daemon: finding an error's line stays linear and
small, specs are parsed in a pool of their own, and the memory monitor samples in a thread of
its own, so that no number of slow submissions lets a job outgrow its memory limit unkilled.

Speeds are measured in benchmarks/spec_bombs.py; the bounds here only tell linear from quadratic.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import threading
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

import json5
import pytest
from hypothesis import given
from hypothesis import strategies as st
from json5.loader import ModelLoader

from torcctl.transport import RpcError, Transport
from torcd.errors import SpecError
from torcd.protocol import WorkflowSummary
from torcd.services.monitor import Monitor
from torcd.spec.load import _json5_line
from torcd.spec.parse import parse_spec, parse_spec_in_pool


def error_of(text: str, file: str) -> str:
    try:
        parse_spec(text, file)
    except SpecError as e:
        return e.message
    raise AssertionError("the spec was accepted")


def seconds(f) -> float:
    start = time.perf_counter()
    f()
    return time.perf_counter() - start


def kdl_jobs(n: int) -> str:
    return 'name "big"\n' + "".join(f'job "job_{i}" {{\n    command "echo {i}"\n}}\n' for i in range(n))


def json5_jobs(n: int, last: str = "") -> str:
    jobs = ",\n".join(f"  {{name: 'job_{i}', command: 'echo {i}'{last if i == n - 1 else ''}}}" for i in range(n))
    return "// generated\n{\n name: 'big',\n jobs: [\n" + jobs + ",\n ],\n}\n"


def test_an_unclosed_comment_in_kdl_is_located_in_linear_time():
    # 300 KB of `/* ` took 23 s (quadratic: each `/*` searched the rest of the text for `*/`).
    bomb = 'name "b"\n' + "/* " * 100_000
    valid = kdl_jobs(7_100)  # about the same size, read whole
    assert len(valid) > len(bomb)
    linear = seconds(lambda: parse_spec(valid, "wf.kdl"))
    took = seconds(lambda: error_of(bomb, "wf.kdl"))
    assert error_of(bomb, "wf.kdl").startswith("wf.kdl:1: cannot parse KDL")
    assert took < 10 * linear + 1, (took, linear)


@pytest.mark.parametrize(
    "text, line",
    [
        (kdl_jobs(50).replace('command "echo 30"', 'command "echo 30" }'), 93),  # among many nodes
        (kdl_jobs(50).replace('command "echo 40"', 'command "echo 40'), 123),  # a string never closed
        (kdl_jobs(3).replace("}\n", "} \\\n", 1), 5),  # a block carried on to the next node
        ('name "x"\n/-\njob "a" {\n    command "true"\n}\njob "b" {\n    command "true\n}\n', 7),
        ('name "x"\njob "a" {\n    cancel_on_blocking_job_failure #false\n}\njob "b" {\n    comm#and "x"\n}\n', 6),
    ],
)
def test_a_kdl_syntax_error_names_its_line(text, line):
    assert error_of(text, "wf.kdl").startswith(f"wf.kdl:{line}: cannot parse KDL")


def test_nested_comments_still_nest_and_count_their_lines():
    text = 'name "x"\n/* a /* b\n */ c\n*/ /*/ d */\njobs\n'
    assert error_of(text, "wf.kdl").startswith("wf.kdl:5:")  # `jobs` with no value
    assert error_of('name "x"\n/* a /* b */\n', "wf.kdl").startswith("wf.kdl:")  # one left open


def test_a_late_json5_error_names_its_line_at_the_cost_of_reading_the_spec():
    # json-five's model of a 3.6 MiB spec took half a minute and 800 MB to find the line.
    n = 8_000
    valid, broken = json5_jobs(n), json5_jobs(n, ", bogus: 1")
    linear = seconds(lambda: parse_spec(valid, "big.json5"))
    message = ""

    def fail() -> None:
        nonlocal message
        message = error_of(broken, "big.json5")

    took = seconds(fail)
    assert message == f"big.json5:{n + 4}: unknown key `bogus` (at $.jobs[{n - 1}].bogus)"
    assert took < 10 * linear + 1, (took, linear)

    tracemalloc.start()
    try:
        parse_spec(valid, "big.json5")
        valid_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        fail()
        error_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert error_peak < 2 * valid_peak, (error_peak, valid_peak)


def test_json5_lines_follow_comments_strings_and_the_last_of_a_repeated_key():
    text = """{
  name: 'x', /* { [ */ name: "y",
  jobs: [
    {name: 'a', command: 'echo "}]"', env: {'A': '1'}},
    {
      "na\\u006de": 'b',
      command: 5,
    },
  ],
}
"""
    assert error_of(text, "wf.json5") == "wf.json5:7: Expected `str`, got `int` (at $.jobs[1].command)"


def lines_by_json_five(node, path: str = "$", line: int | None = None):
    """(path, line) of every key and item, as json-five's model (the reader this scan replaced) has them."""
    yield path, line
    if hasattr(node, "key_value_pairs"):
        for k, v in zip(node.keys, node.values):
            yield from lines_by_json_five(v, f"{path}.{getattr(k, 'name', None) or k.characters}", k.lineno)
    elif isinstance(getattr(node, "values", None), list):
        for i, v in enumerate(node.values):
            yield from lines_by_json_five(v, f"{path}[{i}]", v.lineno)


keys = st.from_regex(r"[a-z_][a-z0-9_]{0,5}", fullmatch=True)
values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=20,
)


@given(st.dictionaries(keys, values, max_size=4), st.sampled_from([None, 0, 1, 3]))
def test_json5_lines_are_those_json_five_finds(doc, indent):
    text = json.dumps(doc, indent=indent)
    for path, line in lines_by_json_five(json5.loads(text, loader=ModelLoader()).value):
        assert _json5_line(text, path) == line, path


def block_default_pool(loop: asyncio.AbstractEventLoop, release: threading.Event) -> None:
    """Fill the loop's default pool with work that waits for `release`, as six slow specs once did."""
    loop.set_default_executor(ThreadPoolExecutor(2))
    for _ in range(2):
        loop.run_in_executor(None, release.wait)


def test_specs_are_parsed_while_the_default_pool_is_busy():
    async def main() -> int:
        release = threading.Event()
        block_default_pool(asyncio.get_running_loop(), release)
        try:
            spec = await asyncio.wait_for(
                parse_spec_in_pool("name: x\njobs:\n  - {name: a, command: 'true'}\n", "wf.yaml"), 20
            )
            return len(spec.jobs)
        finally:
            release.set()

    assert asyncio.run(main()) == 1


def test_the_memory_monitor_samples_while_the_default_pool_is_busy():
    over: list[int] = []

    async def main() -> None:
        release = threading.Event()
        block_default_pool(asyncio.get_running_loop(), release)
        proc = subprocess.Popen(["sleep", "30"])  # noqa: ASYNC220 a process to watch; it starts at once
        monitor = Monitor(lambda job_id, sample: over.append(job_id))
        try:
            monitor.watch(7, proc.pid, limit=1, interval=0.1)  # any process is over one byte
            for _ in range(200):
                if over:
                    break
                await asyncio.sleep(0.1)
        finally:
            monitor.stop()
            proc.kill()
            proc.wait()
            release.set()

    asyncio.run(main())
    assert over == [7]


def test_a_job_over_its_memory_limit_is_killed_while_slow_specs_are_submitted(daemon):
    wf = daemon.submit("""name: m
resource_requirements:
  - {name: small, memory: 50m}
jobs:
  - {name: big, resource_requirements: small,
     command: "python3 -c 'import time; time.sleep(1); b = bytearray(300 * 2**20); time.sleep(10)'"}
""")
    daemon.wait_for(lambda: daemon.jobs(wf)["big"].status == "running", what="the job to start")
    # As many submissions as asyncio's default pool has threads: each once held one for 23 s.
    bomb = 'name "b"\n' + "/* " * 100_000
    errors: list[str] = []

    def submit() -> None:
        client = Transport(daemon.socket, timeout=120)
        try:
            client.call(
                "workflows.create",
                {"spec_text": bomb, "spec_path": str(daemon.tmp / "bomb.kdl"), "cwd": str(daemon.tmp)},
                WorkflowSummary,
            )
        except RpcError as e:
            errors.append(str(e))
        finally:
            client.close()

    threads = [threading.Thread(target=submit, daemon=True) for _ in range(min(32, (os.cpu_count() or 1) + 4))]
    for t in threads:
        t.start()
    info = daemon.wait(wf, timeout=30)
    (a,) = daemon.attempts(daemon.jobs(wf)["big"].id)
    assert (info.counts, a.return_code, a.cause) == ({"failed": 1}, 137, "oom")
    for t in threads:
        t.join(60)
    assert len(errors) == len(threads) and all("cannot parse KDL" in e for e in errors)
