"""`validate` reports every error of a spec in one run, in line order (Torc's sample_workflow
needed three passes, one error each)."""

from __future__ import annotations

import json

from torcd.spec.errors import MAX_ERRORS, spec_errors

THREE = """\
name: three
failure_handlers:
  - name: h
    rules:
      - {exit_codes: [0], max_retries: 2}
jobs:
  - {name: a, command: "true", bogus: 1, failure_handler: h}
  - {name: b, command: "true", depends_on: [zz]}
  - {name: c, command: "true", failure_handler: nope}
  - {name: d, command: "true", num_cpus: -1}
  - {name: e, command: "true", depends_on: [a, b, c, d]}
"""


def test_every_error_is_found_once_in_line_order_without_errors_that_follow_from_them():
    errors = spec_errors(THREE, "three.yaml")
    assert [(e.line, e.field) for e in errors] == [
        (5, "$.failure_handlers[0].rules[0].exit_codes[0]"),
        (7, "$.jobs[0].bogus"),
        (8, "$.jobs[1].depends_on"),
        (9, "$.jobs[2].failure_handler"),
        (10, "$.jobs[3].num_cpus"),
    ]
    assert "depends on 'zz', which does not exist" in errors[2].message


def test_a_valid_spec_has_none_and_one_that_does_not_read_has_its_syntax_error():
    assert spec_errors("name: ok\njobs:\n  - {name: a, command: 'true'}\n", "ok.yaml") == []
    [error] = spec_errors("name: bad\njobs: [\n", "bad.yaml")
    assert error.line is not None


def test_validate_prints_each_error_and_their_count_and_exits_2(daemon, tmp_path):
    (tmp_path / "three.yaml").write_text(THREE)
    code, out, err = daemon.ctl("validate", "three.yaml")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 6 and lines[-1] == "three.yaml: 5 errors", err
    assert lines[1] == "torcctl: error: three.yaml:7: unknown key `bogus` (at $.jobs[0].bogus)"
    code, out, _ = daemon.ctl("--json", "validate", "three.yaml")
    assert code == 2 and [e["line"] for e in json.loads(out)["errors"]] == [5, 7, 8, 9, 10]
    one = (
        THREE.replace(", bogus: 1", "")
        .replace("[0]", "[1]")
        .replace("[zz]", "[a]")
        .replace("nope", "h")
        .replace("num_cpus: -1", "num_cpus: 0")
    )
    (tmp_path / "one.yaml").write_text(one)
    code, _, err = daemon.ctl("validate", "one.yaml")
    assert code == 2 and err == "torcctl: error: one.yaml:10: Expected `int` >= 1 (at $.jobs[3].num_cpus)\n"


def test_at_most_fifty_are_reported():
    jobs = "".join(f"  - {{name: j{i}, command: 'true', bogus{i}: 1}}\n" for i in range(80))
    errors = spec_errors("name: many\njobs:\n" + jobs, "many.yaml")
    assert len(errors) == MAX_ERRORS and errors[0].field == "$.jobs[0].bogus0"


def test_a_second_bad_value_in_the_same_list_does_not_end_the_search():
    """Found in review: dropping a bad exit code moved the next one into its place, and the
    search stopped there; and `$.user_data[0].bogus` was taken for something `$.user` holds."""
    text = THREE.replace("exit_codes: [0]", 'exit_codes: [1, "a", "b"]')
    assert [e.line for e in spec_errors(text, "three.yaml")] == [5, 7, 8, 9, 10]
    held = (
        "name: h\nuser_data:\n  - {name: d, bogus: 1}\nuser: '" + "u" * 300 + "'\njobs:\n"
        "  - {name: a, command: 'true'}\n"
    )
    assert [e.field for e in spec_errors(held, "h.yaml")] == ["$.user_data[0].bogus", "$.user"]
