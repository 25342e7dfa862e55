"""Opening a process's log files safely: the directory made if missing, checked as ours and
writable by no one else, with nothing above it another user could swap; the files opened
relative to it, never through a symlink, never a FIFO or device, never another's file."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import pwd
import stat
from collections.abc import Iterator

# O_NONBLOCK: a FIFO planted at a log's name fails at once (ENXIO) instead of hanging the open.
_APPEND = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def open_log_directory(path: str) -> int:
    """A descriptor of the log directory `path`, made (with its parents) if missing, or OSError.

    Logs are then opened relative to this descriptor, so what was checked is what is written
    to, however the path above it is renamed or swapped later. The directory must be ours and
    writable by no one else (or sticky): then no one else can plant a name in it."""
    try:
        fd = os.open(path, _DIRECTORY)
    except FileNotFoundError:  # never made, or removed since (a user cleaning output/ between runs)
        os.makedirs(path, 0o755, exist_ok=True)
        fd = open_directory(path)
    except OSError as e:
        raise _not_a_directory(path, e) from None
    try:
        check_log_directory(os.fstat(fd), path)
        _check_above(path)
    except OSError:
        os.close(fd)
        raise
    return fd


def _check_above(path: str) -> None:
    """Refuse a layout where another user can swap a directory above the logs at will: one they
    own (root's aside), or one anyone may write without the sticky bit. (A group-writable
    project directory is allowed: what a group member swaps in there is refused above, being
    theirs, or only receives logs that stay the user's own files.)"""
    for above in _above(path) if os.path.isabs(path) else _directories_above(path):
        st = os.stat(above)
        if st.st_uid not in (os.getuid(), 0):
            raise PermissionError(
                errno.EPERM,
                f"a directory above the logs is owned by {_user_name(st.st_uid)}, "
                "who could swap the log directory for one of theirs",
                above,
            )
        if st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX:
            raise PermissionError(
                errno.EPERM,
                f"a directory above the logs can be written by anyone (mode "
                f"{st.st_mode & 0o7777:04o}, no sticky bit), who could swap the log directory; "
                "chmod o-w",
                above,
            )


def _directories_above(path: str) -> tuple[str, ...]:
    """The names of the directories above `path`, nearest first, to the root: "/", or "//",
    which POSIX keeps apart and which is its own parent too."""
    above = [os.path.dirname(os.path.abspath(path))]
    while (up := os.path.dirname(above[-1])) != above[-1]:
        above.append(up)
    return tuple(above)


# Names only, for absolute paths (the same whatever the working directory): each is stat-ed every time.
_above = functools.lru_cache(maxsize=256)(_directories_above)


def open_directory(path: str) -> int:
    """A descriptor of the directory `path`, never through a symlink (OSError saying so)."""
    try:
        return os.open(path, _DIRECTORY)
    except OSError as e:
        raise _not_a_directory(path, e) from None


def _not_a_directory(path: str, e: OSError) -> OSError:
    if e.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(path):
        return PermissionError(
            errno.EPERM, "log directory is a symbolic link (another user could redirect the logs)", path
        )
    return e


def check_log_directory(st: os.stat_result, path: str) -> None:
    if st.st_uid != os.getuid():
        raise PermissionError(
            errno.EPERM,
            f"log directory owned by {_user_name(st.st_uid)}, not by this user (another user could redirect the logs)",
            path,
        )
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        raise PermissionError(
            errno.EPERM,
            f"log directory writable by others (mode {st.st_mode & 0o7777:04o}, "
            "no sticky bit): another user could redirect the logs; chmod go-w",
            path,
        )


def open_log(dir_fd: int, name: str, path: str) -> int:
    """Open (append, creating it) the log `name` in a checked directory: never through a
    symlink, never a FIFO or device, never a file someone else made (in a sticky directory)."""
    try:
        fd = os.open(name, _APPEND, 0o666, dir_fd=dir_fd)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise PermissionError(errno.EPERM, "log file is a symbolic link; refusing to follow it", path) from None
        if e.errno == errno.ENXIO:
            raise PermissionError(errno.EPERM, "log file is a FIFO, not a regular file", path) from None
        raise OSError(e.errno, e.strerror, path) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
        os.close(fd)
        what = "not a regular file" if not stat.S_ISREG(st.st_mode) else f"owned by {_user_name(st.st_uid)}"
        raise PermissionError(errno.EPERM, f"log file is {what}; refusing to write to it", path)
    fcntl.fcntl(fd, fcntl.F_SETFL, os.O_APPEND)  # blocking again (one call: no other status flag was set)
    return fd


def _user_name(uid: int) -> str:
    try:
        return f"user {pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


@contextlib.contextmanager
def log_files(out_path: str, err_path: str) -> Iterator[tuple[int, int]]:
    """Open (append) a process's stdout and stderr files, making their directory if needed; the
    descriptors are handed to the process, which never opens its logs by name.

    Plain descriptors: they only go to the child, and a file object per job costs more. A path
    of "" is not kept (/dev/null); the same path twice is one file for both (Torc's combined).
    """
    opened: list[int] = []
    dirs: dict[str, int] = {}
    try:
        for path in dict.fromkeys((out_path, err_path)):
            if not path:
                opened.append(os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC))
                continue
            directory = os.path.dirname(path)
            if directory not in dirs:
                dirs[directory] = open_log_directory(directory)
            opened.append(open_log(dirs[directory], os.path.basename(path), path))
        for fd in dirs.values():
            os.close(fd)
        dirs.clear()
        yield opened[0], opened[-1]
    finally:
        for fd in (*dirs.values(), *opened):
            os.close(fd)
