"""Log directories kept open between jobs (processes.LogDirectories): used again only while the
path still leads to the very directory that was checked and it still passes the check; looked
at whole again after a second. On a fake clock."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import run_as

from torcd.services.processes import LogDirectories, log_files


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def inode(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


@pytest.fixture
def kept():
    dirs = LogDirectories(Clock())
    yield dirs
    dirs.close()


def test_a_directory_is_checked_once_and_kept(tmp_path, kept):
    out = tmp_path / "output"
    fd = kept.get(str(out))  # made, as a fresh open makes it
    assert out.is_dir() and kept.get(str(out)) == fd
    with log_files(str(out / "a.o"), str(out / "a.e"), kept) as (o, e):
        os.write(o, b"out\n")
        os.write(e, b"err\n")
    assert (out / "a.o").read_text() == "out\n" and (out / "a.e").read_text() == "err\n"
    assert kept.get(str(out)) == fd  # still open: log_files never closes what is kept


def test_a_directory_replaced_under_the_same_path_is_opened_afresh(tmp_path, kept):
    out = tmp_path / "output"
    first = inode(kept.get(str(out)))
    out.rename(tmp_path / "old")
    out.mkdir()
    with log_files(str(out / "a.o"), str(out / "a.o"), kept):
        pass
    assert (out / "a.o").exists() and not (tmp_path / "old" / "a.o").exists()
    assert inode(kept.get(str(out))) != first


def test_a_directory_removed_is_made_again(tmp_path, kept):
    out = tmp_path / "output"
    kept.get(str(out))
    out.rmdir()
    kept.get(str(out))
    assert out.is_dir()


def test_a_symlink_put_where_the_kept_directory_was_is_refused(tmp_path, kept):
    out = tmp_path / "output"
    kept.get(str(out))
    out.rename(tmp_path / "real")
    out.symlink_to(tmp_path / "real")
    with pytest.raises(PermissionError, match="symbolic link"):
        kept.get(str(out))


def test_a_kept_directory_made_writable_by_others_is_refused_at_once(tmp_path, kept):
    out = tmp_path / "output"
    kept.get(str(out))
    out.chmod(0o777)
    with pytest.raises(PermissionError, match="writable by others"):
        kept.get(str(out))


def test_the_directories_above_are_looked_at_again_after_a_second(tmp_path):
    clock = Clock()
    kept = LogDirectories(clock)
    above = tmp_path / "project"
    out = above / "output"
    fd = kept.get(str(out))
    above.chmod(0o777)  # anyone may now swap output/ (no sticky bit)
    clock.now += LogDirectories.KEEP_S / 2
    assert kept.get(str(out)) == fd  # the same checked directory, within its second
    clock.now += LogDirectories.KEEP_S
    with pytest.raises(PermissionError, match="can be written by anyone"):
        kept.get(str(out))
    above.chmod(0o755)
    kept.close()


def test_at_most_so_many_are_kept(tmp_path, kept):
    fds = [kept.get(str(tmp_path / str(k))) for k in range(LogDirectories.MOST + 5)]
    assert len(set(fds)) >= LogDirectories.MOST  # the oldest were closed to make room
    assert kept.get(str(tmp_path / str(LogDirectories.MOST + 4))) == fds[-1]


def test_another_user_swapping_a_kept_directory_gets_no_logs(shared_tmp, kept, other_user):
    """A group-writable project directory (allowed): a member renames our output/ away and makes
    their own. The kept descriptor is not used for the path any more; their directory is refused."""
    project = Path(shared_tmp) / "project"
    project.mkdir()
    os.chown(project, os.getuid(), other_user.pw_gid)
    project.chmod(0o775)
    out = project / "output"
    kept.get(str(out))

    def swap() -> None:
        os.rename(out, project / "stolen")
        os.mkdir(out, 0o777)
        os.chmod(out, 0o777)

    run_as(other_user, swap)
    with pytest.raises(PermissionError, match=f"owned by user {other_user.pw_name}"):
        kept.get(str(out))
    assert not list(out.iterdir())
