"""Torc's spec keys and formats: zip parameters, dependency regexes, JSON5, conversion to YAML."""

from __future__ import annotations

import subprocess
import sys

import pytest

from torcd.errors import SpecError
from torcd.spec import parse_spec, spec_as_yaml


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
        ("run_1_a", "solve --i 1 --model a"), ("run_2_b", "solve --i 2 --model b"),
        ("run_3_c", "solve --i 3 --model c")]
    assert len(parse_spec(ZIP.replace("    parameter_mode: zip\n", "")).jobs) == 9  # product, the default


def test_zip_with_lengths_that_differ_names_them():
    message = error_of(ZIP.replace("'1:3'", "'1:4'").replace('"1:3"', '"1:4"'))
    assert message == ("wf.yaml:6: parameter_mode zip pairs values by position, so every parameter needs as many "
                       "values; here i has 4, model has 3 (at $.jobs[0].parameters)")


def test_zip_fills_dependencies_with_the_same_combination():
    text = ZIP + """\
  - name: post_{i}_{model}
    command: post {i}
    parameter_mode: zip
    parameters: {i: "1:3", model: "['a', 'b', 'c']"}
    depends_on: ["run_{i}_{model}"]
"""
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


@pytest.mark.parametrize("regex, message", [
    ("^nothing", "depends_on_regexes entry '^nothing' of job 'gather' matches no other job"),
    ("^gath", "depends_on_regexes entry '^gath' of job 'gather' matches no other job"),  # only itself
    ("work_(", "bad regular expression 'work_(': missing ) at position 6"),
])
def test_depends_on_regexes_that_match_nothing_are_errors_with_their_line(regex, message):
    text = FAN_IN.replace('"^work_[0-9]+$"', repr(regex))
    assert error_of(text) == f"wf.yaml:11: {message} (at $.jobs[2].depends_on_regexes[0])"


def test_a_regex_that_closes_a_cycle_is_refused():
    text = FAN_IN.replace('command: echo {i}', 'command: echo {i}\n    depends_on_regexes: ["^gather$"]')
    assert error_of(text).startswith("wf.yaml:")
    assert "dependency cycle: " in error_of(text)


def test_a_regex_that_backtracks_without_end_is_an_error_not_a_hang():
    text = ("name: redos\njobs:\n  - {name: " + "a" * 60 + ", command: 'true'}\n"
            "  - {name: b, command: 'true', depends_on_regexes: ['(?:a|a(?=a))+b']}\n")
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


@pytest.mark.parametrize("text, message", [
    (JSON5.replace("command: \"echo done\"", "command: \"echo done\", bogus: 1"),
     "sweep.json5:9: unknown key `bogus` (at $.jobs[1].bogus)"),
    (JSON5.replace("resource_requirements: 'small'}", "resource_requirements: 'smal'}"),
     "sweep.json5:6: unknown resource requirement 'smal' (small) (at $.jobs[0].resource_requirements)"),
    (JSON5.replace("name: 'gather',", "name: 'gather'"),
     "sweep.json5:9: cannot parse JSON5: Expected comma or '}', found 'c'"),
    (JSON5.replace("'echo {i}'", "'echo {i}\\u0000'"),
     "sweep.json5:6: `command` contains the control character '\\x00'; it must be printable text, tabs and "
     "newlines (at $.jobs[0].command)"),
    ("[1, 2]", "sweep.json5:1: the spec must be a mapping with `name` and `jobs`"),
    ("[" * 100_000, "sweep.json5:1: cannot parse JSON5: Maximum nesting level exceeded"),
])
def test_json5_errors_name_their_line(text, message):
    assert error_of(text, "sweep.json5") == message


def test_print_yaml_converts_json5_to_yaml_that_reads_the_same(tmp_path):
    spec = tmp_path / "sweep.json5"
    spec.write_text(JSON5)
    out = subprocess.run([sys.executable, "-m", "torcctl", "validate", "--print-yaml", str(spec)],
                         capture_output=True, text=True, check=True).stdout
    assert out.startswith("name: sweep5\n")
    assert parse_spec(out, "converted.yaml") == parse_spec(JSON5, "sweep.json5")
    assert spec_as_yaml(out, "converted.yaml") == out


def test_spec_format_overrides_the_extension(tmp_path):
    spec = tmp_path / "sweep.txt"
    spec.write_text(JSON5)
    run = subprocess.run([sys.executable, "-m", "torcctl", "validate", "--spec-format", "json5", str(spec)],
                         capture_output=True, text=True)
    assert run.returncode == 0 and "ok (101 jobs" in run.stdout, run.stderr
    run = subprocess.run([sys.executable, "-m", "torcctl", "validate", str(spec)], capture_output=True, text=True)
    assert run.returncode == 2 and "cannot parse" in run.stderr and "Traceback" not in run.stderr
