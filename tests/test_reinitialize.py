"""`workflows reinitialize`: only what changed since it ran runs again (and what depends on it).
The decision as a table, then the file diamond and user data through a real daemon."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from conftest import REPO

from torcd.core.changes import FileFacts, JobFacts, MissingInput, plan_rerun
from torcd.core.status import JobStatus

S = JobStatus
T = 100.0  # when each job below started


def facts(status=S.COMPLETED, inputs=(), outputs=(), data=(), started=T, id_=1, name="a"):
    return JobFacts(id_, name, status, started, inputs, outputs, data)


def files(**mtimes):
    return {
        name: FileFacts(name, m if m != "produced-gone" else None, m == "produced-gone") for name, m in mtimes.items()
    }


@pytest.mark.parametrize(
    "job, file_mtimes, data, expected",
    [
        (facts(inputs=["in"]), {"in": T - 1}, {}, None),
        (facts(inputs=["in"]), {"in": T + 1}, {}, "input file 'in' changed after it ran"),
        (facts(outputs=["out"]), {"out": "produced-gone"}, {}, "its output file 'out' is gone"),
        (facts(outputs=["out"]), {"out": T + 5}, {}, None),  # its own output is newer than its start
        (facts(data=["d"]), {}, {"d": T - 1}, None),
        (facts(data=["d"]), {}, {"d": T + 1}, "input user data 'd' changed after it ran"),
        (facts(status=S.FAILED), {}, {}, "it ended failed"),
        (facts(status=S.CANCELED), {}, {}, "it ended canceled"),
        (facts(status=S.PENDING_FAILED), {}, {}, "it ended pending_failed"),
        (facts(status=S.TERMINATED), {}, {}, "it ended terminated"),
        (facts(status=S.BLOCKED, inputs=["in"]), {"in": T + 1}, {}, None),  # it runs anyway
        (facts(started=None, inputs=["in"]), {"in": T}, {}, "input file 'in' changed after it ran"),
    ],
)
def test_a_job_runs_again_only_for_a_change_after_it_started(job, file_mtimes, data, expected):
    plan = plan_rerun([job], files(**file_mtimes), data, {})
    assert plan.get(job.id) == expected


def test_what_depends_on_a_job_that_runs_again_runs_again_and_nothing_else():
    jobs = [
        facts(id_=1, name="prep", outputs=["p"]),
        facts(id_=2, name="left", inputs=["p"], outputs=["l"]),
        facts(id_=3, name="right", inputs=["p"], outputs=["r"]),
        facts(id_=4, name="join", inputs=["l", "r"]),
    ]
    touched_left = files(p=T - 10, l=T + 1, r=T - 5)
    assert plan_rerun(jobs, touched_left, {}, {1: [2, 3], 2: [4], 3: [4]}) == {4: "input file 'l' changed after it ran"}
    gone_prep = files(p="produced-gone", l=T - 1, r=T - 1)
    assert plan_rerun(jobs, gone_prep, {}, {1: [2, 3], 2: [4], 3: [4]}) == {
        1: "its output file 'p' is gone",
        2: "input file 'p' is gone",
        3: "input file 'p' is gone",
        4: "upstream job 'left' runs again",
    }


def test_an_input_no_job_makes_that_is_gone_is_an_error():
    with pytest.raises(MissingInput) as info:
        plan_rerun([facts(inputs=["raw"])], {"raw": FileFacts("raw", None, False)}, {}, {})
    assert info.value.name == "raw"


@pytest.fixture
def diamond(daemon, tmp_path: Path):
    """The file diamond, run once to the end; returns its workflow id and directory."""
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    wf = daemon.submit((tmp_path / "examples" / "file_diamond.yaml").read_text(), cwd=tmp_path)
    assert daemon.wait(wf).counts == {"completed": 4}
    return wf, tmp_path


def reinit(daemon, wf: int, *flags: str) -> tuple[int, str, str]:
    return daemon.ctl("workflows", "reinitialize", str(wf), *flags)


def started(daemon, wf: int) -> dict[str, int]:
    """Each job's number of attempts started, over all runs."""
    return {
        name: sum(1 for e in daemon.events(wf) if e.kind == "job_started" and e.job_name == name)
        for name in daemon.jobs(wf)
    }


def touch_later(path: Path) -> None:
    """Modified after every job ran (a coarse file system may round times down)."""
    later = time.time() + 2
    os.utime(path, (later, later))


def test_nothing_changed_runs_nothing(daemon, diamond):
    wf, _ = diamond
    code, out, err = reinit(daemon, wf)
    assert code == 0 and "0 jobs run again (nothing changed)" in out, out + err
    assert daemon.call("workflows.show", {"workflow_id": wf})["run_id"] == 1


def test_a_changed_intermediate_file_reruns_only_its_consumers(daemon, diamond):
    wf, root = diamond
    touch_later(root / "output" / "file_diamond" / "half_1.txt")
    before = {n: j.status for n, j in daemon.jobs(wf).items()}
    code, out, _ = reinit(daemon, wf, "--dry-run")
    assert code == 0 and "1 jobs would run again:" in out and "postprocess: input file 'half_1' changed" in out
    assert {n: j.status for n, j in daemon.jobs(wf).items()} == before  # a dry run changes nothing
    code, out, _ = reinit(daemon, wf)
    assert code == 0 and "1 jobs run again" in out
    assert daemon.wait(wf).counts == {"completed": 4}
    assert started(daemon, wf) == {"preprocess": 1, "work_1": 1, "work_2": 1, "postprocess": 2}


def test_a_changed_input_reruns_everything_downstream_and_the_result_follows(daemon, diamond):
    wf, root = diamond
    (root / "examples" / "data" / "numbers.txt").write_text("1\n2\n3\n")
    touch_later(root / "examples" / "data" / "numbers.txt")
    code, out, _ = reinit(daemon, wf, "-f", "json")
    assert code == 0
    assert daemon.wait(wf).counts == {"completed": 4}
    assert started(daemon, wf) == {"preprocess": 2, "work_1": 2, "work_2": 2, "postprocess": 2}
    assert (root / "output" / "file_diamond" / "summary.txt").read_text() == "total 6\n"


def test_a_deleted_output_is_made_again(daemon, diamond):
    wf, root = diamond
    (root / "output" / "file_diamond" / "summary.txt").unlink()
    code, out, _ = reinit(daemon, wf)
    assert code == 0 and "postprocess: its output file 'summary' is gone" in out
    assert daemon.wait(wf).counts == {"completed": 4}
    assert (root / "output" / "file_diamond" / "summary.txt").read_text() == "total 55\n"


def test_a_gone_input_no_job_makes_is_refused_and_changes_nothing(daemon, diamond):
    wf, root = diamond
    (root / "examples" / "data" / "numbers.txt").unlink()
    code, out, err = reinit(daemon, wf)
    assert code != 0 and "input file 'numbers' (examples/data/numbers.txt) is gone and no job writes it" in err
    assert "Traceback" not in err
    assert daemon.call("workflows.show", {"workflow_id": wf})["run_id"] == 1


def test_user_data_written_after_its_reader_ran_reruns_the_reader(daemon, tmp_path):
    wf = daemon.submit(
        """\
        name: data
        user_data: [{name: setting, data: 1}]
        jobs:
          - {name: reader, command: 'torcctl user-data get setting', input_user_data: [setting]}
          - {name: other, command: 'true'}
        """
    )
    assert daemon.wait(wf).counts == {"completed": 2}
    code, out, err = daemon.ctl("user-data", "set", "setting", "2", "-w", str(wf))
    assert code == 0, err
    code, out, _ = reinit(daemon, wf)
    assert code == 0 and "reader: input user data 'setting' changed after it ran" in out and "other" not in out
    assert daemon.wait(wf).counts == {"completed": 2}
    reader = daemon.jobs(wf)["reader"]
    assert [open(a.stdout_path).read() for a in daemon.attempts(reader.id)] == ["1\n", "2\n"]


def test_failed_jobs_and_what_they_canceled_run_again(daemon, tmp_path):
    flag = tmp_path / "fixed"
    wf = daemon.submit(
        f"""\
        name: fails
        use_pending_failed: false
        jobs:
          - {{name: flaky, command: 'test -e {flag}'}}
          - {{name: after, command: 'true', depends_on: [flaky]}}
          - {{name: fine, command: 'true'}}
        """
    )
    assert daemon.wait(wf).counts == {"failed": 1, "canceled": 1, "completed": 1}
    flag.touch()
    code, out, _ = reinit(daemon, wf)
    assert code == 0 and "flaky: it ended failed" in out and "after: " in out and "fine" not in out
    assert daemon.wait(wf).counts == {"completed": 3}


def test_a_running_workflow_is_refused(daemon):
    wf = daemon.submit("name: busy\njobs: [{name: a, command: 'sleep 30'}]\n")
    daemon.wait_for(lambda: daemon.jobs(wf)["a"].status == "running", what="a running")
    code, _, err = reinit(daemon, wf)
    assert code != 0 and "unfinished jobs; cancel it or wait" in err
    daemon.ctl("workflows", "cancel", str(wf))
