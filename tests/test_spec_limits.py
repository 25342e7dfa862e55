"""What a spec may hold and how far it may expand: control characters, env names, Slurm fields,
sizes after parameters are filled in, YAML aliases. Each refusal names the file, line and field.

Sizes are refused from arithmetic, before anything is built; benchmarks/spec_bombs.py measures
the time and memory each refusal costs (these tests time nothing).
"""

from __future__ import annotations

import sys

import pytest

from torcctl.transport import RpcError
from torcd.errors import SpecError
from torcd.spec.parse import MAX_COMMAND_BYTES, parse_spec

HEAD = "name: x\njobs:\n  - name: a\n"


def job(*lines: str) -> str:
    return HEAD + "".join(f"    {line}\n" for line in lines)


def scheduler(*lines: str) -> str:
    return (
        "name: x\nslurm_schedulers:\n  - name: s\n"
        + "".join(f"    {line}\n" for line in lines)
        + "jobs:\n  - {name: a, command: 'true'}\n"
    )


def alias_bomb(levels: int) -> str:
    lines = ["a0: &a0 [" + ", ".join(["lol"] * 10) + "]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\nname: bomb\njobs:\n  - {name: a, command: 'true'}\n"


POISONED = [
    # (spec, line, field, words in the message)
    (job('command: "echo \\0 x"'), 4, "$.jobs[0].command", "control character '\\x00'"),
    (job('command: "echo \\e[2J"'), 4, "$.jobs[0].command", "control character '\\x1b'"),
    (job("command: 'true'", 'env: {A: "v\\0"}'), 5, "$.jobs[0].env.A", "control character '\\x00'"),
    (job("command: 'true'", 'env: {"": v}'), 5, "$.jobs[0].env", "environment variable name is empty"),
    (job("command: 'true'", 'env: {"A=B": v}'), 5, "$.jobs[0].env", "'A=B' contains `=`"),
    (job("command: 'true'", 'env: {"A\\0": v}'), 5, "$.jobs[0].env", "control character '\\x00'"),
    (
        'name: x\noutput_dir: "out\\0put"\njobs:\n  - {name: a, command: "true"}\n',
        2,
        "$.output_dir",
        "one line of printable text",
    ),
    (
        'name: x\noutput_dir: "out\\nput"\njobs:\n  - {name: a, command: "true"}\n',
        2,
        "$.output_dir",
        "control character '\\n'",
    ),
    ('name: "x\\ny"\njobs:\n  - {name: a, command: "true"}\n', 1, "$.name", "control character '\\n'"),
    ('name: x\njobs:\n  - name: "a\\tb"\n    command: "true"\n', 3, "$.jobs[0].name", "control character '\\t'"),
    (
        "name: x\nfailure_handlers:\n  - name: h\n    rules:\n      - exit_codes: [1]\n"
        '        recovery_script: "fix\\0"\njobs:\n  - {name: a, command: "true", failure_handler: h}\n',
        6,
        "$.failure_handlers[0].rules[0].recovery_script",
        "control character '\\x00'",
    ),
    (job("command: 'true'", 'depends_on: ["b\\rc"]'), 5, "$.jobs[0].depends_on[0]", "control character '\\r'"),
]

SLURM_FIELDS = [
    (scheduler('account: "acct\\n#SBATCH --wrap=id"'), 4, "$.slurm_schedulers[0].account", "control character"),
    (scheduler('partition: "debug\\nrm -rf ~"'), 4, "$.slurm_schedulers[0].partition", "control character"),
    (scheduler('mem: "4G\\nid"'), 4, "$.slurm_schedulers[0].mem", "control character"),
    (scheduler('walltime: "01:00:00\\n"'), 4, "$.slurm_schedulers[0].walltime", "control character"),
    (scheduler('extra: ["--qos=high\\nid"]'), 4, "$.slurm_schedulers[0].extra[0]", "control character"),
    (scheduler('account: "two words"'), 4, "$.slurm_schedulers[0].account", "one word"),
    (
        scheduler("mem: 240GiB"),
        4,
        "$.slurm_schedulers[0].mem",
        "`mem` '240GiB' must be a number with an optional unit K, M, G or T, like 240G",
    ),
    (scheduler("mem: lots"), 4, "$.slurm_schedulers[0].mem", "optional unit K, M, G or T"),
    (scheduler("walltime: 1h"), 4, "$.slurm_schedulers[0].walltime", "is not a Slurm time"),
]

BOMBS = [
    (
        job("command: 'true'", "parameters: {i: '1:30000000'}"),
        5,
        "$.jobs[0].parameters.i",
        "has 30,000,000 values; the limit is 2,000,000",
    ),
    (
        job("command: 'true'", "parameters: {i: '1:1000000000000'}"),
        5,
        "$.jobs[0].parameters.i",
        "has 1,000,000,000,000 values",
    ),
    (
        job("command: 'true'", "parameters: {i: '1:" + "9" * 5000 + "'}"),
        5,
        "$.jobs[0].parameters.i",
        "numbers too large",
    ),
    (
        HEAD.replace("name: a", "name: 'a_{i}_{j}'")
        + "    command: 'true'\n    parameters: {i: '1:2000', j: '1:2000'}\n",
        5,
        "$.jobs[0].parameters",
        "4,000,000 jobs; the limit is 2,000,000",
    ),
    (
        HEAD.replace("name: a", "name: 'a_{i:>5000}'") + "    command: x\n    parameters: {i: '1:9'}\n",
        3,
        "$.jobs[0]",
        "width or precision over 1000",
    ),
    (
        HEAD.replace("name: a", "name: 'a_{i:>511}'") + "    command: x\n    parameters: {i: '1:9'}\n",
        3,
        "$.jobs[0].name",
        "can be 513 characters long once parameters are filled in; the limit is 512",
    ),
    (
        HEAD.replace("name: a", "name: 'j{i:>500}'") + "    command: x\n    parameters: {i: '1:700000'}\n",
        3,
        "$.jobs[0]",
        "about 335 MiB of names, commands, dependencies and env; the limit is 128 MiB",
    ),
    (
        HEAD.replace("name: a", "name: 'a{i}'") + "    command: '" + "{i:>1000}" * 200 + "'\n"
        "    parameters: {i: '1:3'}\n",
        4,
        "$.jobs[0].command",
        "200,000 bytes once parameters are filled in",
    ),
    (
        "name: b\njobs:\n  - {name: 'a_{i}', command: x, parameters: {i: '1:2000'}}\n"
        "  - {name: 'b_{j}', command: x, depends_on: ['a_{i}', 'a_{i}'], parameters: {i: '1:2000', j: '1:2000'}}\n",
        4,
        "$.jobs[1].depends_on",
        "8,000,000 dependencies; the limit is 4,000,000",
    ),
    (alias_bomb(9), 6, "$.a5", "YAML aliases here copy more than 200,000 values"),
    (alias_bomb(40), 6, "$.a5", "YAML aliases here copy more than 200,000 values"),
    (
        "a: &s [" + ", ".join(["x" * 1000] * 20) + "]\nb: [" + ", ".join(["*s"] * 700) + "]\n"
        "name: x\njobs:\n  - {name: a, command: 'true'}\n",
        2,
        "$.b",
        "YAML aliases here copy",
    ),
    (
        job("command: '" + "x" * (MAX_COMMAND_BYTES + 1) + "'"),
        4,
        "$.jobs[0].command",
        f"the command is {MAX_COMMAND_BYTES + 1:,} bytes once parameters are filled in; the limit is "
        f"{MAX_COMMAND_BYTES:,} bytes (Linux's execve takes at most 128 KiB in one argument, MAX_ARG_STRLEN",
    ),
    (
        job("command: '" + "é" * (MAX_COMMAND_BYTES // 2 + 1) + "'"),
        4,
        "$.jobs[0].command",
        f"{MAX_COMMAND_BYTES + 2:,} bytes",
    ),
    (
        job("command: 'true'", "env: {BIG: '" + "x" * (128 * 1024) + "'}"),
        5,
        "$.jobs[0].env",
        "longer than 131,071 bytes",
    ),
    ("[" * 5000 + "]" * 5000, None, None, "nested too deeply"),
    (
        job("command: x", "parameters: {i: '[" + "[" * 3000 + "]" * 3000 + "]'}"),
        5,
        "$.jobs[0].parameters.i",
        "cannot read list",
    ),
]


@pytest.mark.parametrize(
    "text,line,field,words",
    POISONED + SLURM_FIELDS + BOMBS,
    ids=[f"{c[2]}:{c[3][:30]}" for c in POISONED + SLURM_FIELDS + BOMBS],
)
def test_refused_with_file_line_and_field(text, line, field, words):
    with pytest.raises(SpecError) as info:
        parse_spec(text, "wf.yaml")
    e = info.value
    assert words in e.message
    assert (e.file, e.line, e.field) == ("wf.yaml", line, field), e.message


@pytest.mark.parametrize(
    "text",
    [
        job("command: \"printf 'a\\tb'\\necho c\""),  # a command may hold tabs and newlines
        job("command: 'true'", 'env: {CERT: "line1\\nline2"}'),  # so may an env value
        job("command: x", "env: {A: ''}"),  # an empty value is a value
        'name: x\ndescription: "two\\nlines"\njobs:\n  - {name: a, command: "true"}\n',
        scheduler("mem: 240g"),
        scheduler("mem: 240G"),
        scheduler("mem: 512m"),
        scheduler("mem: 1024"),
        scheduler("mem: 2TB"),
        scheduler("mem: 64kb"),
        scheduler("walltime: 2-00:00:00"),
        scheduler("account: proj_01", "partition: gpu-debug", "extra: ['--qos=high', '--constraint=\"a|b\"']"),
        job("command: '" + "x" * MAX_COMMAND_BYTES + "'"),
        # an anchor shared by many jobs costs a little each time, far under the budget
        "name: x\njobs:\n  - {name: j, command: 'true', env: &env {A: '1', B: '2', C: '3'}}\n"
        + "".join(f"  - {{name: j{i}, command: 'true', env: *env}}\n" for i in range(2000)),
    ],
    ids=lambda text: text[:60],
)
def test_accepted(text):
    assert parse_spec(text, "wf.yaml").jobs


def test_names_and_commands_are_checked_after_filling(tmp_path):
    ok = HEAD.replace("name: a", "name: 'a_{i:>500}'") + "    command: 'run {i:>100}'\n    parameters: {i: '1:3'}\n"
    names = [j.name for j in parse_spec(ok, "wf.yaml").jobs]
    assert [len(n) for n in names] == [502] * 3


def test_daemon_refuses_each_poisoned_spec_and_keeps_running_others(daemon):
    for text, _line, field, _ in POISONED[:12] + SLURM_FIELDS[:5] + BOMBS[:2] + BOMBS[9:10]:
        with pytest.raises(RpcError) as info:
            daemon.call("workflows.create", {"spec_text": text, "spec_path": "wf.yaml", "cwd": str(daemon.tmp)})
        assert info.value.code == -32010 and info.value.data["field"] == field, info.value.message
    assert daemon.call("workflows.list") == []
    wf = daemon.submit("name: fine\njobs:\n  - {name: a, command: 'echo ok'}\n")
    assert daemon.wait(wf).counts == {"completed": 1}


@pytest.mark.parametrize(
    "text,fmt",
    [
        ("[" * 5000 + "]" * 5000, None),
        ("name: x\njobs: []\nv: " + "[" * 101 + "]" * 101 + "\n", None),
        ("name: x\njobs: []\nv:\n" + "".join("  " * i + f"- k{i}:\n" for i in range(1, 52)), None),
        ('{"name": "x", "jobs": [], "v": ' + "[" * 101 + "]" * 101 + "}", "json"),
        ('{name: "x", jobs: [], v: ' + "[" * 101 + "]" * 101 + "}", "json5"),
    ],
    ids=["flow-5000", "flow-101", "block-51", "json-101", "json5-101"],
)
@pytest.mark.parametrize("recursion_limit", [None, 100_000])
def test_what_nests_too_deeply_is_refused_whatever_the_recursion_limit(text, fmt, recursion_limit):
    """A test runner (or an embedding program) may raise the recursion limit: what is refused must not change."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(recursion_limit or old)
    try:
        with pytest.raises(SpecError) as info:
            parse_spec(text, "wf.yaml", fmt)
    finally:
        sys.setrecursionlimit(old)
    assert "nested too deeply" in info.value.message or "Maximum nesting level" in info.value.message  # pyjson5's


def test_a_hundred_levels_of_nesting_are_read():
    text = "name: x\njobs:\n  - {name: a, command: 'true'}\nmetadata: {v: " + "[" * 98 + "]" * 98 + "}\n"
    parse_spec(text, "wf.yaml")
