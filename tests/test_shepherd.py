"""The shepherd process (`torcd.shepherd`) spoken to directly, as the daemon does: one end of a
socketpair, spawn requests with their log descriptors, and the messages that come back."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import msgspec
import pytest

from torcd.shepherd import STARTED_WAIT, Frames, frame

BASE = {b"PATH": os.environ["PATH"].encode(), b"SHARED": b"daemon"}


class Shepherd:
    def __init__(self, tmp):
        self.tmp = tmp
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torcd.shepherd",
                str(theirs.fileno()),
                str(tmp / "exit.log"),
                "/bin/bash",
                "-1",
                "-1",
            ],
            pass_fds=(theirs.fileno(),),
            cwd="/",
            start_new_session=True,
        )
        theirs.close()
        self.frames = Frames()
        self.seq = 0

    def spawn(
        self,
        command: str,
        own: dict[bytes, bytes] | None = None,
        base: dict[bytes, bytes] = BASE,
        size: tuple[int, int] | None = (1, 0),
        ahead: bool = False,
    ) -> int:
        self.seq += 1
        out = os.open(self.tmp / f"{self.seq}.o", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        err = os.open(self.tmp / f"{self.seq}.e", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        encoded = msgspec.msgpack.encode(base)
        request = frame(
            "spawn", self.seq, 7, 1, self.seq, command.encode(), str(self.tmp).encode(), encoded, own or {}, size, ahead
        )
        socket.send_fds(self.sock, [request], [out, err])
        os.close(out)
        os.close(err)
        return self.seq

    def withdraw(self, seq: int) -> None:
        self.sock.sendall(frame("withdraw", seq))

    def messages(self, until, timeout: float = 20.0) -> list[tuple[float, tuple]]:
        """(when it arrived, message), read until `until(messages)` holds."""
        got: list[tuple[float, tuple]] = []
        self.sock.settimeout(timeout)
        while not until([m for _, m in got]):
            data = self.sock.recv(1 << 16)
            assert data, "the shepherd closed its end"
            now = time.time()
            got += [(now, m) for m in self.frames.feed(data, [])]
        return got

    def close(self):
        self.sock.close()
        self.proc.wait(30)


@pytest.fixture
def shepherd(tmp_path):
    s = Shepherd(tmp_path)
    yield s
    s.close()


def _exited(messages, n=1):
    return sum(m[0] == "exited" for m in messages) >= n


def test_a_short_job_is_told_started_then_exited_with_the_same_pid(shepherd):
    shepherd.spawn("exit 3")
    got = [m for _, m in shepherd.messages(_exited)]
    assert [m[0] for m in got] == ["started", "exited"]
    (_, seq, pid, at), (_, ended_pid, rc, cpu, ended) = got
    assert seq == 1 and ended_pid == pid and rc == 3 and ended >= at and cpu >= 0
    assert (shepherd.tmp / "exit.log").read_text() == "7 1 1 3\n"


def test_the_start_of_a_long_job_is_told_while_it_runs_not_held_until_it_ends(shepherd):
    shepherd.spawn("sleep 3")
    got = shepherd.messages(_exited)
    (told, started), (ended, exited) = got
    assert started[0] == "started" and exited[0] == "exited"
    assert ended - told > 1.5  # held a few milliseconds at most, never until the end


def test_a_daemon_gone_while_its_job_runs_leaves_the_shepherd_recording_then_ending(shepherd):
    shepherd.spawn("touch running; sleep 0.5")
    deadline = time.monotonic() + 20
    while not (shepherd.tmp / "running").exists():
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.01)
    shepherd.sock.close()  # the daemon died: what is left to tell goes nowhere
    assert shepherd.proc.wait(20) == 0
    assert (shepherd.tmp / "exit.log").read_text() == "7 1 1 0\n"


def test_frames_are_cut_the_same_however_the_stream_is_read():
    messages = [("spawn", i, b"x" * (i * 997)) for i in range(40)]
    stream = b"".join(frame(*m) for m in messages)
    for piece in (1, 3, 4, 5, 777, 65536, len(stream)):
        frames, got = Frames(), []
        for at in range(0, len(stream), piece):
            got += frames.feed(memoryview(bytearray(stream[at : at + piece])), [])
        assert got == messages and not frames.buffer, piece


def test_a_job_sees_the_daemons_environment_under_its_own(shepherd):
    shepherd.spawn("echo $SHARED $OWN", own={b"SHARED": b"job", b"OWN": b"mine"})
    shepherd.spawn("echo $SHARED $OWN")
    shepherd.spawn("echo $SHARED", base={**BASE, b"SHARED": b"changed"})  # a new base is decoded anew
    shepherd.messages(lambda ms: _exited(ms, 3))
    assert [(shepherd.tmp / f"{k}.o").read_text() for k in (1, 2, 3)] == ["job mine\n", "daemon\n", "changed\n"]


def test_a_malformed_request_is_refused_and_the_next_one_still_starts(shepherd):
    out = os.open(shepherd.tmp / "bad.o", os.O_WRONLY | os.O_CREAT, 0o600)
    socket.send_fds(shepherd.sock, [frame("spawn", 1, "not enough fields")], [out, out])
    os.close(out)
    shepherd.seq = 1
    shepherd.spawn("echo ok")
    got = [m for _, m in shepherd.messages(_exited)]
    assert [m[:2] for m in got] == [("failed", 1), ("started", 2), ("exited", got[2][1])]
    # The refused request's descriptors went with it: the next job writes to its own log.
    assert (shepherd.tmp / "2.o").read_text() == "ok\n" and (shepherd.tmp / "bad.o").read_text() == ""


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_a_job_sent_ahead_starts_in_the_place_of_the_first_to_end_and_is_told_before_that_end(shepherd):
    first = shepherd.spawn("sleep 0.3", size=(2, 100))
    ahead = shepherd.spawn("echo ahead", size=(2, 100), ahead=True)
    got = [m for _, m in shepherd.messages(lambda ms: _exited(ms, 2))]
    assert [m[:2] for m in got[:3]] == [("started", first), ("started", ahead), ("exited", got[0][2])]
    (_, _, first_pid, _), (_, _, ahead_pid, ahead_at), (_, _, _, _, first_ended), (_, ended_pid, *_) = got
    assert ahead_pid not in (first_pid, None) and ended_pid == ahead_pid
    assert ahead_at >= first_ended  # in its place, once it had ended
    shepherd.withdraw(ahead)  # too late: it has started, and that was said; nothing more is
    shepherd.spawn("true")
    rest = [m for _, m in shepherd.messages(_exited)]
    assert [m[0] for m in rest] == ["started", "exited"]
    assert (shepherd.tmp / f"{ahead}.o").read_text() == "ahead\n"


def test_a_job_sent_ahead_waits_for_a_place_as_big_and_is_dropped_when_withdrawn(shepherd):
    shepherd.spawn("exit 0", size=(1, 0))
    shepherd.spawn("exit 0", size=(4, 0))  # CPUs enough, memory not
    shepherd.messages(lambda ms: _exited(ms, 2))
    baseline = _open_fds(shepherd.proc.pid)
    ahead = shepherd.spawn("echo ran", size=(2, 1 << 30), ahead=True)
    shepherd.spawn("exit 0", size=(2, 1 << 29))  # ends, too small a place for it
    shepherd.messages(_exited)
    assert _open_fds(shepherd.proc.pid) == baseline + 2  # it waits, with its two logs
    shepherd.withdraw(ahead)
    assert [m for _, m in shepherd.messages(lambda ms: ms)] == [("withdrawn", ahead)]
    assert _open_fds(shepherd.proc.pid) == baseline and (shepherd.tmp / f"{ahead}.o").read_text() == ""


def test_a_job_sent_ahead_never_starts_once_the_daemon_has_gone(shepherd):
    shepherd.spawn("sleep 0.5", size=(1, 0))
    shepherd.spawn("touch ran", size=(1, 0), ahead=True)
    shepherd.messages(lambda ms: ms)  # the first has started
    shepherd.sock.close()
    assert shepherd.proc.wait(20) == 0
    assert not (shepherd.tmp / "ran").exists()
    assert (shepherd.tmp / "exit.log").read_text() == "7 1 1 0\n"


def test_a_job_sent_ahead_without_saying_what_it_holds_is_refused(shepherd):
    seq = shepherd.spawn("touch ran", size=None, ahead=True)
    assert [m[:2] for _, m in shepherd.messages(lambda ms: ms)] == [("failed", seq)]
    assert not (shepherd.tmp / "ran").exists()


def test_a_job_sent_ahead_told_to_go_starts_at_once(shepherd):
    shepherd.spawn("sleep 5", size=(1, 0))
    ahead = shepherd.spawn("echo went", size=(1, 0), ahead=True)
    shepherd.sock.sendall(frame("go", ahead))
    got = [m for _, m in shepherd.messages(_exited)]
    assert [m[:2] for m in got] == [("started", 1), ("started", ahead), ("exited", got[1][2])]  # before the first
    assert (shepherd.tmp / f"{ahead}.o").read_text() == "went\n"
    shepherd.sock.sendall(frame("go", ahead))  # started already: nothing more is said
    shepherd.spawn("true")
    assert [m[0] for _, m in shepherd.messages(lambda ms: _exited(ms, 1))] == ["started", "exited"]


def test_a_request_from_a_daemon_that_sends_nothing_ahead_still_starts(shepherd):
    old = frame("spawn", 1, 7, 1, 1, b"echo old", str(shepherd.tmp).encode(), msgspec.msgpack.encode(BASE), {})
    out = os.open(shepherd.tmp / "1.o", os.O_WRONLY | os.O_CREAT, 0o600)
    socket.send_fds(shepherd.sock, [old], [out, out])
    os.close(out)
    assert [m[0] for _, m in shepherd.messages(_exited)] == ["started", "exited"]
    assert (shepherd.tmp / "1.o").read_text() == "old\n"


def test_the_end_of_a_job_whose_place_was_taken_is_held_while_more_wait(shepherd):
    first = shepherd.spawn("sleep 0.2", size=(1, 0))
    took = shepherd.spawn("sleep 1", size=(1, 0), ahead=True)
    shepherd.spawn("sleep 1", size=(1, 0), ahead=True)  # still waiting when the first ends
    got = shepherd.messages(_exited)
    (_, started), (_, taken), (told, ended) = got
    assert [started[:2], taken[:2], ended[:2]] == [("started", first), ("started", took), ("exited", started[2])]
    assert told - ended[4] >= STARTED_WAIT  # not sent before its hold ran out: nothing else came


def test_a_job_sent_ahead_that_cannot_start_is_refused_and_the_others_are_still_recorded(shepherd):
    shepherd.spawn("sleep 0.5; exit 5", size=(1, 0))
    first = shepherd.spawn("sleep 0.2", size=(1, 0))
    bad = shepherd.spawn("true", own={b"X": 1}, size=(1, 0), ahead=True)  # not bytes: posix_spawn refuses it
    after = shepherd.spawn("exit 6", size=(1, 0), ahead=True)  # then the next takes the place
    got = [m for _, m in shepherd.messages(lambda ms: _exited(ms, 3))]
    assert ("failed", bad) in [m[:2] for m in got] and ("started", after) in [m[:2] for m in got]
    assert shepherd.proc.poll() is None
    lines = sorted((shepherd.tmp / "exit.log").read_text().splitlines())
    assert lines == ["7 1 1 5", f"7 1 {first} 0", f"7 1 {after} 6"]
