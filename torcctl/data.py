"""Commands for what jobs exchange: files (and who writes and reads them), and user data."""

from __future__ import annotations

import os
import sys

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
