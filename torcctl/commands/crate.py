"""`torcctl ro-crate export WF [-o FILE]`: the workflow's files and how each was made, as an
RO-Crate (Torc's `ro-crate export`)."""

from __future__ import annotations

import functools
import json
import os
import sys
import time

from torcctl.api.client import Client
from torcctl.commands import UsageError
from torcctl.ro_crate import METADATA, build, describe


def export(client: Client, args) -> int:
    wf = client.workflow(args.workflow_id)
    out = args.output
    if out is not None and os.path.isdir(out):
        out = os.path.join(out, METADATA)
    root = os.path.dirname(os.path.abspath(out)) if out else wf.cwd
    doc = build(
        wf,
        client.files(args.workflow_id, limit=1_000_000),  # every file a workflow may have
        client.results(args.workflow_id, all_runs=True),
        root=root,
        now=time.time(),
        version=client.ping().version,  # the daemon that ran the jobs
        license=args.license,
        facts=functools.partial(describe, hashed=not args.no_hash),
    )
    text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    if out is None:
        sys.stdout.write(text)
        return 0
    partial = f"{out}.{os.getpid()}.tmp"
    try:
        with open(partial, "x", encoding="utf-8") as f:
            f.write(text)
        os.replace(partial, out)  # whole or not at all
    except OSError as e:
        if os.path.exists(partial):
            os.unlink(partial)
        raise UsageError(f"cannot write {out}: {e.strerror}") from None
    print(out)
    return 0
