"""Torc's workflow `variables`, workflow-level `env`, per-job `priority` and parameter tables
(`parameters_file`, `use_parameters_file`): what they make, every refusal with its file, line
and field, and a real daemon running them."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from torcd.errors import SpecError
from torcd.spec.parse import parse_spec
from torcd.spec.tables import MAX_TABLE_BYTES

VARIABLES = """\
name: v
variables:
  root: /scratch/p42
  account: acct7
  width: 3
env:
  PROJECT: "{root}"
  SHARED: workflow
jobs:
  - name: prepare
    command: "prep --in {root}/raw ${HOME} ${files.input.raw} awk '{print $1}'"
    input_files: [raw]
  - name: "train_{i:02d}"
    command: "train --in {root} --n {width:>4} --shard {i}"
    parameters: {i: "1:2"}
    env: {SHARED: job, SHARD: "s{i}"}
files:
  - {name: raw, path: "{root}/raw.dat"}
"""


def spec_error(text: str, file: str = "wf.yaml", fmt: str | None = None, cwd: Path | None = None) -> SpecError:
    with pytest.raises(SpecError) as info:
        parse_spec(text, file, fmt, str(cwd) if cwd else None)
    return info.value


def test_variables_fill_every_text_and_never_the_shells_braces():
    wf = parse_spec(VARIABLES, "wf.yaml")
    prepare, train1, train2 = wf.jobs
    assert prepare.command == "prep --in /scratch/p42/raw ${HOME} /scratch/p42/raw.dat awk '{print $1}'"
    assert train1.name == "train_01" and train1.command == "train --in /scratch/p42 --n    3 --shard 1"
    assert wf.files["raw"].path == "/scratch/p42/raw.dat"
    # the workflow's env under each job's own, a job's value winning; parameters filled in
    assert prepare.env == {"PROJECT": "/scratch/p42", "SHARED": "workflow"}
    assert train2.env == {"PROJECT": "/scratch/p42", "SHARED": "job", "SHARD": "s2"}


def test_a_variable_fills_a_slurm_scheduler_and_a_number_format():
    text = VARIABLES + "slurm_schedulers:\n  - {name: s, account: '{account}', walltime: '01:00:00'}\n"
    text = text.replace("{width:>4}", "{width:03d}")
    wf = parse_spec(text, "wf.yaml")
    assert wf.schedulers[0].account == "acct7"
    assert wf.jobs[1].command == "train --in /scratch/p42 --n 003 --shard 1"


@pytest.mark.parametrize(
    "change, line, field, words",
    [
        (("{root}/raw", "{rot}/raw"), 11, "$.jobs[0].command", "unknown name {rot}"),
        (("width: 3", "i: 3"), 5, "$.variables.i", "also a parameter's name"),
        (("width: 3", "width: '{root}'"), 5, "$.variables.width", "may not refer to variables"),
        (("width: 3", "width: [3]"), 5, "$.variables.width", "must be text or a number"),
        (("width: 3", "width: true"), 5, "$.variables.width", "must be text or a number"),
        (("width: 3", "2width: 3"), 5, "$.variables.2width", "is not a name"),
        (("{width:>4}", "{root:03d}"), 14, "$.jobs[1].command", "cannot format root"),
        (("{width:>4}", "{width:>5000}"), 14, "$.jobs[1].command", "width or precision over"),
        (('path: "{root}/raw.dat"', 'path: "{roots}/raw.dat"'), 18, "$.files[0].path", "unknown name {roots}"),
    ],
)
def test_a_wrong_variable_is_refused_with_its_line_and_field(change, line, field, words):
    e = spec_error(VARIABLES.replace(*change))
    assert (e.file, e.line, e.field) == ("wf.yaml", line, field)
    assert words in e.message


def test_variables_that_are_not_a_mapping_are_refused():
    e = spec_error("name: v\nvariables: [a, b]\njobs: [{name: a, command: 'true'}]\n")
    assert (e.line, e.field) == (2, "$.variables") and "mapping" in e.message


def test_without_variables_braces_stay_as_written():
    wf = parse_spec("name: v\njobs: [{name: a, command: \"awk '{print}' {x}\"}]\n", "wf.yaml")
    assert wf.jobs[0].command == "awk '{print}' {x}"


def test_variables_add_at_most_their_budget_of_text():
    big = "x" * 100_000
    text = f"name: v\nvariables: {{big: {big}}}\njobs:\n  - name: a_{{i}}\n    command: echo {{big}}\n"
    text += "    parameters: {i: '1:3'}\n"
    assert parse_spec(text, "wf.yaml").jobs[0].command == "echo " + big  # one text, filled once
    many = (
        "name: v\nvariables: {big: "
        + big
        + "}\njobs:\n"
        + "".join(f"  - {{name: a{k}, command: 'echo {{big}}'}}\n" for k in range(1400))
    )
    e = spec_error(many)
    assert "MiB of text" in e.message and e.field is not None and e.field.startswith("$.jobs[")


@pytest.mark.parametrize(
    "fmt, text",
    [
        (
            "json5",
            """{name: "v", variables: {root: "/r"}, env: {P: "{root}"},
                jobs: [{name: "a", command: "ls {root}"}]}""",
        ),
        (
            "kdl",
            """name "v"
variables {
    root "/r"
}
env {
    P "{root}"
}
job "a" {
    command "ls {root}"
}
""",
        ),
    ],
)
def test_variables_and_env_read_alike_in_json5_and_kdl(fmt, text):
    job = parse_spec(text, f"wf.{fmt}").jobs[0]
    assert (job.command, job.env) == ("ls /r", {"P": "/r"})


PRIORITY = """\
name: p
jobs:
  - {name: a, command: "true"}
  - {name: b, command: "true", priority: 3}
  - {name: c, command: "true", priority: 3, resource_requirements: big}
  - {name: d, command: "true", priority: 1}
resource_requirements:
  - {name: big, memory: 1g}
"""


@pytest.mark.parametrize(
    "method, order",
    [("none", ["b", "c", "d", "a"]), ("gpus_memory_runtime", ["c", "b", "d", "a"])],
)
def test_priority_orders_the_claims_before_the_sort_method(method, order):
    wf = parse_spec(PRIORITY + f"jobs_sort_method: {method}\n", "wf.yaml")
    assert [j.name for j in sorted(wf.jobs, key=lambda j: j.claim_order)] == order


def test_a_negative_priority_is_refused():
    e = spec_error(PRIORITY.replace("priority: 1", "priority: -1"))
    assert e.line == 6 and e.field == "$.jobs[3].priority"


def test_higher_priority_jobs_start_first_in_a_real_daemon(make_daemon):
    d = make_daemon(max_parallel_jobs=1).start()
    wf = d.submit(PRIORITY)
    d.wait(wf)
    assert [e.job_name for e in d.events(wf) if e.kind == "job_started"] == ["b", "c", "d", "a"]


CSV = "model,lr,batch,dataset\nresnet,0.001,32,cifar10\nvit,1e-4,16,imagenet\nmlp,x1,08,\n"
TABLES = """\
name: t
variables: {tables: tables}
parameters_file: "{tables}/shared.jsonl"
jobs:
  - name: train_{model}_{batch}
    command: "echo {model} {lr} {batch} [{dataset}]"
    parameters_file: "{tables}/sweep.csv"
  - name: score_{case}
    command: "echo {case} {weight}"
    use_parameters_file: true
files:
  - name: out_{model}
    path: "out/{model}.txt"
    parameters_file: tables/sweep.csv
"""


@pytest.fixture
def tables(tmp_path: Path) -> Path:
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "sweep.csv").write_text(CSV)
    (tmp_path / "tables" / "shared.jsonl").write_text(
        '{"case": "a", "weight": 1}\n\n{"case": "b", "weight": {"w": [1, 2]}}\n'
    )
    return tmp_path


def test_a_table_makes_one_job_per_row_with_cells_typed_as_torc_does(tables):
    wf = parse_spec(TABLES, "wf.yaml", None, str(tables))
    assert [(j.name, j.command) for j in wf.jobs] == [
        ("train_resnet_32", "echo resnet 0.001 32 [cifar10]"),
        ("train_vit_16", "echo vit 0.0001 16 [imagenet]"),
        ("train_mlp_8", "echo mlp x1 8 []"),  # `08` is the integer 8, as Torc reads it
        ("score_a", "echo a 1"),
        ("score_b", 'echo b {"w": [1, 2]}'),
    ]
    assert sorted(wf.files) == ["out_mlp", "out_resnet", "out_vit"]


def test_a_json_table_is_an_array_of_objects(tables):
    (tables / "tables" / "sweep.json").write_text(
        '[\n  {"model": "a", "lr": 0.5, "batch": 2, "dataset": null},\n'
        '  {"model": "b", "lr": 1, "batch": 3, "dataset": true}\n]\n'
    )
    wf = parse_spec(TABLES.replace('sweep.csv"', 'sweep.json"'), "wf.yaml", None, str(tables))
    assert [j.command for j in wf.jobs[:2]] == ["echo a 0.5 2 [null]", "echo b 1 3 [true]"]


@pytest.mark.parametrize(
    "table, content, line, words",
    [
        ("sweep.csv", "model,lr,batch,dataset\nresnet,0.1,2\n", 2, "the row has 3 cells; the header has 4"),
        ("sweep.csv", "model,2lr\nresnet,0.1\n", 1, "column '2lr' is not a parameter name"),
        ("sweep.csv", "model,model\na,b\n", 1, "column 'model' is given twice"),
        ("sweep.csv", "model,lr,batch,dataset\n", 1, "a header and no rows"),
        ("sweep.csv", "", 1, "no header row"),
        ("sweep.csv", "\n\n\n", 1, "no header row"),
        ("sweep.csv", 'model,lr,batch,dataset\na,1,2,"x\ny"\n', 3, "control character '\\n'"),
        ("sweep.csv", "model,lr,batch,dataset\na,1,2,x\x1b]0;t\x07\n", 2, "control character '\\x1b'"),
        ("sweep.json", '[{"model": "a\\u001b", "lr": 1, "batch": 2, "dataset": 3}]', 1, "control character"),
        ("sweep.json", '[{"model": "a", "model": "b", "lr": 1, "batch": 2, "dataset": 3}]', 1, "given twice"),
        ("sweep.json", "[{}, {}]", 1, "no columns"),
        ("sweep.csv", 'model,lr,batch,dataset\n"a,1,2,3\n', 2, "cannot read CSV"),
        ("sweep.csv", "model,lr,batch,dataset\na,1,2,\x003\n", 2, "NUL byte"),
        ("sweep.json", '[{"model": "a", "lr": 1, "batch": 2, "dataset": 3},\n {"model": "b"}]', 2, "differ"),
        ("sweep.json", '[{"model": "a", "lr": 1, "batch": 2, "dataset": 3},\n\n 7]', 3, "each row is an object"),
        ("sweep.json", '[{"model": "a", "lr": NaN, "batch": 2, "dataset": 3}]', 1, "NaN is not a value"),
        ("sweep.json", '[{"model": "a", "lr": 1, "batch": 2, "dataset": 3}\n\n {"x": 1}]', 3, "expected `,` or `]`"),
        ("sweep.json", '{"model": "a"}', 1, "an array of objects"),
        ("sweep.json", "[]", 1, "no rows"),
        ("sweep.json", '[{"model": "a", "lr": 1, "batch": 2, "dataset": 3}] x', 1, "text after the array"),
        ("sweep.json", "[" + "[" * 100_000 + "]" * 100_000 + "]", 1, "nested too deeply"),
    ],
)
def test_a_bad_table_is_refused_naming_the_tables_line(tables, table, content, line, words):
    (tables / "tables" / table).write_text(content)
    e = spec_error(TABLES.replace('sweep.csv"', f'{table}"'), cwd=tables)
    assert e.file == f"tables/{table}" and e.line == line, e.message
    assert words in e.message and "$.jobs[0].parameters_file" in e.message


@pytest.mark.parametrize(
    "change, line, field, words",
    [
        (('sweep.csv"', 'nope.csv"'), 7, "$.jobs[0].parameters_file", "No such file"),
        (('sweep.csv"', 'sweep.txt"'), 7, "$.jobs[0].parameters_file", "is not .csv"),
        (("{tables}/sweep.csv", "{tabels}/sweep.csv"), 7, "$.jobs[0].parameters_file", "unknown name {tabels}"),
        (
            ("use_parameters_file: true", "use_parameters_file: true\n    parameters: {x: '1:2'}"),
            11,
            "$.jobs[1].parameters",
            "excludes `parameters`",
        ),
        (
            ("use_parameters_file: true", "use_parameters_file: true\n    parameter_mode: zip"),
            11,
            "$.jobs[1].parameter_mode",
            "excludes",
        ),
        (
            ("use_parameters_file: true", "use_parameters_file: 'yes'"),
            10,
            "$.jobs[1].use_parameters_file",
            "true or false",
        ),
        (
            ("use_parameters_file: true", "use_parameters_file: true\n    parameters_file: tables/sweep.csv"),
            8,
            "$.jobs[1]",
            "not both",
        ),
        (
            (
                'parameters_file: "{tables}/shared.jsonl"\n',
                "parameters: {x: '1:2'}\nparameters_file: tables/shared.jsonl\n",
            ),
            4,
            "$.parameters_file",
            "not both",
        ),
        (
            ('parameters_file: "{tables}/shared.jsonl"\n', ""),
            9,
            "$.jobs[1].use_parameters_file",
            "needs the workflow's",
        ),
        (
            ("variables: {tables: tables}", "variables: {tables: tables, model: m}"),
            2,
            "$.variables.model",
            "parameter's name",
        ),
        (
            ('parameters_file: "{tables}/sweep.csv"', "parameters_file: 7"),
            7,
            "$.jobs[0].parameters_file",
            "must be the path",
        ),
    ],
)
def test_a_table_where_torc_refuses_one_is_refused(tables, change, line, field, words):
    e = spec_error(TABLES.replace(*change), cwd=tables)
    assert (e.file, e.line, e.field) == ("wf.yaml", line, field), e.message
    assert words in e.message


def test_a_fifo_a_device_a_directory_and_an_oversized_table_are_refused_without_waiting(tables):
    os.mkfifo(tables / "tables" / "fifo.csv")
    (tables / "tables" / "dir.csv").mkdir()
    with open(tables / "tables" / "big.csv", "wb") as f:
        f.truncate(MAX_TABLE_BYTES + 1)  # sparse: nothing is written
    for path, words in [
        ("tables/fifo.csv", "not a regular file"),
        ("/dev/zero.csv", "No such file"),
        ("tables/dir.csv", "not a regular file"),
        ("tables/big.csv", f"the limit is {MAX_TABLE_BYTES:,}"),
    ]:
        e = spec_error(TABLES.replace("{tables}/sweep.csv", path), cwd=tables)
        assert words in e.message and e.field == "$.jobs[0].parameters_file", e.message
    (tables / "tables" / "latin1.csv").write_bytes(b"model,lr,batch,dataset\ncaf\xe9,1,2,3\n")
    e = spec_error(TABLES.replace("{tables}/sweep.csv", "tables/latin1.csv"), cwd=tables)
    assert "not UTF-8 text (byte 26)" in e.message


def test_a_table_is_read_from_the_submitting_directory_by_a_real_daemon(daemon, tables):
    wf = daemon.submit(TABLES, cwd=tables)
    assert daemon.wait(wf).counts == {"completed": 5}
    job = daemon.jobs(wf)["score_b"]
    assert open(daemon.attempts(job.id)[0].stdout_path).read() == "b {w: [1, 2]}\n"  # the shell took the quotes
    code, out, err = daemon.ctl("submit", "../spec.yaml", cwd=tables / "tables")  # tables/tables/...: none
    assert code != 0 and "cannot read parameter table 'tables/shared.jsonl'" in err
    assert "Traceback" not in err


def test_the_workflow_env_and_variables_reach_a_real_job(daemon, tmp_path):
    spec = textwrap.dedent(
        """\
        name: env
        variables: {greeting: hello}
        env: {GREETING: "{greeting}", WHO: workflow}
        jobs:
          - {name: a, command: 'echo "$GREETING $WHO"'}
          - {name: b, command: 'echo "$GREETING $WHO"', env: {WHO: job}}
        """
    )
    wf = daemon.submit(spec)
    assert daemon.wait(wf).counts == {"completed": 2}
    out = {n: open(daemon.attempts(j.id)[0].stdout_path).read() for n, j in daemon.jobs(wf).items()}
    assert out == {"a": "hello workflow\n", "b": "hello job\n"}


@pytest.mark.parametrize(
    "content, expected",
    [
        ("\ufeffmodel,lr,batch,dataset\na,1,2,x\n", ["echo a 1 2 [x]"]),  # Excel's "CSV UTF-8"
        ("model,lr,batch,dataset\r\na,1,2,x\r\nb,1,2,y\r\n", ["echo a 1 2 [x]", "echo b 1 2 [y]"]),
        ("model,lr,batch,dataset\na\u2028b,1,2,x\n", ["echo a\u2028b 1 2 [x]"]),  # one row, not two
        ("model,lr,batch,dataset\nm,1,2," + "9" * 5000 + "\n", ["echo m 1 2 [" + "9" * 5000 + "]"]),
    ],
)
def test_a_table_reads_as_written(tables, content, expected):
    (tables / "tables" / "sweep.csv").write_text(content, newline="")
    jobs = parse_spec(TABLES, "wf.yaml", None, str(tables)).jobs
    assert [j.command for j in jobs if j.name.startswith("train_")] == expected


def test_a_variable_may_set_a_parameters_range():
    text = (
        "name: v\nvariables: {n_max: 3}\njobs:\n  - {name: 'j{i}', command: 'echo {i}', parameters: {i: '1:{n_max}'}}\n"
    )
    assert [j.name for j in parse_spec(text, "wf.yaml").jobs] == ["j1", "j2", "j3"]
