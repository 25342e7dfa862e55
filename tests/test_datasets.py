"""Torc's `datasets`: directories several jobs write and others read whole. Readers wait for
every writer, an input dataset must exist at submission, `${datasets.input|output.NAME}` is its
path, `workflows reinitialize` reruns what a changed dataset feeds, and `torcctl datasets`
lists each with what is in it now."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time

import pytest
from conftest import REPO

from torcd.errors import SpecError
from torcd.spec.parse import parse_spec


@pytest.fixture
def workdir(tmp_path):
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    return tmp_path


def run_example(daemon, workdir) -> int:
    code, out, err = daemon.ctl("run", "--quiet", "examples/datasets.yaml", cwd=workdir)
    assert code == 0, out + err
    (wf,) = [w["id"] for w in daemon.call("workflows.list")]
    return wf


def test_readers_wait_for_every_writer_and_get_the_datasets_path(daemon, workdir):
    wf = run_example(daemon, workdir)
    jobs = daemon.jobs(wf)
    assert {n: j.status for n, j in jobs.items()} == dict.fromkeys(
        ["shard_1", "shard_2", "shard_3", "merge", "report"], "completed"
    )
    merged = workdir / "output" / "datasets" / "merged" / "all.txt"
    assert merged.read_text().split() == [str(n) for k in (1, 2, 3) for n in range(k, 13, 3)]
    (merge,) = daemon.attempts(jobs["merge"].id)
    for shard in ("shard_1", "shard_2", "shard_3"):
        (a,) = daemon.attempts(jobs[shard].id)
        assert a.end_time <= merge.start_time  # a fan-in: merge waited for each writer
    (report,) = daemon.attempts(jobs["report"].id)
    assert open(report.stdout_path).read().strip() == "12"


def test_torcctl_datasets_lists_writers_readers_and_what_is_in_each(daemon, workdir):
    wf = run_example(daemon, workdir)
    code, out, err = daemon.ctl("--json", "datasets", str(wf), "--hash")
    assert code == 0, err
    parts, merged = json.loads(out)
    assert (parts["name"], parts["hash_mode"], parts["writers"], parts["readers"]) == (
        "parts",
        "manifest",
        ["shard_1", "shard_2", "shard_3"],
        ["merge"],
    )
    assert (parts["file_count"], parts["exists"]) == (3, True)
    root = workdir / "output" / "datasets"
    assert parts["total_size"] == sum(p.stat().st_size for p in (root / "parts").iterdir())
    content = (root / "merged" / "all.txt").read_bytes()
    expected = hashlib.sha256(b"all.txt\0" + content + b"\n").hexdigest()
    assert (merged["hash_mode"], merged["writers"], merged["readers"], merged["hash"]) == (
        "content",
        ["merge"],
        ["report"],
        expected,
    )
    code, out, _ = daemon.ctl("datasets", str(wf))
    assert code == 0 and "shard_1, shard_2, shard_3" in out and out.splitlines()[0].split()[-1] == "bytes"


def test_reinitialize_reruns_what_a_changed_dataset_feeds(daemon, workdir):
    wf = run_example(daemon, workdir)
    time.sleep(0.05)  # the change is later than every start, at the file system's resolution
    (workdir / "output" / "datasets" / "parts" / "part_2.txt").write_text("20\n")
    before = (daemon.jobs(wf), daemon.events(wf))
    code, out, err = daemon.ctl("--json", "workflows", "reinitialize", str(wf), "--dry-run")
    assert code == 0, err
    assert (daemon.jobs(wf), daemon.events(wf)) == before  # a dry run changes nothing
    jobs = json.loads(out)["jobs"]
    assert jobs == {
        "merge": "input dataset 'parts' changed after it ran",
        "report": "upstream job 'merge' runs again",
    }
    # A dataset gone: its writers run again to make it, and so does all that follows.
    shutil.rmtree(workdir / "output" / "datasets" / "merged")
    code, out, err = daemon.ctl("--json", "workflows", "reinitialize", str(wf))
    assert code == 0, err
    assert json.loads(out)["jobs"]["merge"] in (
        "its output dataset 'merged' is gone",
        "input dataset 'parts' changed after it ran",
    )
    assert daemon.wait(wf, timeout=60).counts == {"completed": 5}
    merged = (workdir / "output" / "datasets" / "merged" / "all.txt").read_text().split()
    assert merged == ["1", "4", "7", "10", "20", "3", "6", "9", "12"]  # made again from the changed part
    (shard,) = daemon.attempts(daemon.jobs(wf)["shard_1"].id)
    assert shard.run_id == 1  # the writers of the part that changed did not run again


def test_an_input_dataset_no_job_writes_must_exist_at_submission(daemon, tmp_path):
    spec = "name: x\ndatasets:\n  - {name: raw, path: data/raw}\njobs:\n"
    spec += "  - {name: a, command: ls, input_datasets: [raw]}\n"
    (tmp_path / "x.yaml").write_text(spec)
    code, _, err = daemon.ctl("submit", "x.yaml", cwd=tmp_path)
    assert code != 0 and "input dataset 'raw' (data/raw) does not exist and no job writes it" in err
    assert "(at $.datasets[0])" in err and "Traceback" not in err
    os.makedirs(tmp_path / "data" / "raw")
    code, _, err = daemon.ctl("submit", "x.yaml", cwd=tmp_path)
    assert code == 0, err


HEAD = "name: s\ndatasets:\n  - {name: d, path: out/d}\n"


@pytest.mark.parametrize(
    "body, line, field, words",
    [
        ("jobs:\n  - {name: a, command: 'true', input_datasets: [nope]}\n", 5, "$.jobs[0].input_datasets", "no such"),
        ("jobs:\n  - {name: a, command: 'true', output_datasets: [d, e]}\n", 5, "$.jobs[0].output_datasets", "'e'"),
        ("jobs:\n  - {name: a, command: 'ls ${datasets.input.e}'}\n", 5, "$.jobs[0].command", "dataset 'e'"),
        ("  - {name: d, path: x}\njobs:\n  - {name: a, command: 'true'}\n", 4, "$.datasets[1].name", "declared twice"),
        ("  - {name: n, path: \"a\\0b\"}\njobs:\n  - {name: a, command: 'true'}\n", 4, "$.datasets[1].path", "'\\x00'"),
        (
            "  - {name: m, path: x, hash_mode: sha1}\njobs:\n  - {name: a, command: 'true'}\n",
            4,
            "$.datasets[1].hash_mode",
            "Invalid enum value 'sha1'",
        ),
        (
            "jobs:\n  - {name: a, command: 'true', input_datasets: [d], output_datasets: [d]}\n",
            None,
            None,
            None,
        ),
    ],
)
def test_what_a_dataset_spec_gets_wrong_is_named_with_its_line(body, line, field, words):
    if words is None:  # reading and writing the same dataset is allowed (a job adds to it)
        assert parse_spec(HEAD + body, "s.yaml").jobs[0].depends_on == []
        return
    with pytest.raises(SpecError) as info:
        parse_spec(HEAD + body, "s.yaml")
    assert (info.value.line, info.value.field) == (line, field) and words in info.value.message, info.value.message


def test_a_cycle_through_datasets_is_named_with_the_dataset():
    spec = HEAD + (
        "  - {name: e, path: out/e}\njobs:\n"
        "  - {name: a, command: 'true', input_datasets: [e], output_datasets: [d]}\n"
        "  - {name: b, command: 'true', input_datasets: [d], output_datasets: [e]}\n"
    )
    with pytest.raises(SpecError, match=r"dependency cycle: .*writes '[de]'"):
        parse_spec(spec, "s.yaml")


def test_a_parameterized_dataset_name_is_filled_per_job():
    spec = (
        "name: s\ndatasets:\n  - {name: d1, path: out/1}\n  - {name: d2, path: out/2}\njobs:\n"
        "  - {name: 'make_{i}', command: 'true', output_datasets: ['d{i}'], parameters: {i: '1:2'}}\n"
        "  - {name: 'use_{i}', command: 'true', input_datasets: ['d{i}'], parameters: {i: '1:2'}}\n"
    )
    jobs = {j.name: j for j in parse_spec(spec, "s.yaml").jobs}
    assert jobs["use_1"].depends_on == ["make_1"] and jobs["use_2"].depends_on == ["make_2"]


def test_a_dataset_that_is_one_file_is_counted_and_hashed(tmp_path):
    from torcctl.data import dataset_stats

    (tmp_path / "table.csv").write_bytes(b"a,b\n1,2\n")
    count, size, digest = dataset_stats(str(tmp_path / "table.csv"), "content")
    assert (count, size) == (1, 8)
    assert digest == hashlib.sha256(b"table.csv\0a,b\n1,2\n\n").hexdigest()
    (tmp_path / "d").mkdir()
    os.mkfifo(tmp_path / "d" / "pipe")
    assert dataset_stats(str(tmp_path / "d"), "content")[0] == 0  # a FIFO is not read (nor waited on)


def test_too_many_dataset_dependencies_are_refused_before_they_are_made():
    spec = (
        "name: s\ndatasets:\n  - {name: d, path: out/d}\njobs:\n"
        "  - {name: 'w{i}', command: 'true', output_datasets: [d], parameters: {i: '1:2100'}}\n"
        "  - {name: 'r{i}', command: 'true', input_datasets: [d], parameters: {i: '1:2000'}}\n"
    )
    started = time.monotonic()
    with pytest.raises(SpecError) as info:
        parse_spec(spec, "s.yaml")
    assert "more than 4,000,000 dependencies" in info.value.message and info.value.field == "$.jobs[1].input_datasets"
    assert time.monotonic() - started < 30  # counted, not built


def test_a_dataset_too_large_to_read_whole_counts_as_changed(tmp_path):
    from torcd.spec.data import newest_in_tree

    for i in range(5):
        (tmp_path / f"f{i}").write_text("x")
    assert newest_in_tree(str(tmp_path), limit=100) < float("inf")
    assert newest_in_tree(str(tmp_path), limit=3) == float("inf")
    assert newest_in_tree(str(tmp_path / "gone")) is None


def test_datasets_read_alike_in_yaml_and_kdl():
    yaml = (
        "name: ds\ndatasets:\n  - {name: parts, path: out/parts, hash_mode: content}\njobs:\n"
        "  - {name: 'make_{i}', command: 'touch out/parts/{i}', parameters: {i: '1:2'}, output_datasets: [parts]}\n"
        "  - {name: use, command: 'ls out/parts', input_datasets: [parts]}\n"
    )
    kdl = """name "ds"
dataset "parts" {
    path "out/parts"
    hash_mode "content"
}
job "make_{i}" {
    command "touch out/parts/{i}"
    parameters { i "1:2"; }
    output_dataset "parts"
}
job "use" {
    command "ls out/parts"
    input_dataset "parts"
}
"""
    assert parse_spec(kdl, "ds.kdl") == parse_spec(yaml, "ds.yaml")
