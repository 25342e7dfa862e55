"""The files a Python call travels in, between an Executor and the job that runs it.

`call_N.in` holds the function and its arguments (cloudpickle: lambdas, closures and functions
defined in `__main__` travel too); `call_N.out` the result or the exception with its remote
traceback. A Future passed as an argument travels as `Ref(N)` and the job reads that call's
result. Results never pass through the daemon: a 10,000-call map keeps its results on disk
until the caller reads them. Both files are written whole (temporary name, then rename), so a
reader never sees half of one, and a retried attempt replaces the last attempt's result.
"""

from __future__ import annotations

import os
import secrets
import stat
import sys
import traceback
from typing import Any

import cloudpickle
import msgspec

FORMAT = 2


class Ref(msgspec.Struct, frozen=True):
    """An argument that is another call's result."""

    call: int


class RemoteError(Exception):
    """A call raised in its job and the exception could not travel back as itself (or a call
    could not run at all): its type, message and the remote traceback."""

    def __init__(self, message: str, remote_traceback: str = "") -> None:
        super().__init__(message)
        self.remote_traceback = remote_traceback

    def __str__(self) -> str:
        text = super().__str__()
        return f"{text}\n\nRemote traceback:\n{self.remote_traceback}" if self.remote_traceback else text


def in_path(directory: str, call: int) -> str:
    return os.path.join(directory, f"call_{call}.in")


def out_path(directory: str, call: int) -> str:
    return os.path.join(directory, f"call_{call}.out")


def write_whole(path: str, data: bytes) -> None:
    tmp = f"{path}.{secrets.token_hex(8)}.tmp"  # a new file, never one planted there
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_own(path: str) -> bytes:
    """A call or result file's bytes, only if it is a regular file of ours: what is read is
    unpickled, and a file someone else wrote would run their code as us."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
            raise PermissionError(f"{path} is not a file of yours; refusing to read it")
        return f.read()


def pack_call(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], max_result_bytes: int) -> bytes:
    """The call's bytes; raises TypeError naming what cannot travel."""
    if not callable(fn):
        raise TypeError(f"{fn!r} is not callable")
    try:
        inner = cloudpickle.dumps((fn, args, kwargs, max_result_bytes))
    except Exception as e:
        raise TypeError(f"cannot send {_name(fn)} to a job: {type(e).__name__}: {e}") from None
    # The caller's sys.path goes first, in its own layer: the job needs it to unpickle a function
    # that travels as a reference to its module.
    data: bytes = cloudpickle.dumps((FORMAT, list(sys.path), inner))
    return data


def _name(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


def read_result(directory: str, call: int) -> tuple[bool, Any]:
    """(True, value) or (False, exception) for a call whose job ended; a missing or unreadable
    result is a RemoteError saying so."""
    try:
        kind, *rest = cloudpickle.loads(read_own(out_path(directory, call)))
    except FileNotFoundError:
        return False, RemoteError(f"call_{call} wrote no result (its job was killed or never ran)")
    except Exception as e:
        return False, RemoteError(f"cannot read the result of call_{call}: {type(e).__name__}: {e}")
    if kind == "ok":
        return True, rest[0]
    exc, text = rest
    if isinstance(exc, BaseException):
        exc.__cause__ = RemoteError("raised in the job", text)
        return False, exc
    return False, RemoteError(str(exc), text)


def run_call(directory: str, call: int) -> int:
    """Run one call in this process (the job's); write its result; the job's exit code."""
    try:  # an earlier attempt's result must not pass for this one's
        os.unlink(out_path(directory, call))
    except FileNotFoundError:
        pass
    try:
        fmt, path, data = cloudpickle.loads(read_own(in_path(directory, call)))
        if fmt != FORMAT:
            raise RemoteError(f"call_{call} was written by another version of torcctl (format {fmt})")
        # A function of an importable module travels as a reference: find it where the caller did.
        sys.path.extend(p for p in path if p not in sys.path)
        fn, args, kwargs, max_bytes = cloudpickle.loads(data)
        args = tuple(_resolve(directory, a) for a in args)
        kwargs = {k: _resolve(directory, v) for k, v in kwargs.items()}
    except Exception as e:
        return _write_error(directory, call, e)
    try:
        value = fn(*args, **kwargs)
    except BaseException as e:  # SystemExit and KeyboardInterrupt too: the caller hears of them
        return _write_error(directory, call, e)
    try:
        data = cloudpickle.dumps(("ok", value))
    except Exception as e:
        return _write_error(directory, call, TypeError(f"the result cannot be sent back: {type(e).__name__}: {e}"))
    if len(data) > max_bytes:
        message = f"the result is {len(data):,} bytes pickled; the limit is {max_bytes:,} (Executor max_result_bytes)"
        return _write_error(directory, call, ValueError(message))
    write_whole(out_path(directory, call), data)
    return 0


def _resolve(directory: str, value: Any) -> Any:
    if not isinstance(value, Ref):
        return value
    ok, result = read_result(directory, value.call)
    if not ok:
        raise RemoteError(f"the result of call_{value.call}, an argument of this call, is an error: {result}")
    return result


def _write_error(directory: str, call: int, e: BaseException) -> int:
    text = "".join(traceback.format_exception(e))
    print(text, file=sys.stderr, end="")  # the job's stderr log has it too
    try:
        data = cloudpickle.dumps(("error", e, text))
    except Exception:  # an exception that cannot travel goes as its text
        data = cloudpickle.dumps(("error", f"{type(e).__name__}: {e}", text))
    write_whole(out_path(directory, call), data)
    return 1


def main(argv: list[str]) -> int:
    """`python -m torcctl.api.calls DIR N`: what an Executor's job runs."""
    if len(argv) != 2 or not argv[1].isdigit():
        print("usage: python -m torcctl.api.calls DIR N", file=sys.stderr)
        return 2
    return run_call(argv[0], int(argv[1]))


if __name__ == "__main__":
    # Run as the module by its own name, so that a pickled Ref is an instance of its Ref class.
    from torcctl.api import calls

    sys.exit(calls.main(sys.argv[1:]))
