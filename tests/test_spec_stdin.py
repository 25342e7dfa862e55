"""`-` for a spec reads it from standard input (`generate | torcctl submit -`), named `<stdin>`."""

from __future__ import annotations

SPEC = b"name: piped\njobs:\n  - {name: a, command: 'echo from-stdin > a.txt'}\n"


def test_a_spec_piped_in_is_submitted_and_runs_in_the_current_directory(daemon):
    done = daemon.ctl_process("run", "--quiet", "-", stdin=SPEC)
    assert done.returncode == 0, done.stderr
    (wf,) = [w for w in daemon.client.call("workflows.list") if w["name"] == "piped"]
    assert wf["counts"] == {"completed": 1}
    assert (daemon.tmp / "a.txt").read_text() == "from-stdin\n"
    assert daemon.ctl_process("submit", "-", stdin=SPEC.replace(b"piped", b"again")).returncode == 0


def test_a_bad_spec_piped_in_is_named_stdin_with_its_line_and_changes_nothing(daemon):
    bad = daemon.ctl_process("submit", "-", stdin=SPEC.replace(b"command", b"comand"))
    assert bad.returncode == 2
    assert b"<stdin>:3: unknown key `comand`" in bad.stderr
    assert daemon.ctl_process("validate", "-", stdin=SPEC.replace(b"command", b"comand")).returncode == 2
    binary = daemon.ctl_process("submit", "-", stdin=b"name: x\xff\n")
    assert (binary.returncode, binary.stderr.splitlines()[-1][:45]) == (
        2,
        b"torcctl: error: spec <stdin> is not UTF-8 tex",
    )
    assert daemon.ctl_process("submit", "-", stdin=b"").returncode == 2
    assert daemon.client.call("workflows.list") == []


def test_a_json_spec_piped_in_reads_with_its_format_named(daemon):
    text = b'{name: "j5", jobs: [{name: "a", command: "true"}]}'
    assert daemon.ctl_process("submit", "-", "--spec-format", "json5", stdin=text).returncode == 0


def test_submit_with_a_workflow_id_says_where_that_workflow_is(daemon):
    """Torc's `submit WF_ID` submits a workflow created earlier; here a workflow starts when created."""
    wf = daemon.submit("name: done\njobs: [{name: a, command: 'true'}]\n")
    daemon.wait(wf)
    code, out, err = daemon.ctl("submit", str(wf))
    assert code == 0 and out == f"{wf}\n"
    assert f"workflow {wf} was submitted when it was created; it is done: run it again with" in err
    code, out, err = daemon.ctl("submit", "999")
    assert code == 2 and "999" in err and "Traceback" not in err
    assert [w["id"] for w in daemon.call("workflows.list", {})] == [wf]  # nothing new was created
