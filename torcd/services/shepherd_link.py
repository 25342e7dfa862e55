"""The daemon's side of the shepherd (`torcd.shepherd`), the process that starts, records and
reaps its job shells. Started with the first job; a shepherd that dies is replaced at the next."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import fcntl
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable

import msgspec
import structlog

from torcd.services.processes import BASH, WatchedProcess, children_of, is_zombie, unmarked, user_nofile, user_umask
from torcd.shepherd import MAX_FRAME, Frames, frame, open_spawn_lock

_encode = msgspec.msgpack.Encoder().encode
_FS, _FS_ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()

log = structlog.get_logger("torcd.shepherd")

Key = tuple[int, int, int]
# (pid, None, when the shepherd started it) or (None, why it could not start, None)
Reply = Callable[[int | None, OSError | None, float | None], None]


def wait_for_starts_in_flight(exit_log: str) -> None:
    """Until no shepherd of an earlier daemon is starting a job (see `torcd.shepherd`)."""
    try:
        fd = open_spawn_lock(exit_log)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    finally:
        os.close(fd)


def wait_for_records_in_flight(exit_log: str, found: set[int], timeout: float = 10.0) -> set[int]:
    """Until no shepherd writing to `exit_log` holds an ended shell it has not recorded yet: one
    exiting (its memory, and so its environment, already gone: not `found` by the scan) or a
    zombie (it records, then reaps). Then a shell missing from the scan has its line. Returns
    the shells those shepherds hold that are running."""
    me, path = os.getuid(), exit_log.encode()
    shepherds = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}").st_uid != me:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if b"torcd.shepherd" in args and path in args:
            shepherds.append(int(entry))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(
        _ending(child) for shepherd in shepherds for child in children_of(shepherd) if child not in found
    ):
        time.sleep(0.005)
    return {child for shepherd in shepherds for child in children_of(shepherd) if not _ending(child)}


def _ending(pid: int) -> bool:
    """A zombie, or a process whose memory is gone (it is exiting: its command line reads empty,
    where one that cleared its environment still has one)."""
    if is_zombie(pid):
        return True
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return not f.read(1)
    except OSError:
        return False


class ShepherdLost(OSError):
    """The shepherd ended before answering: whether the job started is unknown."""


class Withdrawn(OSError):
    """A job sent ahead was taken back before it started."""


class ShepherdedProcess:
    """A job shell the shepherd started: its exit comes from the shepherd, which reaped it (and
    killed what it left in its group). If the shepherd dies first, `exit_status` (the exit log)
    says how it ended, as for a shell an earlier daemon started."""

    def __init__(self, pid: int, exit_status: Callable[[], int | None]):
        self.pid = pid
        self.returncode: int | None = None
        self.cpu_seconds: float | None = None
        self.ended_at: float | None = None  # when the shepherd saw it had ended
        self._exit_status = exit_status
        self._ended = False
        self._done: asyncio.Future | None = None  # made only for a waiter: most ends are told to `on_end`
        self._follower: asyncio.Future | None = None
        self.on_end: Callable[[], None] | None = None  # told once it has ended, before any waiter

    def exited(self, returncode: int, cpu_seconds: float, at: float) -> None:
        self.returncode, self.cpu_seconds, self.ended_at = returncode, cpu_seconds, at
        self._finish()

    def shepherd_lost(self) -> None:
        """Watch it ourselves, as an adopted shell: a shepherd still alive records it (after
        it ends, before it is reaped), one killed leaves it unrecorded."""
        watched = WatchedProcess(self.pid, self._exit_status)

        async def follow() -> None:
            self.returncode = await watched.wait()
            self._finish()

        self._follower = asyncio.ensure_future(follow())

    def _finish(self) -> None:
        if self._ended:
            return
        self._ended = True
        if self._done is not None:
            self._done.set_result(None)
        if self.on_end is not None:
            self.on_end()

    async def wait(self) -> int | None:
        if not self._ended:
            if self._done is None:
                self._done = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._done)
        return self.returncode


class ShepherdLink:
    def __init__(self, exit_log: str):
        self.exit_log = exit_log
        self._proc: subprocess.Popen | None = None
        self._sock: socket.socket | None = None
        self._frames = Frames()
        self._seq = 0
        self._replies: dict[int, Reply] = {}  # seq -> who hears the answer
        self._running: dict[int, ShepherdedProcess] = {}  # pid -> process
        self._outgoing: collections.deque[tuple[bytes, list[int]]] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._base: dict[str, str] | None = None
        self._base_encoded = b""

    def spawn(
        self,
        key: Key,
        command: str,
        cwd: str,
        base: dict[str, str],
        own: dict[str, str],
        out: int,
        err: int,
        reply: Reply,
        size: tuple[int, int] | None = None,
        ahead: bool = False,
    ) -> int:
        """Ask for `bash -c COMMAND` in `cwd` with these log descriptors (sent with the request,
        or duplicated until it goes), in the environment `base` (the same dict, never changed,
        for every job: encoded once here, decoded once by the shepherd) with `own` over it;
        `reply` hears the pid, or why it could not start. `size`: the CPUs and memory it holds,
        a place a job sent `ahead` may take when it ends (see `torcd.shepherd`).

        Returns the request's number, to withdraw it by."""
        if base is not self._base:
            self._base_encoded = _encode({os.fsencode(k): os.fsencode(v) for k, v in base.items()})
            self._base = base
        data = frame(
            "spawn",
            self._seq + 1,
            *key,
            os.fsencode(command),
            os.fsencode(cwd),
            self._base_encoded,
            {k.encode(_FS, _FS_ERRORS): v.encode(_FS, _FS_ERRORS) for k, v in own.items()},  # os.fsencode's, inline
            size,
            ahead,
        )
        if len(data) > MAX_FRAME:
            raise OSError(errno.E2BIG, f"its command and environment are {len(data):,} bytes, over {MAX_FRAME:,}")
        if self._sock is None:
            self._start()
        self._seq += 1
        if self._outgoing:
            fds = [os.dup(out)]
            try:
                fds.append(os.dup(err))
            except OSError:
                os.close(fds[0])
                raise
            self._replies[self._seq] = reply
            self._outgoing.append((data, fds))
        else:
            seq = self._seq
            self._replies[seq] = reply
            self._send(data, [out, err], lambda e: self._replies.pop(seq)(None, e, None))  # this job does not start
        return self._seq

    def withdraw(self, seq: int) -> None:
        """Take back a job sent ahead: its reply says it started, failed, or was withdrawn."""
        self._tell("withdraw", seq)

    def go(self, seq: int) -> None:
        """Start a job sent ahead now, unless it has started (or failed to) already."""
        self._tell("go", seq)

    def holds(self, proc: object) -> bool:
        """Whether `proc` is a shell of the shepherd now running: its end is reported here."""
        return isinstance(proc, ShepherdedProcess) and self._running.get(proc.pid) is proc

    def _tell(self, what: str, seq: int) -> None:
        if self._sock is None or self._loop is None or seq not in self._replies:
            return
        data = frame(what, seq)
        if self._outgoing:
            self._outgoing.append((data, []))
            return
        # A failure is as if it had died: every reply is answered, once the caller is done.
        sock, loop = self._sock, self._loop
        self._send(data, [], lambda e: loop.call_soon(self._lost_if_still, sock))

    def _lost_if_still(self, sock: socket.socket) -> None:
        if self._sock is sock:
            self._lost()

    def open(self) -> None:
        """Start the shepherd now, before the first job needs it (its interpreter takes tens of
        milliseconds to start)."""
        if self._sock is None:
            self._start()

    def process(self, pid: int, exit_status: Callable[[], int | None]) -> ShepherdedProcess:
        """The started shell `pid`, whose end the shepherd will report."""
        proc = ShepherdedProcess(pid, exit_status)
        self._running[pid] = proc
        return proc

    def close(self) -> None:
        """Stop asking: the shepherd ends once its last job has (the daemon stopped them)."""
        if self._sock is not None:
            self._drop()

    def _start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        umask, nofile = user_umask(), user_nofile()
        args = [
            sys.executable,
            "-m",
            "torcd.shepherd",
            str(theirs.fileno()),
            self.exit_log,
            BASH,
            "-1" if umask is None else f"{umask:o}",
            str(nofile),
        ]
        try:
            proc = subprocess.Popen(
                args,
                env=unmarked(dict(os.environ)),
                stdin=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                cwd="/",
                start_new_session=True,  # a Ctrl-C or a kill of the daemon's group leaves it recording
            )
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        self._proc = proc
        ours.setblocking(False)
        self._sock = ours
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(ours, self._readable)
        log.debug("shepherd_started", pid=self._proc.pid)

    def _send(self, data: bytes, fds: list[int], failed: Callable[[OSError], object]) -> None:
        """Send now what the socket takes; queue the rest (with copies of descriptors not yet
        sent). `failed` hears an error other than a full socket or a dead shepherd (out of
        kernel memory, say)."""
        assert self._sock is not None and self._loop is not None
        try:
            sent = socket.send_fds(self._sock, [data], fds)
        except BlockingIOError:
            sent = 0
        except (BrokenPipeError, ConnectionResetError):  # it died; its end is read as EOF
            return
        except OSError as e:
            failed(e)
            return
        if sent < len(data):
            self._outgoing.append((data[sent:], [] if sent else [os.dup(fd) for fd in fds]))
            self._loop.add_writer(self._sock, self._writable)

    def _writable(self) -> None:
        assert self._sock is not None and self._loop is not None
        while self._outgoing:
            data, fds = self._outgoing[0]
            try:
                sent = socket.send_fds(self._sock, [data], fds)
            except BlockingIOError:
                return  # still full: the writer stays armed
            except OSError:  # whatever it is, this link is done: as if the shepherd had died
                self._lost()
                return
            self._close(fds)  # they went with the first byte
            if sent < len(data):
                self._outgoing[0] = (data[sent:], [])
                return
            self._outgoing.popleft()
        self._loop.remove_writer(self._sock)

    def _readable(self) -> None:
        assert self._sock is not None
        try:
            data = self._sock.recv(1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._lost()
            return
        for message in self._frames.feed(data, []):
            try:
                self._handle(message)
            except Exception:  # a bug in what one message set off must not cost the others
                log.exception("shepherd_message_failed", kind=message[0] if message else None)

    def _handle(self, message: tuple) -> None:
        kind = message[0]
        if kind == "exited":
            _, pid, returncode, cpu, at = message
            proc = self._running.pop(pid, None)
            if proc is not None:
                proc.exited(returncode, cpu, at)
        elif kind == "started":
            _, seq, pid, at = message
            self._replies.pop(seq)(pid, None, at)
        elif kind == "withdrawn":
            self._replies.pop(message[1])(None, Withdrawn(0, "withdrawn"), None)
        elif kind == "failed":
            _, seq, code, text, filename = message
            error = OSError(code, text, filename) if filename else OSError(code, text)
            self._replies.pop(seq)(None, error, None)

    def _lost(self) -> None:
        """The shepherd died (killed): its shells are watched here, ending unrecorded; what it was
        asked to start and did not answer may have started (found by the caller)."""
        log.warning("shepherd_lost", pid=self._proc.pid if self._proc else None)
        replies, running = self._replies, self._running
        self._drop()
        # One still alive (a send that failed) may be starting a job: done before anyone looks.
        wait_for_starts_in_flight(self.exit_log)
        for proc in running.values():
            proc.shepherd_lost()
        lost = ShepherdLost(0, "the process that starts jobs died before saying whether this one started")
        for reply in replies.values():
            try:
                reply(None, lost, None)
            except Exception:  # one job's bookkeeping must not leave the others unanswered
                log.exception("shepherd_reply_failed")

    def _drop(self) -> None:
        assert self._loop is not None and self._sock is not None
        self._loop.remove_reader(self._sock)
        self._loop.remove_writer(self._sock)
        self._sock.close()
        self._sock = None
        for _, fds in self._outgoing:
            self._close(fds)
        self._outgoing.clear()
        self._replies, self._running = {}, {}
        self._frames = Frames()
        if self._proc is not None:
            self._reap_when_ended(self._proc)
            self._proc = None

    def _reap_when_ended(self, proc: subprocess.Popen) -> None:
        """It ends after its last job; reap it then (a daemon that exits first leaves it to init)."""
        assert self._loop is not None
        loop = self._loop
        try:
            fd = os.pidfd_open(proc.pid)
        except ProcessLookupError:
            proc.poll()
            return

        def ended() -> None:
            loop.remove_reader(fd)
            os.close(fd)
            proc.poll()

        loop.add_reader(fd, ended)

    @staticmethod
    def _close(fds: list[int]) -> None:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
