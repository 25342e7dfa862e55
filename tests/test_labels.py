"""Job labels (Torc's `label` and `run --label`): a labelled job runs only while a `torcctl run
WF --label L` of its label follows the workflow; the daemon's own runs take unlabelled jobs."""

from __future__ import annotations

import subprocess
import sys
import urllib.parse

import pytest

from torcd.errors import SpecError
from torcd.spec.parse import parse_spec

LABELLED = """\
name: labelled
jobs:
  - name: simulate_{i}
    command: echo case {i}
    parameters: {i: "1:3"}
  - name: postprocess
    command: echo post
    label: windows
    depends_on_regexes: ["^simulate_"]
  - name: render_{os}
    command: echo render {os}
    parameters: {os: "[gpu]"}
    label: "{os}"
"""


def test_a_label_takes_the_jobs_parameters():
    jobs = {j.name: j.label for j in parse_spec(LABELLED, "wf.yaml").jobs}
    assert jobs == {
        "simulate_1": None,
        "simulate_2": None,
        "simulate_3": None,
        "postprocess": "windows",
        "render_gpu": "gpu",
    }


@pytest.mark.parametrize(
    "change, words",
    [
        (("label: windows", "label: ''"), "length >= 1"),
        (("label: windows", "label: ' windows'"), "spaces at its ends"),
        (('label: "{os}"', "label: '{os} '"), "spaces at its ends"),
        (("label: windows", "label: " + "x" * 300), "length <= 256"),
    ],
)
def test_a_bad_label_is_refused_with_its_line(change, words):
    with pytest.raises(SpecError) as info:
        parse_spec(LABELLED.replace(*change), "wf.yaml")
    e = info.value
    assert e.file == "wf.yaml" and e.line in (8, 13) and e.field and e.field.endswith(".label"), e.message
    assert words in e.message


def ctl_process(daemon, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "torcctl", "--socket", daemon.socket, "--no-autostart", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=daemon.tmp,
    )


def after_a_dispatch_pass(daemon) -> None:
    """Once a job of a workflow submitted later has run, every job the daemon could claim before it
    was claimed (the claim order is by workflow, then job)."""
    wf = daemon.submit("name: later\njobs: [{name: x, command: 'true'}]\n", name="later.yaml")
    assert daemon.wait(wf).counts == {"completed": 1}


def test_labelled_jobs_wait_for_a_run_of_their_label_and_then_run(daemon):
    wf = daemon.submit(LABELLED)
    daemon.wait_for(lambda: daemon.jobs(wf)["simulate_3"].status == "completed", what="the simulations")
    after_a_dispatch_pass(daemon)
    jobs = daemon.jobs(wf)
    assert (jobs["postprocess"].status, jobs["render_gpu"].status) == ("ready", "ready")

    gpu = ctl_process(daemon, "run", str(wf), "--label", "gpu", "-q")
    code, out, err = daemon.ctl("run", str(wf), "--label", "windows", "-q")
    assert gpu.wait(timeout=60) == 0
    assert code == 0 and "completed  5" in out, out + err
    assert "1 jobs of workflow 1 have other labels" in err
    assert daemon.wait(wf).counts == {"completed": 5}


def first_line_of_stderr(daemon, *args: str) -> str:
    """What a run that would wait for ever says first (it is then stopped)."""
    run = ctl_process(daemon, *args)
    try:
        return run.stderr.readline()
    finally:
        run.kill()
        run.wait()


def test_a_run_says_which_jobs_wait_for_another_label(daemon):
    wf = daemon.submit(LABELLED)
    assert first_line_of_stderr(daemon, "run", str(wf), "-q") == (
        f"torcctl: 2 jobs of workflow {wf} have a label: "
        f"they run only while `torcctl run {wf} --label LABEL` follows it\n"
    )
    assert first_line_of_stderr(daemon, "run", str(wf), "--label", "nosuch", "-q") == (
        f"torcctl: no job of workflow {wf} has the label 'nosuch'\n"
    )


def test_a_label_stops_being_served_when_its_run_ends(daemon):
    flag = daemon.tmp / "go"
    wf = daemon.submit(
        f"""\
        name: gated
        jobs:
          - {{name: early, command: 'true', label: gpu}}
          - {{name: gate, command: 'while [ ! -e {flag} ]; do sleep 0.05; done'}}
          - {{name: late, command: 'true', label: gpu, depends_on: [gate]}}
        """
    )
    run = ctl_process(daemon, "run", str(wf), "--label", "gpu", "-q")
    daemon.wait_for(lambda: daemon.jobs(wf)["early"].status == "completed", what="early")
    assert daemon.call("ping")["labels_served"] == [[wf, "gpu"]]
    run.kill()  # however a run ends, the label it served goes with it
    run.wait()
    daemon.wait_for(lambda: daemon.call("ping")["labels_served"] == [], what="the label no longer served")
    flag.touch()
    daemon.wait_for(lambda: daemon.jobs(wf)["gate"].status == "completed", what="gate")
    after_a_dispatch_pass(daemon)
    assert daemon.jobs(wf)["late"].status == "ready"


@pytest.mark.parametrize(
    "query, words",
    [
        ("workflow_id=1&serve_label=", "1 to 256 characters"),
        ("workflow_id=1&serve_label=" + urllib.parse.quote(" windows"), "spaces at its ends"),
        ("workflow_id=1&serve_label=" + urllib.parse.quote("a\nb"), "control character"),
        ("all=1&serve_label=windows", "all=1"),
    ],
)
def test_a_bad_label_to_serve_is_refused(daemon, query, words):
    from torcctl.transport import _UnixConnection

    daemon.submit(LABELLED)
    c = _UnixConnection(daemon.socket, 10)
    try:
        c.request("GET", f"/events?{query}")
        resp = c.getresponse()
        assert resp.status == 400 and words in resp.read().decode()
    finally:
        c.close()


def test_a_bad_label_is_refused_before_anything_is_submitted(daemon):
    (daemon.tmp / "lab.yaml").write_text(LABELLED)
    for bad in (" bad", "", "a\tb"):
        code, _, err = daemon.ctl("run", "lab.yaml", "--label", bad)
        assert code == 2 and err.startswith("torcctl: error: --label: "), err
    assert daemon.call("workflows.list", {}) == []


def test_a_label_is_claimed_only_to_start_now_never_ahead(make_daemon):
    """The daemon claims jobs a little ahead of free slots; a labelled job claimed ahead would
    start after its `run --label` had gone."""
    d = make_daemon(max_parallel_jobs=1).start()
    wf = d.submit(
        "name: ahead\njobs:\n" + "".join(f"  - {{name: s{i}, command: 'sleep 1.5', label: L}}\n" for i in range(1, 4))
    )
    run = ctl_process(d, "run", str(wf), "--label", "L", "-q")
    d.wait_for(lambda: d.jobs(wf)["s1"].status == "running", what="s1 running")
    assert {n: j.status for n, j in d.jobs(wf).items()} == {"s1": "running", "s2": "ready", "s3": "ready"}
    run.kill()
    run.wait()
    d.wait_for(lambda: d.call("ping")["labels_served"] == [], what="the label no longer served")
    d.wait_for(lambda: d.jobs(wf)["s1"].status == "completed", what="s1 done")
    after_a_dispatch_pass(d)
    assert {n: j.status for n, j in d.jobs(wf).items()} == {"s1": "completed", "s2": "ready", "s3": "ready"}


def test_a_workflow_id_is_ascii_digits(daemon):
    code, _, err = daemon.ctl("run", "²")
    assert code == 2 and "Traceback" not in err
    code, _, err = daemon.ctl("submit", "\u0661")  # ARABIC-INDIC DIGIT ONE
    assert code == 2 and "Traceback" not in err
