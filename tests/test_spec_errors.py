"""Every kind of bad spec is rejected with a message naming the file, line and field."""

import json

import pytest

from torcd.errors import SpecError
from torcd.spec.parse import parse_spec

GOOD_JOB = "  - name: a\n    command: echo a\n"

CASES = [
    # (spec, line, field or None, words in the message)
    (
        "name: x\njobs:\n  - name: a\n    command: echo\n    colour: red\n",
        5,
        "$.jobs[0].colour",
        "unknown key `colour`",
    ),
    ("name: x\nbogus: 1\njobs:\n" + GOOD_JOB, 2, "$.bogus", "unknown key `bogus`"),
    ("name: x\njobs:\n  - name: a\n    command: 5\n", 4, "$.jobs[0].command", "Expected `str`, got `int`"),
    ("name: x\njobs:\n  - name: a\n    command: x\n    num_cpus: two\n", 5, "$.jobs[0].num_cpus", "Expected `int`"),
    ("name: x\njobs:\n  - name: a\n    command: x\n    num_cpus: 0\n", 5, "$.jobs[0].num_cpus", ">= 1"),
    (
        "name: x\njobs:\n  - name: a\n    command: x\n    depends_on: b\n",
        5,
        "$.jobs[0].depends_on",
        "Expected `array | null`",
    ),
    (
        "name: x\njobs:\n" + GOOD_JOB + "  - name: a\n    command: echo b\n",
        5,
        "$.jobs[1].name",
        "duplicate job name 'a'",
    ),
    (
        "name: x\njobs:\n" + GOOD_JOB + "  - name: b\n    command: x\n    depends_on: [zz]\n",
        7,
        "$.jobs[1].depends_on",
        "depends on 'zz', which does not exist",
    ),
    (
        "name: x\njobs:\n  - name: a\n    command: x\n    depends_on: [c]\n  - name: b\n    command: x\n"
        "    depends_on: [a]\n  - name: c\n    command: x\n    depends_on: [b]\n",
        5,
        "$.jobs[0].depends_on",
        "dependency cycle: a -> c -> b -> a",
    ),
    (
        "name: x\njobs:\n  - name: a\n    command: x\n    depends_on: [a]\n",
        5,
        "$.jobs[0].depends_on",
        "depends on itself",
    ),
    (
        "name: x\njobs:\n  - name: a\n    command: x\n    failure_handler: nope\n",
        5,
        "$.jobs[0].failure_handler",
        "unknown failure handler 'nope'",
    ),
    (
        "name: x\njobs:\n  - name: a_{i}\n    command: x\n    parameters: {i: '1:'}\n",
        5,
        "$.jobs[0].parameters.i",
        "bad parameter 'i'",
    ),
    (
        "name: x\njobs:\n  - name: a_{i}\n    command: x\n    parameters:\n      i: '9:1'\n",
        6,
        "$.jobs[0].parameters.i",
        "ends before it starts",
    ),
    ("name: x\njobs: []\n", 2, "$.jobs", "length >= 1"),
    ("name: x\n", 1, "$", "missing required field `jobs`"),
    ("name: x\njobs:\n  - name: a\n   command: x\n", 4, None, "cannot parse"),
    ("name: x\njobs: [\n", 3, None, "cannot parse"),
    ("- just\n- a list\n", 1, None, "must be a mapping"),
    (
        "name: x\nfailure_handlers:\n  - name: h\n    rules:\n      - exit_codes: [0]\njobs:\n" + GOOD_JOB,
        5,
        "$.failure_handlers[0].rules[0].exit_codes[0]",
        ">= 1",
    ),
    (
        "name: x\nfailure_handlers:\n  - name: h\n    rules:\n      - exit_codes: [256]\njobs:\n" + GOOD_JOB,
        5,
        "$.failure_handlers[0].rules[0].exit_codes[0]",
        "<= 255",
    ),
    (
        "name: x\nfailure_handlers:\n  - name: h\n    rules:\n      - exit_codes: ['10']\njobs:\n" + GOOD_JOB,
        5,
        "$.failure_handlers[0].rules[0].exit_codes[0]",
        "Expected `int`, got `str`",
    ),
    (
        "name: x\nfailure_handlers:\n  - name: h\n    rules: []\njobs:\n" + GOOD_JOB,
        4,
        "$.failure_handlers[0].rules",
        "length >= 1",
    ),
    (
        "name: x\nfailure_handlers:\n  - name: h\n    rules:\n"
        "      - exit_codes: [1]\n        match_all_exit_codes: true\n"
        "jobs:\n" + GOOD_JOB,
        5,
        "$.failure_handlers[0].rules[0]",
        "not both",
    ),
    (
        "name: x\nfailure_handlers:\n  - name: h\n    rules:\n      - max_retries: 2\njobs:\n" + GOOD_JOB,
        5,
        "$.failure_handlers[0].rules[0]",
        "needs `causes`, `exit_codes`",
    ),
    (
        "name: x\nfailure_handlers:\n  - name: h\n    rules:\n      - exit_codes: [1]\n        max_retries: 0\n"
        "jobs:\n" + GOOD_JOB,
        6,
        "$.failure_handlers[0].rules[0].max_retries",
        ">= 1",
    ),
    (
        "name: x\njobs:\n  - name: a_{i}_{j}_{k}\n    command: x\n"
        "    parameters: {i: '1:1000', j: '1:1000', k: '1:10'}\n",
        5,
        "$.jobs[0].parameters",
        "the limit is",
    ),
    ("name: x\nuse_pending_failed: maybe\njobs:\n" + GOOD_JOB, 2, "$.use_pending_failed", "Expected `bool"),
]


@pytest.mark.parametrize("text,line,field,words", CASES, ids=[c[3][:40] for c in CASES])
def test_bad_spec_names_file_line_and_field(text, line, field, words):
    with pytest.raises(SpecError) as info:
        parse_spec(text, "wf.yaml")
    e = info.value
    assert words in e.message
    assert e.message.startswith(f"wf.yaml:{line}: ")
    assert (e.line, e.field) == (line, field) if field else e.line == line


def test_json_specs_are_accepted_and_errors_have_lines():
    doc = {"name": "j", "jobs": [{"name": "a", "command": "echo"}, {"name": "b", "command": "x", "depends_on": ["a"]}]}
    assert [j.name for j in parse_spec(json.dumps(doc), "wf.json").jobs] == ["a", "b"]
    bad = '{\n  "name": "j",\n  "jobs": [\n    {"name": "a", "command": "x", "num_cpus": "2"}\n  ]\n}\n'
    with pytest.raises(SpecError, match=r"wf.json:4: .*num_cpus"):
        parse_spec(bad, "wf.json")


# `${` then a shell name then a dot is never bash (bash says "bad substitution" when the job runs):
# it is a Torc-style reference, and one torc-py does not know is refused before anything is stored.
UNKNOWN_REFERENCES = [  # (in the command, as the error shows it)
    ("${foo.bar}", "${foo.bar}"),
    ("${files.x}", "${files.x}"),
    ("${workflow.x}", "${workflow.x}"),
    ("${files.inputs.f}", "${files.inputs.f}"),
    ("${user_data.d}", "${user_data.d}"),
    ('"${parameters.i}"', "${parameters.i}"),
    ("${user_data.input.d", "${user_data.input.d done"),
]


@pytest.mark.parametrize("reference, shown", UNKNOWN_REFERENCES)
def test_an_unknown_dotted_reference_in_a_command_is_refused_with_its_line(reference, shown):
    text = (
        "name: x\nuser_data:\n  - {name: d}\njobs:\n"
        + GOOD_JOB
        + f"  - name: b\n    command: >-\n      echo {reference} done\n"
    )
    with pytest.raises(SpecError) as info:
        parse_spec(text, "wf.yaml")
    assert info.value.message == (
        f"wf.yaml:8: unknown reference `{shown}` in job 'b': torc-py knows ${{files.input|output.NAME}}, "
        "${datasets.input|output.NAME} and ${user_data.input|output.NAME} (to pass `${a.b}` to a program as it is, "
        "put it in single quotes or write \\${a.b}) (at $.jobs[1].command)"
    )


def test_a_dotted_reference_the_shell_does_not_expand_reaches_the_program_as_it_is():
    """Found in review: Maven's '${project.version}', JavaScript in single quotes and an escaped
    `\\${a.b}` were refused, though the shell passes them on as they are."""
    for command in (
        "mvn -Dexpr='${project.version}' help:evaluate",
        "node -e 'console.log(`${o.a}`)'",
        "echo \\${a.b}",
    ):
        text = "name: x\njobs:\n  - name: a\n    command: " + json.dumps(command) + "\n"
        assert parse_spec(text, "wf.yaml").jobs[0].command == command


def test_the_shells_own_expansions_stay_beside_a_reference_torc_py_replaces():
    shell = 'echo ${HOME} ${x:-a.b} ${#arr[@]} ${arr[0]} ${!pre*} ${x/a.b/c} ${x%.*} ${10} $HOME.x ${x}.y "${@}"'
    text = (
        f"name: x\nuser_data:\n  - {{name: d}}\njobs:\n  - name: a\n"
        f"    command: '{shell}; get ${{user_data.input.d}}'\n"
    )
    job = parse_spec(text, "wf.yaml").jobs[0]
    assert job.command == f"{shell}; get d" and job.data_inputs == ["d"]
