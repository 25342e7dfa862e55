"""A KDL property given twice on one node is an error naming its line, as a node given twice is
(ckdl itself keeps the last one silently)."""

from __future__ import annotations

import pytest

from torcd.errors import SpecError
from torcd.spec.parse import parse_spec

SPEC = """\
name "props"
resource_requirements "small" num_cpus=1 memory="1g"
file "raw" path="raw.txt"
job "a" {
    command "cat raw.txt"
    input_file "raw"
}
"""


def error_of(text: str) -> str:
    try:
        parse_spec(text, "wf.kdl")
    except SpecError as e:
        return e.message
    raise AssertionError("the spec was accepted")


@pytest.mark.parametrize(
    "change, message",
    [
        (('path="raw.txt"', 'path="raw.txt" path="other.txt"'), "wf.kdl:3: `path` is given twice"),
        (("num_cpus=1", "num_cpus=1 num_cpus=2"), "wf.kdl:2: `num_cpus` is given twice"),
        (('file "raw"', 'file "raw" name="raw"'), "wf.kdl:3: `name` is given twice"),  # the argument is `name`
        (('path="raw.txt"', '"path"="raw.txt" #"path"#="b"'), "wf.kdl:3: `path` is given twice"),
        (('path="raw.txt"', 'path = "raw.txt" \\\n    path="b"'), "wf.kdl:4: `path` is given twice"),
        (('command "cat raw.txt"', 'command "cat raw.txt"\n    env A="1" A="2"'), "wf.kdl:6: `A` is given twice"),
    ],
)
def test_a_property_given_twice_names_its_line(change, message):
    text = SPEC.replace(*change)
    assert text != SPEC
    assert error_of(text) == message


@pytest.mark.parametrize(
    "change",
    [
        ('path="raw.txt"', 'path="raw.txt" /-path="other.txt"'),  # commented out
        ('path="raw.txt"', 'path="a=b.txt"'),  # an `=` in a value
        ('job "a" {', '/-job "b" x=1 x=2\njob "a" {'),  # a node commented out
        ('job "a" {', 'job "a" {\n    env A="1" B="1"'),  # the same value under two keys
    ],
)
def test_what_is_not_a_repeated_property_is_read(change):
    text = SPEC.replace(*change)
    assert text != SPEC
    assert parse_spec(text, "wf.kdl").jobs[0].name == "a"
