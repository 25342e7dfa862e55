"""`WorkflowSpec` builds what a YAML spec says: the same parsed workflow, for every example, through
YAML and JSON; bad input is refused at the call or by validate(), naming what is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from torcctl.spec_builder import WorkflowSpec
from torcd.errors import SpecError
from torcd.spec.parse import parse_spec

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(p for p in (ROOT / "examples").iterdir() if p.suffix in (".yaml", ".yml", ".json", ".json5", ".kdl"))
DATA_SPECS = sorted(p for p in (ROOT / "tests" / "data").rglob("*") if p.suffix in (".yaml", ".json5", ".kdl"))


def parsed(path: Path):
    return parse_spec(path.read_text(), str(path))


def same_workflow(a, b) -> None:
    assert msgspec.structs.asdict(a) == msgspec.structs.asdict(b)
    assert a == b


def valid(path: Path) -> bool:
    try:
        parsed(path)
    except SpecError:
        return False
    return True


def test_the_diamond_built_in_code_is_the_example():
    step = "bash examples/scripts/diamond_step.sh"
    spec = (
        WorkflowSpec("diamond", description="Four jobs in a diamond; the workers run side by side.")
        .job("preprocess", f"{step} preprocess")
        .job("work_a", f"{step} work_a", depends_on="preprocess")
        .job("work_b", f"{step} work_b", depends_on=["preprocess"])
        .job("postprocess", f"{step} postprocess", depends_on=("work_a", "work_b"))
    )
    same_workflow(parse_spec(spec.to_yaml()), parsed(ROOT / "examples/diamond.yaml"))
    same_workflow(spec.validate(), parsed(ROOT / "examples/diamond.yaml"))


def test_the_sweep_built_in_code_is_the_example():
    sweep = {"n": "10:30:10", "method": "['jacobi', 'gauss_seidel']"}
    spec = (
        WorkflowSpec("sweep", description="Parameterized jobs with a fan-in aggregate.")
        .job("solve_n{n:03d}_{method}", "bash examples/scripts/sweep_solve.sh {n} {method}", parameters=sweep)
        .job(
            "aggregate",
            "cat $TORC_OUTPUT_DIR/sweep_wf$TORC_WORKFLOW_ID/*.txt | sort",
            parameters=sweep,
            depends_on="solve_n{n:03d}_{method}",
        )
    )
    same_workflow(spec.validate(), parsed(ROOT / "examples/sweep.yaml"))


def test_the_failure_handler_demo_built_in_code_is_the_example():
    script = "bash examples/scripts/recovery_demo.sh"
    spec = WorkflowSpec("failure_handler_demo", description="Exit-code rules, recovery scripts and retries.")
    spec.failure_handler(
        "demo_recovery",
        [
            {"exit_codes": [10], "recovery_script": script, "max_retries": 3},
            {"exit_codes": [11], "recovery_script": script, "max_retries": 2},
            {"exit_codes": [12], "max_retries": 3},
        ],
    )
    demo = "bash examples/scripts/failure_demo_job.sh --fail-rate 60 --work-time 0.1 --seed ${TORC_DEMO_SEED:-7}"
    spec.job("flaky_{i}", demo, failure_handler="demo_recovery", parameters={"i": "1:4"})
    fail_until = "bash examples/scripts/fail_until.sh"
    spec.job("fails_with_10_twice", f'{fail_until} 10 3 "out of memory"', failure_handler="demo_recovery")
    spec.job(
        "fails_with_12_once",
        f'{fail_until} 12 2 "transient network error"',
        failure_handler="demo_recovery",
    )
    spec.job("depends_on_flaky", 'echo "flaky_1 finished; continuing"', depends_on="flaky_1")
    spec.job(
        "summary",
        'echo "all flaky jobs done"; cat $TORC_OUTPUT_DIR/recovery.log 2>/dev/null | wc -l',
        depends_on=["depends_on_flaky", "flaky_2", "flaky_3", "flaky_4", "fails_with_10_twice", "fails_with_12_once"],
    )
    same_workflow(spec.validate(), parsed(ROOT / "examples/failure_handler_demo.yaml"))


def test_examples_are_all_found():
    assert {p.suffix for p in EXAMPLES} >= {".yaml", ".json5", ".kdl"}
    assert len(EXAMPLES) >= 13


@pytest.mark.parametrize("path", [*EXAMPLES, *filter(valid, DATA_SPECS)], ids=lambda p: p.name)
def test_every_valid_spec_round_trips_through_yaml_and_json(path: Path):
    original = parsed(path)
    spec = WorkflowSpec.from_file(path)
    same_workflow(parse_spec(spec.to_yaml()), original)
    same_workflow(parse_spec(spec.to_json(), "spec.json"), original)
    same_workflow(parse_spec(spec.to_json(), "spec.json5"), original)
    same_workflow(WorkflowSpec.from_dict(spec.to_dict()).validate(), original)
    same_workflow(WorkflowSpec.from_text(spec.to_yaml()).validate(), original)


def error_of(text: str, file: str) -> tuple[str | None, str]:
    with pytest.raises(SpecError) as e:
        parse_spec(text, file)
    return e.value.field, e.value.message.partition(": ")[2]


@pytest.mark.parametrize("path", [p for p in DATA_SPECS if not valid(p)], ids=lambda p: p.name)
def test_an_invalid_spec_keeps_its_error_through_the_builder(path: Path):
    try:
        spec = WorkflowSpec.from_file(path)
    except SpecError as e:  # it does not read: the error names the file and the line
        assert e.file == str(path) and e.line is not None
        return
    assert error_of(spec.to_yaml(), "x.yaml") == error_of(path.read_text(), str(path))


def test_inline_resources_make_the_same_workflow_as_a_named_entry():
    inline = {"num_cpus": 2, "memory": "1g", "runtime": "PT10M", "num_gpus": 0}
    built = WorkflowSpec("r").job("a", "true", resources=inline).job("b", "true", resources=dict(inline))
    named = WorkflowSpec("r").resource_requirements("medium", **inline)
    named.job("a", "true", resources="medium").job("b", "true", resource_requirements="medium")
    # The same but for the requirement's name, which spawned jobs would name (`spawning`).
    a, b = built.validate(), named.validate()
    same_workflow(msgspec.structs.replace(a, spawning=b.spawning), b)
    assert [r["name"] for r in a.spawning.resource_requirements] == ["a"]
    # the second job reuses the first one's identical entry
    assert built.to_dict()["resource_requirements"] == [{"name": "a", **inline}]
    assert [j["resource_requirements"] for j in built.to_dict()["jobs"]] == ["a", "a"]


def test_inline_resources_that_differ_get_entries_of_their_own():
    spec = WorkflowSpec("r").resource_requirements("a", num_cpus=8)
    spec.job("a", "true", resources={"num_cpus": 2}).job("b", "true", resources={"num_cpus": 2.0})
    spec.job("c", "true", resources={"num_cpus": 8})
    assert [(r["name"], r["num_cpus"]) for r in spec.to_dict()["resource_requirements"]] == [
        ("a", 8),
        ("a_2", 2),
        ("b", 2.0),  # 2.0 is not 2: the parser refuses it, so it is not merged with a valid entry
    ]
    assert [j["resource_requirements"] for j in spec.to_dict()["jobs"]] == ["a_2", "b", "a"]
    with pytest.raises(SpecError, match=r"resource_requirements\[2\]\.num_cpus"):
        spec.validate()


BAD_CALLS = [
    (lambda: WorkflowSpec(""), ValueError, "the workflow's name is empty"),
    (lambda: WorkflowSpec(3), TypeError, "the workflow's name must be a str, not int"),  # type: ignore[arg-type]
    (lambda: WorkflowSpec("w").job("", "true"), ValueError, "a job's name is empty"),
    (lambda: WorkflowSpec("w").job(None, "true"), TypeError, "a job's name must be a str"),
    (lambda: WorkflowSpec("w").job("a", ""), ValueError, "the command of job 'a' is empty"),
    (lambda: WorkflowSpec("w").job("a", ["echo"]), TypeError, "the command of job 'a' must be a str, not list"),
    (lambda: WorkflowSpec("w").job("a", "x").job("a", "y"), ValueError, "job 'a' is already defined"),
    (lambda: WorkflowSpec("w").job("a", "x", depends_on=5), TypeError, "`depends_on` of job 'a' must be a name"),
    (lambda: WorkflowSpec("w").job("a", "x", depends_on=["b", 5]), TypeError, r"depends_on` of job 'a'\[1\]"),
    (lambda: WorkflowSpec("w").job("a", "x", depends_on=[""]), ValueError, "is empty"),
    (lambda: WorkflowSpec("w").job("a", "x", resources=4), TypeError, "must be a name or a mapping, not int"),
    (lambda: WorkflowSpec("w").job("a", "x", resources={"name": "m"}), ValueError, "take no `name`"),
    (
        lambda: WorkflowSpec("w").job("a", "x", resources="m", resource_requirements="m"),
        TypeError,
        "give `resources` or `resource_requirements`, not both",
    ),
    (lambda: WorkflowSpec("w").job("a", "x", parameters=["i"]), TypeError, "`parameters` of job 'a' must be a"),
    (lambda: WorkflowSpec("w").job("a", "x", failure_handler=1), TypeError, "failure handler of job 'a' must be"),
    (lambda: WorkflowSpec("w").failure_handler("h", []), ValueError, "failure handler 'h' needs at least one rule"),
    (lambda: WorkflowSpec("w").failure_handler("h", {"max_retries": 1}), TypeError, "must be a list of mappings"),
    (lambda: WorkflowSpec("w").failure_handler("h", ["retry"]), TypeError, "rule 0 of failure handler 'h'"),
    (
        lambda: WorkflowSpec("w").failure_handler("h", [{}]).failure_handler("h", [{}]),
        ValueError,
        "failure handler 'h' is already defined",
    ),
    (
        lambda: WorkflowSpec("w").resource_requirements("m").resource_requirements("m"),
        ValueError,
        "resource requirement 'm' is already defined",
    ),
    (lambda: WorkflowSpec("w").file("f", ""), ValueError, "the path of file 'f' is empty"),
    (lambda: WorkflowSpec("w").file("f", "a").file("f", "b"), ValueError, "file 'f' is already defined"),
    (lambda: WorkflowSpec("w").slurm_scheduler("s").slurm_scheduler("s"), ValueError, "Slurm scheduler 's' is"),
    (lambda: WorkflowSpec("w").user_data("").user_data("d"), ValueError, "a user data entry's name is empty"),
    (lambda: WorkflowSpec("w", jobs={}).job("a", "x"), TypeError, "the spec's `jobs` is dict, not a list"),
    (lambda: WorkflowSpec.from_dict(["name"]), TypeError, "a spec is a mapping, not list"),
    (lambda: WorkflowSpec("w").job("a", "x").write("w.kdl"), ValueError, "cannot write KDL"),
]


@pytest.mark.parametrize(("call", "error", "words"), BAD_CALLS)
def test_bad_input_is_refused_at_the_call_naming_what_is_wrong(call, error, words):
    with pytest.raises(error, match=words):
        call()


def test_a_refused_job_adds_nothing():
    spec = WorkflowSpec("w").job("a", "x")
    before = spec.to_dict()
    with pytest.raises(TypeError):
        spec.job("b", "x", resources={"num_cpus": 2}, depends_on=7)
    assert spec.to_dict() == before


def test_templated_names_may_repeat_with_other_parameters():
    spec = WorkflowSpec("w").job("a_{i}", "echo {i}", parameters={"i": "1:2"})
    spec.job("a_{i}", "echo {i}", parameters={"i": "3:4"})
    assert [j.name for j in spec.validate().jobs] == ["a_1", "a_2", "a_3", "a_4"]
    spec.job("b_{i}", "echo {i}", parameters={"i": "2:3"}).job("b_{i}", "echo {i}", parameters={"i": "3:4"})
    with pytest.raises(SpecError, match="duplicate job name 'b_3'"):
        spec.validate()


def test_unknown_keys_pass_through_and_validate_names_their_field():
    spec = WorkflowSpec("w", colour="red").job("a", "true", colour="blue")
    assert spec.to_dict()["jobs"][0]["colour"] == "blue"
    with pytest.raises(SpecError) as e:
        WorkflowSpec("w").job("a", "true", colour="blue").validate()
    assert e.value.field == "$.jobs[0].colour"
    assert e.value.file == "<w>" and "unknown key `colour`" in str(e.value)


def test_errors_reports_several_at_once():
    spec = WorkflowSpec("w", colour="red")
    spec.job("a", "true", failure_handler="nope").job("b", "true", depends_on="zz").job("c", "true", num_cpus=0)
    fields = [e.field for e in spec.errors()]
    assert len(fields) >= 3
    assert {"$.colour", "$.jobs[0].failure_handler", "$.jobs[2].num_cpus"} <= set(fields)
    assert WorkflowSpec("w").job("a", "true").errors() == []


def test_from_file_names_the_file_and_the_line(tmp_path: Path):
    missing = tmp_path / "missing.yaml"
    with pytest.raises(SpecError, match=r"missing\.yaml: cannot read the spec: No such file") as e:
        WorkflowSpec.from_file(missing)
    assert e.value.file == str(missing)
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\njobs:\n  - name: a\n    command: 'unclosed\n")
    with pytest.raises(SpecError, match=r"broken.yaml:\d+: cannot parse") as e:
        WorkflowSpec.from_file(broken)
    assert e.value.line is not None
    bad_json5 = tmp_path / "broken.json5"
    bad_json5.write_text("{\n  name: 'x',\n  jobs: [,\n}\n")
    with pytest.raises(SpecError, match=r"broken.json5:3: cannot parse JSON5"):
        WorkflowSpec.from_file(bad_json5)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"name: x\n# caf\xe9\n")
    with pytest.raises(SpecError, match=r"latin.yaml:2: the spec is not UTF-8 text"):
        WorkflowSpec.from_file(latin)
    with pytest.raises(SpecError, match=r"<text>:1: the spec must be a mapping"):
        WorkflowSpec.from_text("[1, 2]", "<text>")


def test_spec_format_overrides_the_extension(tmp_path: Path):
    path = tmp_path / "sweep100.txt"
    path.write_text((ROOT / "examples/sweep100.kdl").read_text())
    same_workflow(WorkflowSpec.from_file(path, "kdl").validate(), parsed(ROOT / "examples/sweep100.yaml"))


def test_values_are_copied_in_and_out():
    env = {"A": "1"}
    rules = [{"exit_codes": [3], "max_retries": 2}]
    resources = {"num_cpus": 2}
    metadata = {"team": ["a"]}
    spec = WorkflowSpec("w", metadata=metadata).failure_handler("h", rules)
    spec.job("a", "true", env=env, resources=resources, failure_handler="h", parameters={"i": [1, 2]})
    before = spec.to_dict()
    env["B"] = "2"
    rules[0]["exit_codes"].append(4)
    resources["num_cpus"] = 3
    metadata["team"].append("b")
    assert spec.to_dict() == before
    out = spec.to_dict()
    out["jobs"][0]["env"]["C"] = "3"
    out["failure_handlers"][0]["rules"].clear()
    out["metadata"]["team"].clear()
    assert spec.to_dict() == before
    tree = {"name": "w", "jobs": [{"name": "a", "command": "true"}]}
    from_tree = WorkflowSpec.from_dict(tree)
    tree["jobs"][0]["command"] = "false"
    assert from_tree.to_dict()["jobs"][0]["command"] == "true"


def test_keys_come_in_the_docs_order():
    spec = WorkflowSpec("w", jobs_sort_method="none", description="d", output_dir="out")
    spec.job("a", "true", env={"Z": "1", "A": "2"}, num_cpus=2, depends_on=[], parameters={"z": 1, "a": 2})
    spec.failure_handler("h", [{"max_retries": 2, "exit_codes": [1]}])
    tree = spec.to_dict()
    assert list(tree) == ["name", "description", "output_dir", "jobs_sort_method", "failure_handlers", "jobs"]
    assert list(tree["jobs"][0]) == ["name", "command", "parameters", "depends_on", "num_cpus", "env"]
    assert list(tree["jobs"][0]["env"]) == ["Z", "A"]  # values keep their own order
    assert list(tree["jobs"][0]["parameters"]) == ["z", "a"]  # which decides the order of the jobs
    assert list(tree["failure_handlers"][0]["rules"][0]) == ["exit_codes", "max_retries"]


def test_yaml_is_block_style_and_readable():
    spec = WorkflowSpec("w").job("a_{i}", "echo one\necho two\n", parameters={"i": "1:4"}, env={"X": None})
    text = spec.to_yaml()
    assert "  - name: a_{i}\n    command: |\n      echo one\n      echo two\n" in text
    assert "i: '1:4'" in text  # YAML 1.1 readers would take 1:4 for a number
    assert "X: null" in text
    assert "{" not in text.replace("{i}", "")


def test_write_and_read_back(tmp_path: Path):
    spec = WorkflowSpec("w", use_pending_failed=True).job("a", "echo é\u2028x", env={"K": "v\tw"})
    for name in ("w.yaml", "w.json", "w.json5", "w.spec"):
        spec.write(tmp_path / name)
        again = WorkflowSpec.from_file(tmp_path / name)
        assert again.to_dict() == spec.to_dict()
        same_workflow(again.validate(), spec.validate())
    assert json.loads((tmp_path / "w.json").read_text())["jobs"][0]["command"] == "echo é\u2028x"


def test_user_data_files_slurm_and_actions():
    spec = (
        WorkflowSpec("w")
        .file("inp", ROOT / "examples/data/numbers.txt")
        .file("out", "out.txt")
        .user_data("config", {"rows": 10})
        .user_data("result", is_ephemeral=True)
        .slurm_scheduler("short", account="acct", walltime="00:10:00")
        .job("a", "cat ${files.input.inp} > ${files.output.out}", output_user_data=["result"], scheduler="short")
        .action(trigger_type="on_workflow_complete", action_type="run_commands", commands=["echo done"])
    )
    tree = spec.to_dict()
    assert tree["files"][0] == {"name": "inp", "path": str(ROOT / "examples/data/numbers.txt")}
    assert tree["user_data"] == [{"name": "config", "data": {"rows": 10}}, {"name": "result", "is_ephemeral": True}]
    workflow = spec.validate()
    assert workflow.schedulers[0].walltime == "00:10:00"
    assert workflow.jobs[0].outputs == ["out"] and workflow.jobs[0].data_outputs == ["result"]
    assert len(workflow.actions) == 1


def test_datasets_and_stdio_build_like_any_other_key():
    spec = (
        WorkflowSpec("w")
        .dataset("parts", "out/parts", hash_mode="content")
        .job("shard_{i}", "touch ${datasets.output.parts}/{i}", parameters={"i": "1:2"}, stdio={"mode": "none"})
        .job("merge", "cat out/parts/*", input_datasets=["parts"])
    )
    assert spec.to_dict()["datasets"] == [{"name": "parts", "path": "out/parts", "hash_mode": "content"}]
    jobs = {j.name: j for j in spec.validate().jobs}
    assert sorted(jobs["merge"].depends_on) == ["shard_1", "shard_2"] and jobs["shard_1"].stdio == "none"
    with pytest.raises(ValueError, match="dataset 'parts' is already defined"):
        spec.dataset("parts", "elsewhere")


# What a command or an env value may hold: any text but the control characters the parser refuses,
# with what YAML makes much of (indicators, quotes, and what it reads as line breaks) often.
_TEXT = st.text(
    st.one_of(
        st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\x00").filter(
            lambda c: c in "\t\n" or not (c < " " or "\x7f" <= c <= "\x9f")
        ),
        st.sampled_from(list(" \t\n#:-'\"|>{}[],&*!%@`?\u2028\u2029\u00a0\ufeff")),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(command=_TEXT, value=_TEXT, description=_TEXT)
@example(command="0\u2028*0\n'", value="\n\u2028", description="a\u2029\n b")  # raw in a `|` block: broken
def test_any_text_reads_back_as_written(command: str, value: str, description: str):
    spec = WorkflowSpec("w", description=description).job("a", command, env={"V": value})
    for text, file in ((spec.to_yaml(), "w.yaml"), (spec.to_json(), "w.json"), (spec.to_json(), "w.json5")):
        job = parse_spec(text, file).jobs[0]
        assert (job.command, job.env["V"]) == (command, value)
        assert parse_spec(text, file).description == description
