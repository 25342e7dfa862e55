"""Who owns a path, and whether another user could swap or read what we keep there.

Used by the daemon for its socket, state dir and the files in it, and by the client before it
sends anything to a socket: another user on the host must not be able to plant a directory,
a symlink or a fake daemon where we expect ours.
"""

from __future__ import annotations

import os
import pwd
import stat

from torcd.errors import TorcError

PRIVATE_FILE = 0o600


class UnsafePath(TorcError):
    """A path another user owns or can change; the message names it and its owner."""


def owner_name(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _others_can_swap(st: os.stat_result) -> bool:
    """Someone else could rename or replace entries: writable by group or others without the
    sticky bit that keeps them from removing what is not theirs."""
    return bool(st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)) and not st.st_mode & stat.S_ISVTX


def check_shared_dir(path: str, what: str) -> None:
    """A directory we did not make (a socket's parent the user chose, /tmp): it must be ours or
    root's, and nobody else may swap what is in it."""
    st = os.stat(path)
    uid = os.getuid()
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePath(f"{what} {path} is not a directory")
    if st.st_uid not in (uid, 0):
        raise UnsafePath(
            f"{what} {path} belongs to {owner_name(st.st_uid)}, not to you; "
            "another user may have made it to intercept you: remove it or choose another path"
        )
    if _others_can_swap(st) and st.st_uid != uid:
        raise UnsafePath(f"{what} {path} can be changed by other users (mode {stat.S_IMODE(st.st_mode):04o})")


def check_private_dir(path: str, what: str) -> None:
    """A directory only we may write: ours, not a symlink, not writable by group or others."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise UnsafePath(f"{what} {path} is a symbolic link; refusing to follow it")
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePath(f"{what} {path} is not a directory")
    if st.st_uid != os.getuid():
        raise UnsafePath(
            f"{what} {path} belongs to {owner_name(st.st_uid)}, not to you; refusing to trust what is in it"
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafePath(
            f"{what} {path} can be written by other users (mode {stat.S_IMODE(st.st_mode):04o}); `chmod go-w` it"
        )


def make_private_dir(path: str, what: str) -> bool:
    """Make `path` 0700 if it does not exist (True), else check that it is private (False).
    Only a directory made here is restricted: one the user made keeps its mode."""
    parent = os.path.dirname(path)
    if parent and not os.path.isdir(parent):
        os.makedirs(parent, exist_ok=True)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        check_private_dir(path, what)
        return False
    os.chmod(path, 0o700)  # whatever the umask
    return True


def open_private_file(path: str, flags: int = os.O_RDWR, what: str = "file") -> int:
    """Open (creating it 0600) a file of ours: never through a symlink, never one another user
    owns; an existing one readable by others is made private."""
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_FILE)
    except OSError as e:
        if os.path.islink(path):
            raise UnsafePath(f"{what} {path} is a symbolic link; refusing to follow it") from None
        raise UnsafePath(f"cannot open {what} {path}: {e.strerror}") from None
    st = os.fstat(fd)
    if st.st_uid != os.getuid() or not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise UnsafePath(f"{what} {path} belongs to {owner_name(st.st_uid)}, not to you")
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.fchmod(fd, PRIVATE_FILE)
    return fd


def check_socket(path: str) -> None:
    """Before a client sends anything: the socket and its directory must be the user's."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return  # nothing to talk to; connecting says so
    if not stat.S_ISSOCK(st.st_mode):
        raise UnsafePath(f"{path} is not a socket")
    if st.st_uid != os.getuid():
        raise UnsafePath(
            f"the socket {path} belongs to {owner_name(st.st_uid)}, not to you; refusing to send anything to it"
        )
    check_shared_dir(os.path.dirname(path) or ".", "the socket's directory")
