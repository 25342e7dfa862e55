"""Job logs after the fact: what a person sees of a failed job without opening its logs (the last
lines of its stderr), reading a log safely, and deleting a completed attempt's logs."""

from __future__ import annotations

import errno
import os
import stat
from collections import deque
from typing import BinaryIO

from torcd.protocol import JobInfo
from torcd.services.log_files import check_log_directory, open_directory

SHOWN_FOR = ("pending_failed", "failed")


def open_log_for_reading(path: str) -> BinaryIO:
    """A log opened for reading only if it is a regular file of the user's: never a FIFO (its open would wait
    for a writer) or a device (/dev/zero reads forever), never through a symlink. A job can
    make its own log any of these; reading it must not hang whoever reads."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        if st.st_uid != os.getuid():  # a log is always the user's own: another's would be a forgery
            raise OSError(errno.EPERM, "not a file of yours", path)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def stderr_tail(path: str | None, lines: int = 5, max_bytes: int = 4096) -> str | None:
    if not path:
        return None
    try:
        with open_log_for_reading(path) as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - max_bytes))
            data = f.read(max_bytes).decode(errors="replace")
    except (OSError, ValueError):  # unreadable, or a path no file can have (a NUL byte)
        return None
    return "\n".join(deque(data.splitlines(), maxlen=lines)) or None


def with_tails(jobs: list[JobInfo], only_failed: bool = True) -> list[JobInfo]:
    """Fill in the stderr tails (file I/O: call it off the event loop)."""
    for job in jobs:
        if not only_failed or job.status in SHOWN_FOR:
            job.stderr_tail = stderr_tail(job.stderr_path)
    return jobs


def remove_logs(*paths: str) -> list[str]:
    """Delete a completed attempt's log files (Torc's delete_on_success); return why any could
    not be. Only our own regular files, named in a directory that passes the checks the logs
    were opened under; one already gone is not a problem."""
    problems = []
    for path in dict.fromkeys(p for p in paths if p):
        name = os.path.basename(path)
        try:
            fd = open_directory(os.path.dirname(path))
        except FileNotFoundError:
            continue
        except OSError as e:
            problems.append(f"{path}: {e.strerror}")
            continue
        try:
            check_log_directory(os.fstat(fd), path)
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
                raise PermissionError(errno.EPERM, "not this user's regular file; left in place", path)
            os.unlink(name, dir_fd=fd)
        except FileNotFoundError:
            pass
        except OSError as e:
            problems.append(f"{path}: {e.strerror}")
        finally:
            os.close(fd)
    return problems
