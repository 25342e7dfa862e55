"""A worker's journal: what it has seen and not yet told the daemon (exits, starts, recovery
results), on the node's disk, so that neither a daemon outage nor a restart of the worker loses
them. A worker started with the journal of one that died resumes its registration and reports
what it left.

The journal lives in a directory only the user can use and is replaced whole (write, then
rename), so it is never half written and never written through someone else's symlink. In an
allocation, that directory is one no other user can have made first: never a name in a shared
/tmp that anyone could guess (someone who made it first would stop every worker of the user).
"""

from __future__ import annotations

import hashlib
import os
import stat
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


def journal_dir(token: str | None, node: str) -> tuple[str, bool]:
    """Where an allocation's worker keeps its journal, and whether that directory is its own (to
    remove when done). A private base (XDG_RUNTIME_DIR, or a TMPDIR made for this job) holds a
    `torc-worker` directory nobody else can make. In a shared TMPDIR or /tmp the name derives from
    the allocation's credential: the same for a worker that takes over on this node, unguessable
    for anyone else. Without a credential, a fresh directory (that no successor will find)."""
    for name in ("XDG_RUNTIME_DIR", "TMPDIR"):
        base = os.environ.get(name)
        if base and _private(base):
            return os.path.join(base, "torc-worker"), False
    base = os.environ.get("TMPDIR") or "/tmp"
    if token is None:
        return tempfile.mkdtemp(prefix=f"torc-worker-{os.getuid()}-", dir=base), True
    secret = hashlib.sha256(f"torc worker journal\0{node}\0{token}".encode()).hexdigest()[:32]
    return os.path.join(base, f"torc-worker-{os.getuid()}-{secret}"), True


def _private(path: str) -> bool:
    """A directory (not a link to one) that is the user's and that nobody else may enter."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077


class Journal:
    def __init__(self, path: str, own_dir: bool = False):
        self.path, self.own_dir = path, own_dir
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

    @classmethod
    def for_allocation(cls, workflow_id: int, allocation_id: int, node: str, token: str | None) -> Journal:
        directory, own = journal_dir(token, node)
        return cls(os.path.join(directory, f"wf{workflow_id}_a{allocation_id}_{node}.journal"), own)

    def remove(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        if self.own_dir:  # nothing left in /tmp of an allocation that is done
            try:
                os.rmdir(os.path.dirname(self.path))
            except OSError:
                pass
