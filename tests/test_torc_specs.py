"""Torc's spec keys and formats: zip parameters, dependency regexes, JSON5, conversion to YAML."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from torcd.errors import SpecError
from torcd.spec.parse import parse_spec, spec_as_yaml


def names_and_deps(text: str, file: str = "wf.yaml") -> dict[str, list[str]]:
    return {j.name: j.depends_on for j in parse_spec(text, file).jobs}


def error_of(text: str, file: str = "wf.yaml") -> str:
    with pytest.raises(SpecError) as info:
        parse_spec(text, file)
    return info.value.message


ZIP = """\
name: zipped
jobs:
  - name: run_{i}_{model}
    command: solve --i {i} --model {model}
    parameter_mode: zip
    parameters:
      i: "1:3"
      model: "['a', 'b', 'c']"
"""


def test_zip_pairs_values_by_position():
    jobs = parse_spec(ZIP).jobs
    assert [(j.name, j.command) for j in jobs] == [
        ("run_1_a", "solve --i 1 --model a"),
        ("run_2_b", "solve --i 2 --model b"),
        ("run_3_c", "solve --i 3 --model c"),
    ]
    assert len(parse_spec(ZIP.replace("    parameter_mode: zip\n", "")).jobs) == 9  # product, the default


def test_zip_with_lengths_that_differ_names_them():
    message = error_of(ZIP.replace("'1:3'", "'1:4'").replace('"1:3"', '"1:4"'))
    assert message == (
        "wf.yaml:6: parameter_mode zip pairs values by position, so every parameter needs as many "
        "values; here i has 4, model has 3 (at $.jobs[0].parameters)"
    )


def test_zip_fills_dependencies_with_the_same_combination():
    text = (
        ZIP
        + """\
  - name: post_{i}_{model}
    command: post {i}
    parameter_mode: zip
    parameters: {i: "1:3", model: "['a', 'b', 'c']"}
    depends_on: ["run_{i}_{model}"]
"""
    )
    deps = names_and_deps(text)
    assert deps["post_2_b"] == ["run_2_b"] and deps["post_3_c"] == ["run_3_c"]


FAN_IN = """\
name: fan_in
jobs:
  - name: work_{i}
    command: echo {i}
    parameters: {i: "1:4"}
  - name: other
    command: echo other
  - name: gather
    command: echo gather
    depends_on: [other]
    depends_on_regexes: ["^work_[0-9]+$"]
"""


def test_depends_on_regexes_add_every_job_they_match():
    assert names_and_deps(FAN_IN)["gather"] == ["other", "work_1", "work_2", "work_3", "work_4"]


@pytest.mark.parametrize(
    "regex, message",
    [
        ("^nothing", "depends_on_regexes entry '^nothing' of job 'gather' matches no other job"),
        ("^gath", "depends_on_regexes entry '^gath' of job 'gather' matches no other job"),  # only itself
        ("work_(", "bad regular expression 'work_(': missing ) at position 6"),
    ],
)
def test_depends_on_regexes_that_match_nothing_are_errors_with_their_line(regex, message):
    text = FAN_IN.replace('"^work_[0-9]+$"', repr(regex))
    assert error_of(text) == f"wf.yaml:11: {message} (at $.jobs[2].depends_on_regexes[0])"


def test_a_regex_that_closes_a_cycle_is_refused():
    text = FAN_IN.replace("command: echo {i}", 'command: echo {i}\n    depends_on_regexes: ["^gather$"]')
    assert error_of(text).startswith("wf.yaml:")
    assert "dependency cycle: " in error_of(text)


def test_a_regex_that_backtracks_without_end_is_an_error_not_a_hang():
    text = (
        "name: redos\njobs:\n  - {name: " + "a" * 60 + ", command: 'true'}\n"
        "  - {name: b, command: 'true', depends_on_regexes: ['(?:a|a(?=a))+b']}\n"
    )
    assert "takes too long to match names" in error_of(text)


JSON5 = """\
// A sweep written in JSON5: comments, unquoted keys, trailing commas.
{
  name: 'sweep5',
  resource_requirements: [{name: 'small', num_cpus: 1, memory: '100m', runtime: 'PT1M'},],
  jobs: [
    {name: 'work_{i}', command: 'echo {i}', parameters: {i: '1:100'}, resource_requirements: 'small'},
    {
      name: 'gather',
      command: "echo done",
      depends_on_regexes: ['^work_'],
    },
  ],
}
"""


def test_json5_reads_as_yaml_does():
    spec = parse_spec(JSON5, "sweep.json5")
    assert len(spec.jobs) == 101 and spec.jobs[0].memory_bytes == 100 * 2**20
    assert len(spec.jobs[-1].depends_on) == 100


@pytest.mark.parametrize(
    "text, message",
    [
        (
            JSON5.replace('command: "echo done"', 'command: "echo done", bogus: 1'),
            "sweep.json5:9: unknown key `bogus` (at $.jobs[1].bogus)",
        ),
        (
            JSON5.replace("resource_requirements: 'small'}", "resource_requirements: 'smal'}"),
            "sweep.json5:6: unknown resource requirement 'smal' (small) (at $.jobs[0].resource_requirements)",
        ),
        (
            JSON5.replace("name: 'gather',", "name: 'gather'"),
            "sweep.json5:9: cannot parse JSON5: Expected comma or '}', found 'c'",
        ),
        (
            JSON5.replace("'echo {i}'", "'echo {i}\\u0000'"),
            "sweep.json5:6: `command` contains the control character '\\x00'; it must be printable text, tabs and "
            "newlines (at $.jobs[0].command)",
        ),
        ("[1, 2]", "sweep.json5:1: the spec must be a mapping with `name` and `jobs`"),
        ("[" * 100_000, "sweep.json5:1: cannot parse JSON5: Maximum nesting level exceeded"),
    ],
)
def test_json5_errors_name_their_line(text, message):
    assert error_of(text, "sweep.json5") == message


def test_print_yaml_converts_json5_to_yaml_that_reads_the_same(tmp_path):
    spec = tmp_path / "sweep.json5"
    spec.write_text(JSON5)
    out = subprocess.run(
        [sys.executable, "-m", "torcctl", "validate", "--print-yaml", str(spec)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.startswith("name: sweep5\n")
    assert parse_spec(out, "converted.yaml") == parse_spec(JSON5, "sweep.json5")
    assert spec_as_yaml(out, "converted.yaml") == out


def test_spec_format_overrides_the_extension(tmp_path):
    spec = tmp_path / "sweep.txt"
    spec.write_text(JSON5)
    run = subprocess.run(
        [sys.executable, "-m", "torcctl", "validate", "--spec-format", "json5", str(spec)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0 and "ok (101 jobs" in run.stdout, run.stderr
    run = subprocess.run([sys.executable, "-m", "torcctl", "validate", str(spec)], capture_output=True, text=True)
    assert run.returncode == 2 and "cannot parse" in run.stderr and "Traceback" not in run.stderr


KDL = """\
// A Torc KDL spec (KDL 2)
name "kdl_demo"
parameters {
    i "1:3"
}
resource_requirements "small" {
    num_cpus 1
    memory "100m"
}
file "out_{i}" path="out/{i}.txt" {
    parameters { i "1:3"; }
}
/- job "commented_out" {
    command "never"
}
job "work_{i}" {
    command "echo {i} > ${files.output.out_{i}}"
    resource_requirements "small"
    use_parameters "i"
}
job "gather" {
    command #"cat out/*.txt | grep -c "[0-9]""#
    input_file "out_1"
    input_file "out_2"
    depends_on_regexes "^work_3$"
    cancel_on_blocking_job_failure #false
}
failure_handler "h" {
    rule {
        exit_codes 10 11
        max_retries 2
    }
}
"""

KDL_AS_YAML = """\
name: kdl_demo
parameters: {i: "1:3"}
resource_requirements:
  - {name: small, num_cpus: 1, memory: 100m}
files:
  - {name: "out_{i}", path: "out/{i}.txt", parameters: {i: "1:3"}}
jobs:
  - name: "work_{i}"
    command: "echo {i} > ${files.output.out_{i}}"
    resource_requirements: small
    use_parameters: [i]
  - name: gather
    command: 'cat out/*.txt | grep -c "[0-9]"'
    input_files: [out_1, out_2]
    depends_on_regexes: ["^work_3$"]
    cancel_on_blocking_job_failure: false
failure_handlers:
  - name: h
    rules: [{exit_codes: [10, 11], max_retries: 2}]
"""


def test_kdl_reads_as_the_same_spec_in_yaml():
    assert parse_spec(KDL, "wf.kdl") == parse_spec(KDL_AS_YAML, "wf.yaml")
    gather = parse_spec(KDL, "wf.kdl").jobs[-1]
    assert gather.depends_on == ["work_3", "work_1", "work_2"] and not gather.cancel_on_blocking


def test_kdl_1_syntax_reads_too():
    v1 = 'name "v1"\njob "a" {\n    command r#"echo "hi""#\n    cancel_on_blocking_job_failure false\n}\n'
    job = parse_spec(v1, "wf.kdl").jobs[0]
    assert job.command == 'echo "hi"' and not job.cancel_on_blocking


@pytest.mark.parametrize(
    "change, message",
    [
        (('memory "100m"', 'memory "100m'), "wf.kdl:8: cannot parse KDL: Parse error"),
        (("max_retries 2", "max_retries 2 }"), "wf.kdl:31: cannot parse KDL: Error parsing property or argument"),
        (
            ("num_cpus 1", "num_cpus 1\n    bogus 2"),
            "wf.kdl:8: unknown key `bogus` (at $.resource_requirements[0].bogus)",
        ),
        (
            ('input_file "out_2"', 'input_file "out_9"'),
            "wf.kdl:23: job 'gather' lists input file 'out_9', and `files` has no such file (at $.jobs[1].input_files)",
        ),
        (
            ('depends_on_regexes "^work_3$"', 'depends_on_regexes "^nothing"'),
            "wf.kdl:25: depends_on_regexes entry '^nothing' of job 'gather' matches no other job "
            "(at $.jobs[1].depends_on_regexes[0])",
        ),
        (
            ('resource_requirements "small"\n    use', 'resource_requirements "smal"\n    use'),
            "wf.kdl:18: unknown resource requirement 'smal' (small) (at $.jobs[0].resource_requirements)",
        ),
        (('job "gather" {', "job {"), 'wf.kdl:21: `job` takes its name as its one argument, like job "name"'),
        (('command #"cat', 'command "echo"\n    command #"cat'), "wf.kdl:23: `command` is given twice"),
        (('memory "100m"', 'memory "100m" "200m"'), "wf.kdl:8: `memory` takes one value, and has 2"),
        (
            ('job "gather" {', 'job "work_1" {'),
            "wf.kdl:21: duplicate job name 'work_1' (also made by jobs[0]) (at $.jobs[1].name)",
        ),
        (('path="out/{i}.txt"', 'path=""'), "wf.kdl:10: Expected `str` of length >= 1 (at $.files[0].path)"),
        (
            ('job "gather" {', 'job "gather" num_cpus="x" {'),
            "wf.kdl:21: Expected `int`, got `str` (at $.jobs[1].num_cpus)",
        ),
        (
            ("exit_codes 10 11", 'exit_codes 10 "x"'),
            "wf.kdl:30: Expected `int`, got `str` (at $.failure_handlers[0].rules[0].exit_codes[1])",
        ),
        (
            ('"echo {i} > ', '"echo {i}\\u{0} > '),
            "wf.kdl:17: `command` contains the control character '\\x00'; it must be printable text, tabs and newlines "
            "(at $.jobs[0].command)",
        ),
    ],
)
def test_kdl_errors_name_their_line(change, message):
    text = KDL.replace(*change)
    assert text != KDL
    assert error_of(text, "wf.kdl") == message


def test_kdl_too_deep_or_unclosed_is_a_clear_error():
    assert (
        error_of("a {" * 100_000, "wf.kdl")
        == "wf.kdl:1: cannot parse KDL: Unexpected end of data (unclosed lists of children)"
    )
    assert (
        error_of('name "x"\nmetadata ' + "{ a " * 5000 + "}" * 5000, "wf.kdl")
        == "wf.kdl: the spec is nested too deeply"
    )


def test_print_yaml_converts_kdl(tmp_path):
    spec = tmp_path / "wf.kdl"
    spec.write_text(KDL)
    out = subprocess.run(
        [sys.executable, "-m", "torcctl", "validate", "--print-yaml", str(spec)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert parse_spec(out, "converted.yaml") == parse_spec(KDL, "wf.kdl")


SORTED = """\
name: sorted
jobs_sort_method: {method}
resource_requirements:
  - {{name: short_big, runtime: PT10S, memory: 300m}}
  - {{name: long_small, runtime: PT50S, memory: 10m}}
  - {{name: mid, runtime: PT20S, memory: 100m}}
jobs:
  - {{name: a, command: "true", resource_requirements: short_big}}
  - {{name: b, command: "true", resource_requirements: long_small}}
  - {{name: c, command: "true", resource_requirements: mid}}
  - {{name: d, command: "true"}}
"""


@pytest.mark.parametrize(
    "method, order",
    [
        ("none", ["a", "b", "c", "d"]),
        ("gpus_runtime_memory", ["b", "c", "a", "d"]),
        ("gpus_memory_runtime", ["a", "c", "b", "d"]),
    ],
)
def test_jobs_sort_method_sets_the_order_ready_jobs_start_in(make_daemon, method, order):
    d = make_daemon(max_parallel_jobs=1).start()
    wf = d.submit(SORTED.format(method=method))
    d.wait(wf)
    assert [e.job_name for e in d.events(wf) if e.kind == "job_started"] == order


TERMINATION = """\
name: terminated
resource_requirements:
  - {name: short, runtime: PT2S}
jobs:
  - name: graceful
    command: "trap 'echo got TERM; exit 0' TERM; sleep 30 & wait"
    resource_requirements: short
  - name: abrupt
    command: "trap 'echo got TERM; exit 0' TERM; sleep 30 & wait"
    resource_requirements: short
    supports_termination: false
"""


def test_supports_termination_false_kills_at_the_runtime_limit_without_term(daemon):
    wf = daemon.submit(TERMINATION)
    daemon.wait(wf)
    for name, rc, said in (("graceful", 0, "got TERM\n"), ("abrupt", 137, "")):
        (att,) = daemon.attempts(daemon.jobs(wf)[name].id)
        assert (att.return_code, att.cause, open(att.stdout_path).read()) == (rc, "timeout", said), name


def test_the_subgraphs_example_reads_alike_in_yaml_and_kdl_and_each_stage_gets_its_actions_scheduler():
    root = Path(__file__).resolve().parent.parent / "examples"
    spec = parse_spec((root / "subgraphs.yaml").read_text(), "subgraphs.yaml")
    assert spec == parse_spec((root / "subgraphs.kdl").read_text(), "subgraphs.kdl")
    assert {j.name: j.scheduler for j in spec.jobs if j.name.startswith(("prep", "work_b", "final"))} == {
        "prep_a": "prep_stage",
        "prep_b": "prep_stage",
        "work_b_1": "work_b_stage",
        "work_b_2": "work_b_stage",
        "work_b_3": "work_b_stage",
        "final": "last_stages",
    }


def test_a_sorted_workflow_keeps_its_place_ahead_of_workflows_submitted_after_it(make_daemon):
    d = make_daemon(max_parallel_jobs=1).start()
    first = d.submit(
        SORTED.format(method="gpus_runtime_memory").replace(
            '{name: b, command: "true"', '{name: b, command: "sleep 0.5"'
        )
    )
    d.wait_for(lambda: d.jobs(first)["b"].status == "running", what="b to run")
    second = d.submit("name: second\njobs:\n  - {name: s0, command: 'true'}\n  - {name: s1, command: 'true'}\n")
    d.wait(second)
    d.wait(first)
    started = [e for wf in (first, second) for e in d.events(wf) if e.kind == "job_started"]
    assert [e.job_name for e in sorted(started, key=lambda e: e.seq)] == ["b", "c", "a", "d", "s0", "s1"]


def test_torcs_optional_fields_and_forms_are_read_as_torc_reads_them():
    """Torc v0.12.0's examples: lists written `null`, a multi-line invocation_script, metadata as
    JSON text, resource_monitor.generate_plots (kept: plots at the end) and metrics (warned about, not refused)."""
    from torcd.spec.lint import lint_spec

    text = """\
name: t
metadata: '{"team": "grid", "n": 2}'
resource_monitor: {enabled: true, generate_plots: true, metrics: [cpu]}
files: null
jobs:
  - name: a
    command: echo "$X"
    invocation_script: |
      #!/bin/bash
      set -e
      export X=from-the-script
    input_files: null
    output_files: null
    input_user_data: null
    depends_on: null
    depends_on_regexes: null
    parameters: null
"""
    spec = parse_spec(text, "t.yaml")
    assert spec.about.metadata == {"team": "grid", "n": 2}
    assert spec.jobs[0].command.endswith('export X=from-the-script\necho "$X"')
    warnings = [f.message for f in lint_spec(text, "t.yaml", ".")]
    assert spec.monitoring.plots
    assert not any("plots" in w for w in warnings) and any("`metrics` is ignored" in w for w in warnings)
    import subprocess

    out = subprocess.run(["bash", "-c", spec.jobs[0].command], capture_output=True, text=True).stdout
    assert out == "from-the-script\n"
    for bad, message in (
        ("'{\"team\": '", "`metadata` is text that is not JSON"),
        ("'[1, 2]'", "`metadata` as text must be a JSON object"),
    ):
        with pytest.raises(SpecError, match=message):
            parse_spec(text.replace('\'{"team": "grid", "n": 2}\'', bad), "t.yaml")


def test_a_script_of_several_lines_without_a_last_newline_does_not_swallow_the_command():
    """Found in review: `|-` (no final newline) glued `python train.py` onto `source activate.sh`,
    which then ran with it as an argument and exited 0: the job "completed" without training."""
    import subprocess

    text = (
        "name: t\njobs:\n  - name: a\n    command: echo trained\n    invocation_script: |-\n      set -e\n      true\n"
    )
    command = parse_spec(text, "t.yaml").jobs[0].command
    assert subprocess.run(["bash", "-c", command], capture_output=True, text=True).stdout == "trained\n"


def test_nulls_inside_user_data_and_metadata_are_kept():
    """Found in review: `data: {parameters: null}` lost its key (nulls are dropped only where the
    spec's own lists are)."""
    spec = parse_spec(
        "name: n\nmetadata: {files: null, a: 1}\nuser_data:\n  - {name: d, data: {parameters: null}}\n"
        "jobs:\n  - {name: a, command: 'true', input_files: null}\n",
        "n.yaml",
    )
    assert spec.about.metadata == {"files": None, "a": 1} and spec.user_data["d"].data == {"parameters": None}


@pytest.mark.parametrize(
    "where, key, words",
    [("top", "access_groups: [a]", "one user")],
)
def test_a_newer_torc_key_torc_py_does_not_run_is_refused_saying_what_to_use(where, key, words):
    text = "name: t\njobs:\n  - name: a\n    command: 'true'\n" + ("    " if where == "job" else "") + key + "\n"
    message = error_of(text)
    name = key.split(":")[0]
    assert message.startswith(f"wf.yaml:5: Torc's `{name}` is not supported by torc-py: ") and words in message
