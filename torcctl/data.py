"""Commands for what jobs exchange: files (and who writes and reads them)."""

from __future__ import annotations

from torcctl.client import Client
from torcctl.render import print_json, table
from torcd.protocol import FileInfo


def files(client: Client, args) -> int:
    """Torc's `files list`: each file, the job that writes it, the jobs that read it, whether it exists."""
    found = client.call("workflows.files", {"workflow_id": args.workflow_id}, list[FileInfo])
    if args.json:
        print_json(found)
        return 0

    def readers(names: list[str]) -> str:
        return ", ".join(names[:3]) + (f" (+{len(names) - 3})" if len(names) > 3 else "")
    table(["name", "path", "written by", "read by", "exists"],
          ((f.name, f.path, f.producer or "(input)", readers(f.consumers), "yes" if f.exists else "no")
           for f in found))
    return 0
