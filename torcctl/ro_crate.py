"""`torcctl ro-crate export WF`: the workflow as an RO-Crate 1.1 (https://w3id.org/ro/crate/1.1):
its files as data entities (size, time, SHA-256, format) and every finished attempt as a
`CreateAction` that used the job's inputs and, when it completed, made its outputs.

`build` is pure: the daemon's records and what `describe` says of each file on disk go in, the
crate's JSON-LD comes out."""

from __future__ import annotations

import hashlib
import mimetypes
import os
import urllib.parse
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import msgspec

from torcctl.data import read_regular_file
from torcd.protocol import AttemptInfo, FileInfo, WorkflowSummary

SPEC = "https://w3id.org/ro/crate/1.1"
CONTEXT: list[Any] = [f"{SPEC}/context", {"sha256": "http://schema.org/sha256"}]
METADATA = "ro-crate-metadata.json"
NO_LICENSE = "No license stated: ask the workflow's owner before reusing its data."


class FileFacts(msgspec.Struct, frozen=True):
    size: int
    mtime: float
    sha256: str | None = None  # None: not hashed (--no-hash)


def describe(path: str, hashed: bool = True) -> FileFacts | None:
    """What a file on disk is now (None: missing, or not a regular file)."""
    h = hashlib.sha256() if hashed else None
    try:
        st = read_regular_file(path, h)
    except OSError:
        return None
    if st is None:
        return None
    return FileFacts(st.st_size, st.st_mtime, h.hexdigest() if h else None)


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def entity_id(path: str, root: str) -> str:
    """A file's @id: its path relative to the crate's root when it lies inside, else a file: URI."""
    rel = os.path.relpath(path, root)
    if rel == os.curdir or rel.startswith(os.pardir + os.sep) or rel == os.pardir:
        return "file://" + urllib.parse.quote(path)
    return urllib.parse.quote(rel.replace(os.sep, "/"))


def build(
    wf: WorkflowSummary,
    files: Iterable[FileInfo],
    attempts: Iterable[AttemptInfo],
    *,
    root: str,
    now: float,
    version: str,
    license: str | None = None,
    facts: Callable[[str], FileFacts | None] = describe,
) -> dict[str, Any]:
    """The crate's metadata document. `root` is the directory the crate describes (where its
    metadata file goes); file paths are the workflow's, relative to its directory."""
    stated = (wf.metadata or {}).get("license")
    license = license or (stated if isinstance(stated, str) and stated.strip() else None) or NO_LICENSE
    software = {
        "@id": "#torc-py",
        "@type": "SoftwareApplication",
        "name": "torc-py",
        "softwareVersion": version,
        "description": "the workflow manager that ran these jobs",
    }
    data: list[dict[str, Any]] = []
    readers: dict[str, list[str]] = {}  # job name -> the ids of the files it reads
    writers: dict[str, list[str]] = {}  # ... and writes
    for f in files:
        path = os.path.normpath(os.path.join(wf.cwd, f.path))
        seen = facts(path)
        if seen is None:
            continue  # never made, or gone: a data entity must be there
        fid = entity_id(path, root)
        entity: dict[str, Any] = {
            "@id": fid,
            "@type": "File",
            "name": f.name,
            "contentSize": str(seen.size),
            "dateModified": iso(seen.mtime),
            "encodingFormat": mimetypes.guess_type(path)[0] or "application/octet-stream",
        }
        if seen.sha256:
            entity["sha256"] = seen.sha256
        if f.producer is None:
            entity["description"] = "an input of the workflow"
        data.append(entity)
        for job in f.consumers:
            readers.setdefault(job, []).append(fid)
        if f.producer is not None:
            writers.setdefault(f.producer, []).append(fid)
    actions = [_action(a, readers, writers) for a in attempts if a.end_time is not None]
    root_entity: dict[str, Any] = {
        "@id": "./",
        "@type": "Dataset",
        "name": wf.name,
        "description": wf.description or f"torc-py workflow {wf.id}: its files and how each was made",
        "datePublished": iso(now),
        "license": {"@id": license if _is_uri(license) else "#license"},
        "hasPart": _refs(e["@id"] for e in data),
        "mentions": _refs(a["@id"] for a in actions),
        "identifier": f"torc-py workflow {wf.id}, run {wf.run_id}",
    }
    if wf.user:
        root_entity["author"] = {"@id": "#user"}
    graph: list[dict[str, Any]] = [
        {"@id": METADATA, "@type": "CreativeWork", "conformsTo": {"@id": SPEC}, "about": {"@id": "./"}},
        root_entity,
        software,
        {"@id": license, "@type": "CreativeWork", "name": license}
        if _is_uri(license)
        else {"@id": "#license", "@type": "CreativeWork", "name": "license", "description": license},
        *data,
        *actions,
    ]
    if wf.user:
        graph.append({"@id": "#user", "@type": "Person", "name": wf.user})
    return {"@context": CONTEXT, "@graph": graph}


def _action(a: AttemptInfo, readers: dict[str, list[str]], writers: dict[str, list[str]]) -> dict[str, Any]:
    name = a.job_name or f"job {a.job_id}"
    done = a.return_code == 0
    action: dict[str, Any] = {
        "@id": f"#job-{a.job_id}-run-{a.run_id}-attempt-{a.attempt_id}",
        "@type": "CreateAction",
        "name": f"{name}, run {a.run_id}, attempt {a.attempt_id}",
        "instrument": {"@id": "#torc-py"},
        "startTime": iso(a.start_time),
        "endTime": iso(a.end_time or a.start_time),
        "actionStatus": {"@id": f"http://schema.org/{'Completed' if done else 'Failed'}ActionStatus"},
        "object": _refs(readers.get(name, [])),
    }
    if done:
        action["result"] = _refs(writers.get(name, []))
    else:
        why = a.message or f"exited {a.return_code}"
        action["error"] = why + (f" ({a.cause})" if a.cause else "")
    return action


def _refs(ids: Iterable[str]) -> dict[str, str] | list[dict[str, str]]:
    """References to entities: one as itself, several as a list (RO-Crate 1.1's JSON-LD form)."""
    refs = [{"@id": i} for i in ids]
    return refs[0] if len(refs) == 1 else refs


def _is_uri(text: str) -> bool:
    return urllib.parse.urlsplit(text).scheme in ("http", "https") and " " not in text
