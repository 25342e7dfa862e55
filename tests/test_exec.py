"""`torcctl exec`: commands over parameters without a spec (Torc's `exec`). What values and specs
it makes, as tables; then run through a real daemon from the command line."""

from __future__ import annotations

import subprocess
import sys

import pytest
from ruamel.yaml import YAML

from torcctl.commands import UsageError
from torcctl.commands.inline import exec_spec, param_values


@pytest.mark.parametrize(
    "text, values",
    [
        ("i=1:3", [1, 2, 3]),
        ("i=0:10:5", [0, 5, 10]),
        ("w=[a, b]", ["a", "b"]),
        ("w=['a, b', \"c\"]", ["a, b", "c"]),
        ("lr=[0.1, 0.01, 3.10]", ["0.1", "0.01", "3.10"]),  # as written: 3.10 is not 3.1
        ("n=7", ["7"]),
        ("n=007", ["007"]),
        ("x=0.5", ["0.5"]),
        ("s=hello world", ["hello world"]),
        ("e=", [""]),
    ],
)
def test_a_param_reads_as_torcs_exec_reads_it(text, values):
    assert list(param_values(text)[1]) == values


def test_float_ranges_are_torcs_values_without_its_rounding_drift():
    assert list(param_values("x=0.0:1.0:0.25")[1]) == [0, 0.25, 0.5, 0.75, 1]  # Torc writes 1, not 1.0
    # Torc adds the step again and again (0.30000000000000004); the decimals written are kept.
    assert list(param_values("lr=0.1:0.5:0.1")[1]) == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert list(param_values("t=-1.5:1.5")[1]) == [-1.5, -0.5, 0.5, 1.5]
    spec = exec_spec(["train --lr {lr} --tag {lr:.2f}"], {"lr": param_values("lr=0.0:0.2:0.1")[1]}, "product", "x")
    assert names_and_commands(spec) == [
        ("job_1", "train --lr 0 --tag 0.00"),
        ("job_2", "train --lr 0.1 --tag 0.10"),
        ("job_3", "train --lr 0.2 --tag 0.20"),
    ]


def test_a_param_from_a_file_takes_a_value_per_line():
    lines = {"urls.txt": ["http://a/1", "http://a/2", "007"]}
    assert param_values("url=@urls.txt", lines.__getitem__) == ("url", ["http://a/1", "http://a/2", "007"])


@pytest.mark.parametrize(
    "text, words",
    [
        ("i", "write NAME=VALUES"),
        ("2i=1:3", "write NAME=VALUES"),
        ("i-j=1", "write NAME=VALUES"),
        ("lr=0.0:1.0:0", "needs a positive step"),
        ("lr=1.0:0.5:0.1", "ends before it starts"),
        ("lr=0.0:1000.0:0.0001", "has 10,000,001 values; the limit is 2,000,000"),
        ("i=3:1", "ends before it starts"),
        ("i=[1, [2]", "cannot read list"),
    ],
)
def test_a_param_it_cannot_read_is_refused(text, words):
    with pytest.raises(UsageError) as info:
        param_values(text)
    assert words in str(info.value)


def names_and_commands(spec: dict) -> list[tuple[str, str]]:
    return [(j["name"], j["command"]) for j in spec["jobs"]]


def test_every_combination_or_zipped_a_job_each():
    params = {"i": [1, 2], "w": ["a", "b"]}
    product = exec_spec(["run {i} {w}"], params, "product", "x")
    assert names_and_commands(product) == [
        ("job_1", "run 1 a"),
        ("job_2", "run 1 b"),
        ("job_3", "run 2 a"),
        ("job_4", "run 2 b"),
    ]
    zipped = exec_spec(["run {i} {w}", "echo done"], params, "zip", "x")
    assert names_and_commands(zipped) == [("cmd1_1", "run 1 a"), ("cmd1_2", "run 2 b"), ("cmd2", "echo done")]


def test_text_is_kept_as_written_and_formatted_as_a_number_where_asked():
    spec = exec_spec(["run {v} {n:03d}"], {"v": ["3.10"], "n": ["7"]}, "product", "x")
    assert names_and_commands(spec) == [("job", "run 3.10 007")]


def test_words_are_quoted_for_the_shell_once_filled_in():
    spec = exec_spec([["cat", "{f}"]], {"f": ["it's", "a; rm -rf x"]}, "product", "x")
    assert [j["command"] for j in spec["jobs"]] == ["cat 'it'\"'\"'s'", "cat 'a; rm -rf x'"]


def test_too_many_jobs_are_refused_before_any_is_built():
    with pytest.raises(UsageError, match="4,000,000 jobs; the limit is 2,000,000"):
        exec_spec(["a {x}", "b {x}"], {"x": range(2_000_000)}, "product", "x")


def test_a_command_takes_only_the_params_it_names_and_braces_of_the_shell_stay():
    spec = exec_spec(["awk '{print}' f{i:02d}", "echo ${HOME}"], {"i": range(1, 11)}, "product", "x", num_cpus=2)
    assert spec["jobs"][0] == {"name": "cmd1_01", "command": "awk '{print}' f01", "num_cpus": 2}
    assert spec["jobs"][-1] == {"name": "cmd2", "command": "echo ${HOME}", "num_cpus": 2}


@pytest.mark.parametrize(
    "commands, params, link, words",
    [
        ([], {}, "product", "give a command"),
        (["echo {i}"], {"i": [1], "j": [2]}, "product", "--param j is used by no command"),
        (["echo {i} {j}"], {"i": [1, 2], "j": [1, 2, 3]}, "zip", "zip"),
        (["echo {i:>5000}"], {"i": [1]}, "product", "width or precision"),
    ],
)
def test_what_cannot_make_a_spec_is_refused(commands, params, link, words):
    with pytest.raises(UsageError) as info:
        exec_spec(commands, params, link, "x")
    assert words in str(info.value)


def outputs(daemon, wf: int) -> dict[str, str]:
    return {n: open(daemon.attempts(j.id)[0].stdout_path).read() for n, j in daemon.jobs(wf).items()}


def test_exec_runs_each_combination_and_exits_0_when_all_complete(daemon):
    args = ("-n", "sweep", "-c", "echo {i}-{w}", "--param", "i=1:2", "--param", "w=[x,y]")
    done = daemon.ctl_process("exec", "-q", *args)
    assert done.returncode == 0, done.stderr
    assert b"completed  4" in done.stdout
    assert outputs(daemon, 1) == {"job_1": "1-x\n", "job_2": "1-y\n", "job_3": "2-x\n", "job_4": "2-y\n"}
    assert daemon.call("workflows.show", {"workflow_id": 1})["name"] == "sweep"


def test_exec_exits_1_when_a_job_fails(daemon):
    done = daemon.ctl_process("exec", "-q", "-c", "test {i} != 2", "--param", "i=1:3")
    assert done.returncode == 1
    assert daemon.wait(1).counts == {"completed": 2, "failed": 1}


def test_exec_takes_commands_from_standard_input_and_values_from_a_file(daemon):
    (daemon.tmp / "names.txt").write_text("ada\n\nlin\n")
    commands = b"# greet each\necho hello {who}\n\necho bye {who}\n"
    done = daemon.ctl_process("exec", "-q", "-C", "-", "--param", "who=@names.txt", stdin=commands)
    assert done.returncode == 0, done.stderr
    assert outputs(daemon, 1) == {
        "cmd1_1": "hello ada\n",
        "cmd1_2": "hello lin\n",
        "cmd2_1": "bye ada\n",
        "cmd2_2": "bye lin\n",
    }


def test_exec_runs_the_words_after_the_double_dash_as_one_command(daemon):
    done = daemon.ctl_process("exec", "-q", "--", "python3", "-c", "import sys; print(sys.argv[1:])", "a b", "$HOME")
    assert done.returncode == 0, done.stderr
    assert outputs(daemon, 1) == {"job": "['a b', '$HOME']\n"}  # quoted: the shell expands nothing


def test_a_dry_run_prints_the_spec_and_needs_no_daemon(tmp_path):
    done = subprocess.run(
        [
            *(sys.executable, "-m", "torcctl", "--socket", str(tmp_path / "none.sock"), "--no-autostart"),
            *("exec", "--dry-run", "-n", "dry", "-c", "solve {n:03d}", "--param", "n=1:2", "-o", "out"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert YAML(typ="safe").load(done.stdout) == {
        "name": "dry",
        "output_dir": "out",
        "jobs": [{"name": "job_1", "command": "solve 001"}, {"name": "job_2", "command": "solve 002"}],
    }
    assert not (tmp_path / "none.sock").exists()


@pytest.mark.parametrize(
    "args, words",
    [
        (["-c", "echo {i}", "--param", "i=1:3", "--param", "j=1"], "--param j is used by no command"),
        (["-c", "echo", "--", "ls"], "not both"),
        (["--param", "i=1:3"], "give a command"),
        (["-c", "true", "--num-cpus", "0"], "num_cpus"),
        (["-c", "echo {x}", "--param", "x=@missing.txt"], "missing.txt"),
        (["-C", "nowhere.txt"], "nowhere.txt"),
        (["-c", "true", "--link", "cross"], "invalid choice"),
        (["-c", "echo {x}", "--param", "x=1:2", "--param", "x=7"], "--param x is given twice"),
        (["-c", "echo {n:03d}", "--param", "n=abc"], "cannot format n='abc'"),
    ],
)
def test_bad_exec_arguments_get_one_clear_line_and_create_nothing(daemon, args, words):
    done = daemon.ctl_process("exec", *args)
    assert done.returncode == 2 and words in done.stderr.decode(), done.stderr
    assert b"Traceback" not in done.stderr
    assert daemon.call("workflows.list", {}) == []
