"""Commands for what jobs exchange: files and datasets (and who writes and reads them), and user data."""

from __future__ import annotations

import hashlib
import os
import stat
import sys
from typing import Any

import msgspec

from torcctl.api.client import Client
from torcctl.commands import UsageError
from torcctl.render import print_json, table, when
from torcd.protocol import MAX_USER_DATA_BYTES


def files(client: Client, args) -> int:
    """Torc's `files list`: each file, the job that writes it, the jobs that read it, whether it exists."""
    found = client.files(args.workflow_id)
    if args.json:
        print_json(found)
        return 0

    def readers(names: list[str]) -> str:
        return ", ".join(names[:3]) + (f" (+{len(names) - 3})" if len(names) > 3 else "")

    table(
        ["name", "path", "written by", "read by", "exists"],
        ((f.name, f.path, f.producer or "(input)", readers(f.consumers), "yes" if f.exists else "no") for f in found),
    )
    return 0


def datasets(client: Client, args) -> int:
    """Torc's `datasets list`: each dataset, the jobs that write it and read it, and what is in it
    now (files, bytes and, with --hash, its hash as its hash_mode says)."""
    found = client.datasets(args.workflow_id)
    cwd = client.workflow(args.workflow_id).cwd
    rows = []
    for d in found:
        limit = None if args.hash else LIST_LIMIT
        count, size, digest = dataset_stats(os.path.join(cwd, d.path), d.hash_mode if args.hash else "none", limit)
        counted = limit is None or count <= limit
        rows.append(
            {**msgspec.to_builtins(d), "file_count": count, "total_size": size, "hash": digest, "counted": counted}
        )
    if args.json:
        print_json(rows)
        return 0

    def jobs(names: list[str]) -> str:
        return ", ".join(names[:3]) + (f" (+{len(names) - 3})" if len(names) > 3 else "") or "-"

    headers = ["name", "path", "hash mode", "written by", "read by", "files", "bytes"]
    table(
        headers + (["hash"] if args.hash else []),
        (
            [r["name"], r["path"], r["hash_mode"], jobs(r["writers"]) if r["writers"] else "(input)"]
            + [jobs(r["readers"]), _count(r), str(r["total_size"]) + ("" if r["counted"] else "+")]
            + ([r["hash"] or "-"] if args.hash else [])
            for r in rows
        ),
    )
    return 0


LIST_LIMIT = 100_000  # files counted per dataset for a listing without --hash


def _count(row: dict) -> str:
    if not row["exists"]:
        return "missing"
    return str(row["file_count"]) if row["counted"] else f"over {LIST_LIMIT:,} (--hash counts all)"


def dataset_stats(path: str, hash_mode: str, limit: int | None = None) -> tuple[int, int, str | None]:
    """The files under a dataset's directory (or the one file it is), their bytes, and its hash:
    `manifest`, SHA-256 over each file's path, size and time; `content`, over each file's path
    and contents; `none`, no hash. Symlinks, FIFOs and devices are not read. Past `limit`
    files the count stops (returned as limit + 1)."""
    entries: list[tuple[str, str, os.stat_result]] = []  # (relative path, full path, stat)
    if os.path.isfile(path) and not os.path.islink(path):
        entries.append((os.path.basename(path), path, os.stat(path)))
    for top, dirs, names in os.walk(path):
        dirs.sort()
        for name in names:
            full = os.path.join(top, name)
            try:
                st = os.lstat(full)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                entries.append((os.path.relpath(full, path), full, st))
            if limit is not None and len(entries) > limit:
                return len(entries), sum(e[2].st_size for e in entries), None
    entries.sort()
    total = sum(st.st_size for _, _, st in entries)
    if hash_mode == "none":
        return len(entries), total, None
    h = hashlib.sha256()
    for rel, full, st in entries:
        h.update(rel.encode(errors="surrogateescape") + b"\0")
        if hash_mode == "manifest":
            h.update(f"{st.st_size}\0{st.st_mtime_ns}\n".encode())
            continue
        read_regular_file(full, h, follow_symlinks=False)
        h.update(b"\n")
    return len(entries), total, h.hexdigest()


def read_regular_file(path: str, h: Any = None, follow_symlinks: bool = True) -> os.stat_result | None:
    """A regular file's status, its bytes added to the hash `h` if one is given; None where it
    is gone, cannot be opened or is not a regular file (an error reading it is raised). Opened
    so that a FIFO (or one swapped in since the file was listed) never makes it wait, and,
    unless `follow_symlinks`, never through a symlink."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow_symlinks else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        while h is not None and (chunk := f.read(1 << 20)):
            h.update(chunk)
    return st


def _workflow(args) -> int:
    given = [w for w in (getattr(args, "workflow", None), args.workflow_id) if w is not None]
    if len(given) == 2 and given[0] != given[1]:
        raise UsageError(f"two workflows given ({given[0]} and -w {given[1]}); give one")
    wf = given[0] if given else os.environ.get("TORC_WORKFLOW_ID")
    if wf is None:
        raise UsageError("which workflow? give --workflow-id (jobs have $TORC_WORKFLOW_ID)")
    if not (str(wf).isascii() and str(wf).isdigit()) or int(wf) < 1:
        raise UsageError(f"workflow id must be a positive whole number, got {wf!r}")
    return int(wf)


def user_data_get(client: Client, args) -> int:
    """Print an entry's value as JSON (all of it, with --json), for a job to read."""
    info = client.user_data.info(_workflow(args), args.name)
    print_json(info if args.json else info.data)
    return 0


def user_data_set(client: Client, args) -> int:
    if args.data is not None and args.data_flag is not None:
        raise UsageError("give the value once: as an argument or as --data")
    args.data = args.data if args.data is not None else args.data_flag
    if args.data is not None and args.data_file is not None:
        raise UsageError("give the value or --data-file, not both")
    if args.data is None and args.data_file is None:
        raise UsageError("give the value as JSON, or --data-file FILE (- for stdin)")
    text = args.data
    if args.data_file is not None:
        try:
            with sys.stdin if args.data_file == "-" else open(args.data_file) as f:
                text = f.read(MAX_USER_DATA_BYTES + 1)
        except OSError as e:
            raise UsageError(f"cannot read {args.data_file}: {e.strerror}") from None
        if len(text) > MAX_USER_DATA_BYTES:
            raise UsageError(
                f"{args.data_file} holds more than 1 MiB; user data is for small values (hand larger ones on as files)"
            )
    try:
        value = msgspec.json.decode(text.encode())
    except msgspec.DecodeError as e:
        raise UsageError(f"the value is not JSON ({e}); quote a string as '\"text\"'") from None
    client.user_data.set(_workflow(args), args.name, value)
    return 0


def user_data_list(client: Client, args) -> int:
    entries = client.user_data.list(_workflow(args))
    if args.json:
        print_json(entries)
        return 0

    def short(value) -> str:
        text = msgspec.json.encode(value).decode()
        return text if len(text) <= 60 else text[:57] + "..."

    table(
        ["name", "value", "written by", "ephemeral", "updated"],
        ((e.name, short(e.data), e.producer or "", "yes" if e.is_ephemeral else "", when(e.updated)) for e in entries),
    )
    return 0
