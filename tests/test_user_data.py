"""User data: JSON values jobs hand each other through the daemon, as dependencies like files.
Read and written with `torcctl user-data` from jobs (in Slurm allocations too:
tests/test_worker_credentials.py)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from torcctl.transport import RpcError
from torcd.errors import SpecError
from torcd.spec.parse import parse_spec

PIPELINE = """\
name: handoff
user_data:
  - {name: config, data: {rows: 10}}
  - {name: result}
jobs:
  - name: consume
    command: torcctl user-data get result
    input_user_data: [result]
  - name: produce
    command: >-
      rows=$(torcctl user-data get config | python3 -c 'import json, sys; print(json.load(sys.stdin)["rows"])')
      && torcctl user-data set result "{\\"sum\\": $((rows * 2))}"
    input_user_data: [config]
    output_user_data: [result]
"""


def stdout_of(d, wf: int, job: str) -> str:
    return open(d.attempts(d.jobs(wf)[job].id)[-1].stdout_path).read()


def test_a_job_reads_what_the_job_it_depends_on_wrote(daemon):
    wf = daemon.submit(PIPELINE)
    assert daemon.wait(wf).counts == {"completed": 2}
    assert json.loads(stdout_of(daemon, wf, "consume")) == {"sum": 20}
    code, out, _ = daemon.ctl("--json", "user-data", "list", "-w", str(wf))
    listed = {e["name"]: e for e in json.loads(out)}
    assert listed["result"]["data"] == {"sum": 20} and listed["result"]["producer"] == "produce"
    assert listed["config"]["producer"] is None


def test_ephemeral_data_goes_back_to_the_spec_value_when_the_workflow_is_reset(daemon):
    spec = (
        "name: scratch\nuser_data:\n  - {name: scratch, data: 0, is_ephemeral: true}\n  - {name: kept, data: 0}\n"
        "jobs:\n  - {name: a, command: 'true'}\n"
    )
    wf = daemon.submit(spec)
    daemon.wait(wf)
    for name in ("scratch", "kept"):
        assert daemon.ctl("user-data", "set", name, "5", "-w", str(wf))[0] == 0
    daemon.ctl("workflows", "reset-status", str(wf))
    daemon.wait(wf)
    assert daemon.ctl("user-data", "get", "scratch", "-w", str(wf))[1] == "0\n"
    assert daemon.ctl("user-data", "get", "kept", "-w", str(wf))[1] == "5\n"


def test_bad_user_data_requests_are_clear_errors_that_change_nothing(daemon, tmp_path):
    wf = daemon.submit(PIPELINE)
    daemon.wait(wf)
    w = ["-w", str(wf)]
    big = tmp_path / "big.json"
    big.write_text(json.dumps("x" * (1 << 20)))
    for args, message in [
        (["get", "nope", *w], f"workflow {wf} has no user data named 'nope'"),
        (["get", "result", "-w", "999"], "no workflow 999"),
        (["set", "result", "{not json", *w], "the value is not JSON"),
        (["set", "result", *w], "give the value as JSON, or --data-file FILE"),
        (["set", "result", "--data-file", str(big), *w], "big.json holds more than 1 MiB; user data is for small"),
        (["set", "bad\x01name", "1", *w], "invalid params for user_data.set"),
        (["get", "result"], "which workflow? give --workflow-id"),
    ]:
        code, out, err = daemon.ctl("user-data", *args)
        assert code == 2 and message in err and "Traceback" not in err, (args, err)
    with pytest.raises(RpcError) as info:
        daemon.call("user_data.set", {"workflow_id": wf, "name": "result", "data": "x" * (1 << 20)})
    assert info.value.message == "user data 'result' is 1,048,578 bytes as JSON; the limit is 1,048,576"
    assert json.loads(daemon.ctl("user-data", "get", "result", *w)[1]) == {"sum": 20}


@pytest.mark.parametrize(
    "change, message",
    [
        (
            ("input_user_data: [config]", "input_user_data: [confg]"),
            "wf.yaml:13: job 'produce' lists input user data 'confg', and `user_data` has no such user data "
            "(at $.jobs[1].input_user_data)",
        ),
        (
            ("input_user_data: [result]", "output_user_data: [result]"),
            "wf.yaml:14: user data 'result' is written by two jobs, 'consume' and 'produce'; one job must own each "
            "output (at $.jobs[1].output_user_data)",
        ),
        (
            ("input_user_data: [config]", "input_user_data_regexes: ['^nothing']"),
            "wf.yaml:13: input_user_data_regexes entry '^nothing' of job 'produce' matches no user_data "
            "(at $.jobs[1].input_user_data_regexes[0])",
        ),
    ],
)
def test_bad_user_data_in_a_spec_names_the_job_and_entry(change, message):
    with pytest.raises(SpecError) as info:
        parse_spec(PIPELINE.replace(*change), "wf.yaml")
    assert info.value.message == message


def test_a_job_whose_daemon_url_or_certificate_is_wrong_gets_one_line(tmp_path):
    import os
    import subprocess
    import sys

    bad_ca = tmp_path / "ca.pem"
    bad_ca.write_text("not a certificate\n")
    for env, message in [
        (
            {"TORC_API_URL": "https://127.0.0.1:1", "TORC_CA_FILE": str(tmp_path / "missing.pem")},
            "cannot read the CA file",
        ),
        ({"TORC_API_URL": "https://127.0.0.1:1", "TORC_CA_FILE": str(bad_ca)}, "cannot read the CA file"),
        ({"TORC_API_URL": "ftp://host"}, "expected http://HOST:PORT or https://HOST:PORT"),
    ]:
        run = subprocess.run(
            [sys.executable, "-m", "torcctl", "user-data", "get", "x", "-w", "1"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
        )
        assert run.returncode == 2 and message in run.stderr and "Traceback" not in run.stderr, run.stderr


# Torc's user-data tutorial, step 1: the commands name the entry, which orders the jobs. The
# reader is listed first, so only the reference can make it wait.
TUTORIAL = """\
name: config_pipeline
user_data:
  - name: ml_config
    data: null  # populated by generate_config
jobs:
  - name: train_model
    command: |
      arr=(a b c)
      echo "Training with config: $(torcctl user-data get ${user_data.input.ml_config})"
      printf '%s|%s|%s|%s\\n' "${HOME}" "${unset_var:-a.default}" "${#arr[@]}" "${arr[1]}"
  - name: generate_config
    command: |
      sleep 0.5
      torcctl user-data set ${user_data.output.ml_config} '{"learning_rate": 0.001, "batch_size": 32}'
"""


def test_a_command_naming_user_data_waits_for_its_writer_and_reads_what_it_wrote(daemon):
    wf = daemon.submit(TUTORIAL)
    assert daemon.wait(wf).counts == {"completed": 2}
    jobs = daemon.jobs(wf)
    writer, reader = (daemon.attempts(jobs[n].id)[-1] for n in ("generate_config", "train_model"))
    assert reader.start_time >= writer.end_time
    config, shell = stdout_of(daemon, wf, "train_model").splitlines()
    assert json.loads(config.removeprefix("Training with config: ")) == {"learning_rate": 0.001, "batch_size": 32}
    assert shell == f"{os.environ['HOME']}|a.default|3|b"  # the shell's own ${...} are left to it


NAMES = [
    "ml_config",
    'it\'s $(touch pwned) "x"',
    "two words",
    "`id`;a|b",
    "-n",
    "*",
    "$HOME",
    "\\",
]  # no braces: they end a reference


@pytest.mark.parametrize("name", NAMES)
def test_a_user_data_reference_becomes_the_entry_name_as_one_word_wherever_it_stands(name, tmp_path):
    ref = "${user_data.input." + name + "}"
    command = f"printf '<%s>' {ref} \"{ref}\" '{ref}' \"${{HOME}}\""
    spec = {"name": "q", "user_data": [{"name": name}], "jobs": [{"name": "a", "command": command}]}
    job = parse_spec(json.dumps(spec), "wf.json").jobs[0]
    out = subprocess.run(["bash", "-c", job.command], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert out.stdout == f"<{name}>" * 3 + f"<{os.environ['HOME']}>"
    assert job.data_inputs == [name] and not list(tmp_path.iterdir())  # nothing ran: no `pwned`


@pytest.mark.parametrize(
    "change, message",
    [
        (
            ("${user_data.input.ml_config}", "${user_data.input.ml_confg}"),
            "wf.yaml:7: job 'train_model' names user data 'ml_confg' in `${user_data.input.ml_confg}`, and `user_data` "
            "has no such user data (at $.jobs[0].command)",
        ),
        (
            ("${user_data.output.ml_config}", "${user_data.output.nope}"),
            "wf.yaml:12: job 'generate_config' names user data 'nope' in `${user_data.output.nope}`, and `user_data` "
            "has no such user data (at $.jobs[1].command)",
        ),
        (
            ("${user_data.input.ml_config}", "${user_data.inputs.ml_config}"),
            "wf.yaml:7: unknown reference `${user_data.inputs.ml_config}` in job 'train_model': torc-py knows "
            "${files.input|output.NAME}, ${datasets.input|output.NAME} and ${user_data.input|output.NAME} (to pass "
            "`${a.b}` to a program as it is, put it in single quotes or write \\${a.b}) (at $.jobs[0].command)",
        ),
        (
            ("${HOME}", "${workflow.id}"),
            "wf.yaml:7: unknown reference `${workflow.id}` in job 'train_model': torc-py knows "
            "${files.input|output.NAME}, ${datasets.input|output.NAME} and ${user_data.input|output.NAME} (to pass "
            "`${a.b}` to a program as it is, put it in single quotes or write \\${a.b}) (at $.jobs[0].command)",
        ),
    ],
)
def test_an_unknown_user_data_name_or_reference_in_a_command_names_the_line_and_field(change, message):
    with pytest.raises(SpecError) as info:
        parse_spec(TUTORIAL.replace(*change), "wf.yaml")
    assert info.value.message == message


def test_torcs_user_data_update_and_create_spellings_set_the_value(daemon):
    wf = daemon.submit("name: u\nuser_data:\n  - {name: cfg}\njobs:\n  - {name: a, command: 'true'}\n")
    assert daemon.ctl("user-data", "update", "cfg", "--data", '{"lr": 0.1}', "-w", str(wf))[0] == 0
    code, out, _ = daemon.ctl("user-data", "get", "cfg", "-w", str(wf))
    assert code == 0 and json.loads(out) == {"lr": 0.1}
    code, out, _ = daemon.ctl("user-data", "get", "cfg", "-w", str(wf), "-f", "json")
    assert json.loads(out)["data"] == {"lr": 0.1}  # Torc's `get ... | jq .data`
    code, _, err = daemon.ctl("user-data", "create", "cfg", "1", "--data", "2", "-w", str(wf))
    assert code == 2 and "give the value once" in err
