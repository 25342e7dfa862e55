"""Writing the plot files: the one part of `torcd.plots` that does I/O, shared by the daemon and
`torcctl reports plot-resources`. The directory is opened once, without following a symbolic
link, and checked; each file is written under a temporary name beside it and renamed into place
relative to that descriptor, so a symbolic link planted at a file's name is replaced, never
followed, and a reader never sees half a file."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Mapping

from torcd.errors import TorcError
from torcd.ownership import owner_name

_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class PlotDirectoryError(TorcError):
    """The plots' directory cannot be used; the message names it and why."""


def open_plot_directory(path: str) -> int:
    """A descriptor of the directory `path`, made (with its parents) if missing: never a symbolic
    link, the user's own, writable by no one else (unless sticky)."""
    try:
        os.makedirs(path, 0o755, exist_ok=True)
    except FileExistsError:
        pass  # a file, or a symbolic link to nothing: the open below says which
    except OSError as e:
        raise PlotDirectoryError(f"cannot make {path}: {e.strerror}") from None
    try:
        fd = os.open(path, _DIRECTORY)
    except OSError as e:
        if os.path.islink(path):
            raise PlotDirectoryError(f"{path} is a symbolic link; refusing to follow it") from None
        if e.errno == errno.ENOTDIR:
            raise PlotDirectoryError(f"{path} is not a directory") from None
        raise PlotDirectoryError(f"cannot open {path}: {e.strerror}") from None
    st = os.fstat(fd)
    if st.st_uid != os.getuid():
        os.close(fd)
        raise PlotDirectoryError(f"{path} belongs to {owner_name(st.st_uid)}, not to you")
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        os.close(fd)
        raise PlotDirectoryError(f"{path} can be written by other users (mode {stat.S_IMODE(st.st_mode):04o})")
    return fd


def write_plot_files(path: str, files: Mapping[str, bytes | str]) -> list[str]:
    """Write each name -> content into the directory `path`; the paths written."""
    fd = open_plot_directory(path)
    try:
        for name, content in files.items():
            _replace(fd, name, content.encode() if isinstance(content, str) else content, path)
    finally:
        os.close(fd)
    return [os.path.join(path, name) for name in files]


def _replace(dir_fd: int, name: str, data: bytes, path: str) -> None:
    tmp = f".{name}.{os.getpid()}.tmp"
    try:
        out = os.open(tmp, _NEW_FILE, 0o644, dir_fd=dir_fd)
    except FileExistsError:  # left by a writer that died, or planted: unlinking never follows a link
        os.unlink(tmp, dir_fd=dir_fd)
        out = os.open(tmp, _NEW_FILE, 0o644, dir_fd=dir_fd)
    try:
        with os.fdopen(out, "wb") as f:
            f.write(data)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise PlotDirectoryError(f"cannot write {os.path.join(path, name)}: {e.strerror}") from None
