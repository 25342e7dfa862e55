"""A worker's journal: what it has seen and not yet told the daemon (exits, starts, recovery
results), on the node's disk, so that neither a daemon outage nor a restart of the worker loses
them. A worker started with the journal of one that died resumes its registration and reports
what it left.

The journal lives in a directory only the user can use and is replaced whole (write, then
rename), so it is never half written and never written through someone else's symlink.
"""

from __future__ import annotations

import os
import tempfile

import msgspec

from torcd import protocol as p
from torcd.ownership import UnsafePath, make_private_dir


class Saved(msgspec.Struct):
    worker_id: int
    exits: list[p.ExitReport] = []
    started: list[p.StartedReport] = []
    recoveries: list[p.RecoveryReport] = []


class JournalError(Exception):
    pass


def default_path(workflow_id: int, allocation_id: int, node: str) -> str:
    base = os.environ.get("TMPDIR") or "/tmp"
    return os.path.join(base, f"torc-worker-{os.getuid()}", f"wf{workflow_id}_a{allocation_id}_{node}.journal")


class Journal:
    def __init__(self, path: str):
        self.path = path
        try:
            make_private_dir(os.path.dirname(path), "the worker's journal directory")
        except UnsafePath as e:
            raise JournalError(e.message) from None

    def load(self) -> Saved | None:
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                if st.st_uid != os.getuid():
                    raise JournalError(f"journal {self.path} is not yours; refusing to read it")
                return msgspec.json.decode(f.read(), type=Saved)
        except FileNotFoundError:
            return None
        except (OSError, msgspec.DecodeError, msgspec.ValidationError) as e:
            raise JournalError(f"cannot read the journal {self.path}: {e}") from None

    def save(self, saved: Saved) -> None:
        fd, temp = tempfile.mkstemp(dir=os.path.dirname(self.path), prefix=".journal-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(msgspec.json.encode(saved))  # no fsync: it guards against the worker dying, not the node
            os.replace(temp, self.path)
        except BaseException:
            os.unlink(temp)
            raise

    def remove(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
