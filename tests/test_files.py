"""Files as dependencies: producers run before consumers, inputs must exist, outputs must appear."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from torcctl.transport import RpcError
from torcd.errors import SpecError
from torcd.spec.parse import parse_spec

ROOT = Path(__file__).resolve().parent.parent


def test_the_file_diamond_example_runs_in_file_order_and_writes_its_summary(daemon):
    work = daemon.tmp / "repo"
    (work / "examples").mkdir(parents=True)
    shutil.copytree(ROOT / "examples" / "data", work / "examples" / "data")
    wf = daemon.submit((ROOT / "examples" / "file_diamond.yaml").read_text(), cwd=work)
    assert daemon.wait(wf).counts == {"completed": 4}
    assert (work / "output/file_diamond/summary.txt").read_text() == "total 55\n"
    jobs = daemon.jobs(wf)
    starts = {name: daemon.attempts(j.id)[0] for name, j in jobs.items()}
    assert starts["preprocess"].end_time <= starts["work_1"].start_time
    assert max(starts["work_1"].end_time, starts["work_2"].end_time) <= starts["postprocess"].start_time
    code, out, _ = daemon.ctl("--json", "files", str(wf))
    files = {f["name"]: f for f in json.loads(out)}
    assert files["numbers"] == {
        "name": "numbers",
        "path": "examples/data/numbers.txt",
        "producer": None,
        "consumers": ["preprocess"],
        "exists": True,
    }
    assert files["half_2"]["producer"] == "work_2" and files["half_2"]["consumers"] == ["postprocess"]
    assert files["summary"]["consumers"] == [] and files["summary"]["exists"]
    (work / "output/file_diamond/summary.txt").unlink()
    code, out, _ = daemon.ctl("files", str(wf))
    assert code == 0 and "(input)" in out and "summary" in out and out.rstrip().endswith("no")


MISSING = """\
name: forgetful
files:
  - {name: result, path: result.txt}
  - {name: other, path: other.txt}
failure_handlers:
  - name: h
    rules: [{causes: [missing_output], max_retries: 2}]
jobs:
  - name: make
    command: '[ "$TORC_ATTEMPT_ID" -ge 2 ] && touch result.txt; echo other > other.txt'
    output_files: [result, other]
    failure_handler: h
  - name: use
    command: cat ${files.input.result}
"""


def test_a_job_that_exits_0_without_its_output_fails_with_cause_missing_output(daemon):
    wf = daemon.submit(MISSING)
    assert daemon.wait(wf).counts == {"completed": 2}
    first, second = daemon.attempts(daemon.jobs(wf)["make"].id)
    assert (first.return_code, first.cause, first.message) == (
        1,
        "missing_output",
        "exited 0 but did not write its output files: result.txt",
    )
    assert (second.return_code, second.cause) == (0, None)
    (daemon.tmp / "result.txt").unlink()
    wf = daemon.submit(MISSING.replace("    failure_handler: h\n", ""))
    assert daemon.wait(wf).counts == {"failed": 1, "canceled": 1}


def test_an_input_no_job_writes_must_exist_at_submission(daemon):
    spec = (
        "name: needs\nfiles:\n  - {name: raw, path: data/raw.csv}\n"
        "jobs:\n  - {name: a, command: 'cat ${files.input.raw}'}\n"
    )
    with pytest.raises(RpcError) as info:
        daemon.submit(spec)
    assert info.value.message.endswith(
        "/spec.yaml: input file 'raw' (data/raw.csv) does not exist and no job writes it (at $.files[0])"
    )
    assert daemon.call("workflows.list") == []
    (daemon.tmp / "data").mkdir()
    (daemon.tmp / "data/raw.csv").write_text("x\n")
    assert daemon.wait(daemon.submit(spec)).counts == {"completed": 1}


BASE = """\
name: files
files:
  - {name: a_out, path: a.txt}
  - {name: "part_{i}", path: "part_{i}.txt", parameters: {i: "1:3"}}
jobs:
  - {name: a, command: "echo > a.txt", output_files: [a_out]}
  - {name: b, command: "cat a.txt", input_files: [a_out]}
"""


def error_of(text: str) -> str:
    with pytest.raises(SpecError) as info:
        parse_spec(text, "wf.yaml")
    return info.value.message


@pytest.mark.parametrize(
    "change, message",
    [
        (
            ("input_files: [a_out]", "input_files: [a_outt]"),
            "wf.yaml:7: job 'b' lists input file 'a_outt', and `files` has no such file (at $.jobs[1].input_files)",
        ),
        (
            ('"cat a.txt"', '"cat ${files.input.nope}"'),
            "wf.yaml:7: job 'b' names file 'nope' in `${files.input.nope}`, and `files` has no such file "
            "(at $.jobs[1].command)",
        ),
        (
            ("input_files: [a_out]", "input_file_regexes: ['^zz']"),
            "wf.yaml:7: input_file_regexes entry '^zz' of job 'b' matches no file (at $.jobs[1].input_file_regexes[0])",
        ),
        (
            ("input_files: [a_out]", "output_files: [a_out]"),
            "wf.yaml:7: file 'a_out' is written by two jobs, 'a' and 'b'; one job must own each output "
            "(at $.jobs[1].output_files)",
        ),
        (
            (
                "output_files: [a_out]}",
                'output_files: [a_out], input_files: ["part_1"]}\n'
                '  - {name: c, command: x, input_files: [a_out], output_files: ["part_1"]}',
            ),
            "wf.yaml:6: dependency cycle: a -> c (writes 'part_1') -> a (writes 'a_out') (at $.jobs[0].depends_on)",
        ),
        (('path: "part_{i}.txt"', 'path: "part.txt"'), None),  # one path for three names is allowed
        (('{name: "part_{i}"', '{name: "part"'), "wf.yaml:4: duplicate file name 'part' (at $.files[1].name)"),
        (
            ('parameters: {i: "1:3"}', 'parameters: {i: "3:1"}'),
            "wf.yaml:4: file 'part_{i}': range '3:1' ends before it starts (at $.files[1].parameters)",
        ),
    ],
)
def test_bad_file_references_are_errors_naming_the_job_and_file(change, message):
    text = BASE.replace(*change)
    assert text != BASE
    if message is None:
        parse_spec(text, "wf.yaml")
    else:
        assert error_of(text) == message


def test_file_regexes_and_parameters_pair_producers_and_consumers():
    text = (
        BASE
        + """\
  - {name: "make_{i}", command: "touch ${files.output.part_{i}}", parameters: {i: "1:3"}}
  - {name: gather, command: "cat part_*.txt", input_file_regexes: ["^part_"]}
"""
    )
    jobs = {j.name: j for j in parse_spec(text, "wf.yaml").jobs}
    assert jobs["make_2"].command == "touch part_2.txt" and jobs["make_2"].outputs == ["part_2"]
    assert jobs["gather"].depends_on == ["make_1", "make_2", "make_3"]
    assert jobs["b"].depends_on == ["a"]


FAN_IN = """\
name: fan_in
files:
  - {name: "metrics_lr{lr:.2f}_opt{opt}", path: "out/m_{lr:.2f}_{opt}.txt", parameters: {lr: "[0.1,0.5]", opt: "['a','b']"}}
user_data:
  - {name: "score_{opt}", parameters: {opt: "['a','b']"}}
jobs:
  - name: "train_lr{lr:.2f}_opt{opt}"
    command: "mkdir -p out; sleep 0.2; echo {lr}{opt} > out/m_{lr:.2f}_{opt}.txt"
    output_files: ["metrics_lr{lr:.2f}_opt{opt}"]
    parameters: {lr: "[0.1,0.5]", opt: "['a','b']"}
  - name: "score_{opt}"
    command: "torcctl user-data set score_{opt} '\\"{opt}\\"'"
    output_user_data: ["score_{opt}"]
    parameters: {opt: "['a','b']"}
  - name: aggregate
    command: "cat out/m_*.txt | sort | tr '\\\\n' ' ' > summary.txt; torcctl user-data get score_a >> summary.txt"
    input_files: ["metrics_lr{lr:.2f}_opt{opt}"]
    input_user_data: ["score_{opt}"]
    parameters: {lr: "[0.1,0.5]", opt: "['a','b']"}
"""  # noqa: E501 a spec line as a user writes it


def test_a_job_not_multiplied_reads_every_file_and_entry_its_templated_lists_name(daemon):
    """Torc's hyperparameter sweep: `aggregate_results` lists `metrics_lr{lr:.4f}_bs{batch_size}_…`
    with the sweep's parameters but no placeholder in its name; it waits for every one."""
    spec = parse_spec(FAN_IN, "f.yaml")
    jobs = {j.name: j for j in spec.jobs}
    assert len(jobs) == 7  # four trainings, two scores, one aggregate (its name multiplies nothing)
    assert sorted(jobs["aggregate"].inputs) == [
        "metrics_lr0.10_opta",
        "metrics_lr0.10_optb",
        "metrics_lr0.50_opta",
        "metrics_lr0.50_optb",
    ]
    assert sorted(jobs["aggregate"].data_inputs) == ["score_a", "score_b"]
    wf = daemon.submit(FAN_IN)
    assert daemon.wait(wf).counts == {"completed": 7}
    assert (daemon.tmp / "summary.txt").read_text() == '0.1a 0.1b 0.5a 0.5b "a"\n'


def test_a_fan_in_list_too_large_is_refused_before_it_is_built():
    text = (
        "name: bomb\nfiles:\n  - {name: 'f{i}', path: 'f{i}', parameters: {i: '1:3'}}\njobs:\n"
        "  - {name: agg, command: 'true', input_files: ['f{i}_{j}'], parameters: {i: '1:3000', j: '1:3000'}}\n"
    )
    with pytest.raises(SpecError, match="dependencies; the limit is 4,000,000"):
        parse_spec(text, "b.yaml")
