"""Parameter values, products and templates."""

import pytest

from torcd.core.params import ParameterError, combinations, fill, parse_values, placeholders
from torcd.spec.parse import parse_spec


@pytest.mark.parametrize(
    "spec,values",
    [
        ("1:5", [1, 2, 3, 4, 5]),
        ("0:100:25", [0, 25, 50, 75, 100]),
        ("3:3", [3]),
        ("-2:2:2", [-2, 0, 2]),
        ("0.0:1.0:0.25", [0, 0.25, 0.5, 0.75, 1]),  # Torc's float range; whole values as Torc writes them
        ("0.1:0.3:0.1", [0.1, 0.2, 0.3]),  # the decimals written, not 0.30000000000000004
        ("0.5:2", [0.5, 1.5]),
        ("1234567.8:1234567.9:0.05", [1234567.8, 1234567.85, 1234567.9]),  # the end kept at any magnitude
        ("[16,32]", [16, 32]),
        ("['a','b']", ["a", "b"]),
        ("[0.1, 0.5]", [0.1, 0.5]),
        ("[train, test, validation]", ["train", "test", "validation"]),  # Torc reads bare words
        ("[1, 2.5, x, 'y z']", [1, 2.5, "x", "y z"]),
        (7, [7]),
        ([1, "x"], [1, "x"]),
    ],
)
def test_parse_values(spec, values):
    assert list(parse_values(spec)) == values


@pytest.mark.parametrize(
    "spec,message",
    [
        ("5:1", "ends before it starts"),
        ("1:10:0", "positive step"),
        ("0.5:0.1:0.1", "ends before it starts"),
        ("0.0:1.0:-0.5", "positive step"),
        ("0.0:10.0:0.000001", "10,000,001 values; the limit is 2,000,000"),
        ("1.2.3:4", "neither a range"),
        ("1:x", "neither a range"),
        ("[1,,2]", "cannot read list"),
        ("[a, [b]]", "cannot read list"),
        ("[]", "empty"),
        ("[[1]]", "not a number or a string"),
        (True, "expected a range or list"),
        ("__import__('os')", "neither a range"),
    ],
)
def test_bad_values(spec, message):
    with pytest.raises(ParameterError, match=message):
        parse_values(spec)


def test_fill_formats_known_names_and_leaves_other_braces():
    assert fill("job_{i:03d}_{name}", {"i": 7, "name": "x"}) == "job_007_x"
    assert fill("echo ${HOME} {i} awk '{print $1}' {other}", {"i": 1}) == "echo ${HOME} 1 awk '{print $1}' {other}"
    assert placeholders("a_{i}_{j:02d}_${X}") == {"i", "j"}


def test_cartesian_product_order():
    assert list(combinations({"a": [1, 2], "b": ["x", "y"]})) == [
        {"a": 1, "b": "x"},
        {"a": 1, "b": "y"},
        {"a": 2, "b": "x"},
        {"a": 2, "b": "y"},
    ]


SWEEP = """
name: sweep
parameters:
  lr: "[0.1, 0.01]"
jobs:
  - name: prep
    command: echo prep
  - name: sim_m{model}_s{scenario}
    command: run --model {model} --scenario {scenario:02d}
    parameters: {model: "0:2", scenario: "0:2"}
    depends_on: [prep]
  - name: train_{lr}
    command: train --lr {lr}
    use_parameters: [lr]
  - name: aggregate
    command: collect
    parameters: {model: "0:2", scenario: "0:2"}
    depends_on:
      - sim_m{model}_s{scenario}
      - prep
"""


def test_expansion_counts_names_and_aggregate_union():
    wf = parse_spec(SWEEP, "sweep.yaml")
    names = [j.name for j in wf.jobs]
    assert len(names) == 1 + 9 + 2 + 1
    assert "sim_m2_s1" in names and "train_0.01" in names
    sim = next(j for j in wf.jobs if j.name == "sim_m1_s2")
    assert sim.command == "run --model 1 --scenario 02" and sim.depends_on == ["prep"]
    agg = next(j for j in wf.jobs if j.name == "aggregate")
    assert len(agg.depends_on) == 10 and set(agg.depends_on) >= {f"sim_m{m}_s{s}" for m in range(3) for s in range(3)}
