"""`torcctl ro-crate export`: a finished workflow as an RO-Crate 1.1, checked by the maintained
validator (roc-validator, offline: RO-Crate 1.1's context, CC0, is served from its HTTP cache,
primed from tests/data), and what the crate says of each file and attempt."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import requests
import urllib3
from conftest import REPO
from requests_cache import CachedSession

from torcctl.ro_crate import entity_id
from torcd.spec.parse import parse_spec

CONTEXT_URL = "https://w3id.org/ro/crate/1.1/context"
# The validator's command through its entry point: found wherever pip put its script (a venv
# over system site-packages that already had it puts none beside this interpreter).
(_ENTRY,) = entry_points(group="console_scripts", name="rocrate-validator")
_MODULE, _, _FUNCTION = _ENTRY.value.partition(":")
VALIDATOR = [sys.executable, "-c", f"import sys; from {_MODULE} import {_FUNCTION}; sys.exit({_FUNCTION}())"]


@pytest.fixture(scope="module")
def validator_cache(tmp_path_factory) -> str:
    """roc-validator's HTTP cache holding RO-Crate 1.1's context, as if fetched from w3id.org."""
    path = str(tmp_path_factory.mktemp("rocv") / "cache")
    data = (REPO / "tests" / "data" / "ro-crate-1.1-context.jsonld").read_bytes()
    headers = {"Content-Type": "application/ld+json"}
    response = requests.Response()
    response.status_code, response.reason, response.url, response.encoding = 200, "OK", CONTEXT_URL, "utf-8"
    response._content = data
    response.headers.update(headers)
    response.raw = urllib3.HTTPResponse(
        body=io.BytesIO(data), headers=headers, status=200, preload_content=False, request_url=CONTEXT_URL
    )
    response.request = requests.Request("GET", CONTEXT_URL).prepare()
    session = CachedSession(cache_name=path, backend="sqlite", expire_after=-1, allowable_methods=("GET",))
    session.cache.save_response(response)
    session.close()
    return path


def validate(crate: Path, cache: str) -> dict:
    """roc-validator's report on the crate (profile ro-crate-1.1, REQUIRED level), offline."""
    report_file = crate / "report.json"
    options = ["--offline", "--cache-path", cache, "--no-paging", "-f", "json", "-p", "ro-crate-1.1"]
    done = subprocess.run(
        [*VALIDATOR, "validate", *options, "-o", str(report_file), str(crate)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads((crate / "report.json").read_text())
    (crate / "report.json").unlink()
    assert "not available in the HTTP cache" not in done.stdout + done.stderr, done.stdout + done.stderr
    assert report["statistics"]["total_checks"] >= 30 and not report["skipped_checks"]  # it did check
    return report


def graph(doc: dict) -> dict[str, dict]:
    return {e["@id"]: e for e in doc["@graph"]}


def ids(refs) -> set[str]:
    return {r["@id"] for r in (refs if isinstance(refs, list) else [refs])}


@pytest.fixture
def diamond(daemon, tmp_path) -> tuple[int, Path]:
    """The file diamond example, run to the end in its own directory."""
    (tmp_path / "examples" / "data").mkdir(parents=True)
    shutil.copy(REPO / "examples" / "data" / "numbers.txt", tmp_path / "examples" / "data")
    spec = (REPO / "examples" / "file_diamond.yaml").read_text() + "enable_ro_crate: true\n"
    wf = daemon.submit(spec, cwd=tmp_path)
    assert daemon.wait(wf, timeout=60).counts == {"completed": 4}
    return wf, tmp_path


def test_a_finished_workflow_exports_a_crate_the_validator_accepts(daemon, diamond, validator_cache):
    wf, where = diamond
    code, out, err = daemon.ctl("ro-crate", "export", str(wf), "-o", str(where))
    assert code == 0, err
    assert out.strip() == str(where / "ro-crate-metadata.json")
    doc = json.loads((where / "ro-crate-metadata.json").read_text())
    report = validate(where, validator_cache)
    assert report["passed"] is True, json.dumps(report["issues"], indent=1)[:3000]

    entities = graph(doc)
    root = entities["./"]
    assert root["name"] == "file_diamond" and root["@type"] == "Dataset"
    files = {e["name"]: e for e in doc["@graph"] if e.get("@type") == "File"}
    assert sorted(files) == ["half_1", "half_2", "numbers", "prepared", "summary"]
    assert ids(root["hasPart"]) == {f["@id"] for f in files.values()}
    summary = files["summary"]
    assert summary["@id"] == "output/file_diamond/summary.txt"
    content = (where / "output" / "file_diamond" / "summary.txt").read_bytes()
    assert summary["sha256"] == hashlib.sha256(content).hexdigest() and summary["contentSize"] == str(len(content))
    assert summary["encodingFormat"] == "text/plain"
    # Each attempt is an action: what it read, what it made, with what, and how it ended.
    actions = {e["name"]: e for e in doc["@graph"] if e.get("@type") == "CreateAction"}
    assert sorted(actions) == [f"{n}, run 1, attempt 1" for n in ("postprocess", "preprocess", "work_1", "work_2")]
    post = actions["postprocess, run 1, attempt 1"]
    assert ids(post["object"]) == {files["half_1"]["@id"], files["half_2"]["@id"]}
    assert ids(post["result"]) == {summary["@id"]}
    assert post["actionStatus"]["@id"] == "http://schema.org/CompletedActionStatus"
    assert post["instrument"]["@id"] == "#torc-py" and entities["#torc-py"]["@type"] == "SoftwareApplication"
    assert ids(root["mentions"]) == {a["@id"] for a in actions.values()}


def test_a_failed_attempt_is_a_failed_action_and_a_file_never_made_is_left_out(daemon, tmp_path, validator_cache):
    spec = """name: half
files:
  - {name: made, path: made.txt}
  - {name: never, path: never.txt}
jobs:
  - {name: make, command: "echo x > ${files.output.made}"}
  - {name: broken, command: "cat ${files.input.made}; exit 4", depends_on: [make]}
  - {name: after, command: "cat ${files.input.never}", depends_on: [broken]}
  - {name: writes_never, command: "echo > ${files.output.never}; exit 1"}
"""
    wf = daemon.submit(spec, cwd=tmp_path)
    daemon.wait(wf, timeout=60)
    code, out, err = daemon.ctl("ro-crate", "export", str(wf), "--license", "https://spdx.org/licenses/CC-BY-4.0")
    assert code == 0, err
    doc = json.loads(out)
    entities = graph(doc)
    assert entities["./"]["license"] == {"@id": "https://spdx.org/licenses/CC-BY-4.0"}
    assert "never.txt" not in entities or entities["never.txt"].get("@type") == "File"
    broken = next(e for e in doc["@graph"] if e.get("name") == "broken, run 1, attempt 1")
    assert broken["actionStatus"]["@id"] == "http://schema.org/FailedActionStatus"
    assert "result" not in broken and ids(broken["object"]) == {"made.txt"}
    assert "4" in broken["error"]
    (tmp_path / "ro-crate-metadata.json").write_text(out)
    report = validate(tmp_path, validator_cache)
    assert report["passed"] is True, json.dumps(report["issues"], indent=1)[:3000]


def test_export_refuses_what_it_cannot_do_with_a_clear_error(daemon, diamond, tmp_path):
    wf, where = diamond
    code, _, err = daemon.ctl("ro-crate", "export", "999")
    assert code != 0 and "999" in err and "Traceback" not in err
    code, _, err = daemon.ctl("ro-crate", "export", str(wf), "-o", str(tmp_path / "no" / "such" / "dir" / "x.json"))
    assert code == 2 and "cannot write" in err and "Traceback" not in err
    code, out, err = daemon.ctl("ro-crate", "export", str(wf), "--no-hash")
    assert code == 0 and all("sha256" not in e for e in json.loads(out)["@graph"])


@pytest.mark.parametrize(
    "path, root, expected",
    [
        ("/w/out/a.txt", "/w", "out/a.txt"),
        ("/w/a b#c.txt", "/w", "a%20b%23c.txt"),
        ("/data/in.csv", "/w", "file:///data/in.csv"),
        ("/w", "/w", "file:///w"),
        ("/w2/x", "/w", "file:///w2/x"),
    ],
)
def test_a_files_id_is_relative_to_the_crate_inside_it_and_a_file_uri_outside(path, root, expected):
    assert entity_id(path, root) == expected


def test_torcs_enable_ro_crate_is_read():
    assert parse_spec("name: x\nenable_ro_crate: true\njobs:\n  - {name: a, command: 'true'}\n", "x.yaml")
    with pytest.raises(Exception, match="Expected `bool`"):
        parse_spec("name: x\nenable_ro_crate: maybe\njobs:\n  - {name: a, command: 'true'}\n", "x.yaml")


def test_the_vendored_context_is_ro_crate_1_1s():
    doc = json.loads((REPO / "tests" / "data" / "ro-crate-1.1-context.jsonld").read_text())
    assert doc["@id"] == CONTEXT_URL and doc["version"] == "1.1.0"


def test_the_validator_refuses_a_crate_that_breaks_the_spec(daemon, diamond, validator_cache):
    wf, where = diamond
    code, out, err = daemon.ctl("ro-crate", "export", str(wf))
    doc = json.loads(out)
    del graph(doc)["./"]["datePublished"]  # a MUST of RO-Crate 1.1
    (where / "ro-crate-metadata.json").write_text(json.dumps(doc))
    report = validate(where, validator_cache)
    assert report["passed"] is False and "datePublished" in json.dumps(report["issues"])


def test_a_fifo_where_a_file_was_is_left_out_and_a_license_that_is_not_text_is_not_used(daemon, tmp_path):
    spec = """name: odd
metadata: {license: {kind: mit}}
files:
  - {name: pipe, path: pipe}
jobs:
  - {name: a, command: "cat ${files.input.pipe} > /dev/null &"}
"""
    os.mkfifo(tmp_path / "pipe")
    wf = daemon.submit(spec, cwd=tmp_path)
    daemon.wait(wf, timeout=30)
    code, out, err = daemon.ctl("ro-crate", "export", str(wf))
    assert code == 0, err
    entities = graph(json.loads(out))
    assert "pipe" not in entities and entities["#license"]["description"].startswith("No license stated")
