"""The shepherd: the parent of a daemon's job shells, in a process of its own.

`python -m torcd.shepherd FD EXIT_LOG` serves the daemon on the Unix stream socket FD: it starts
each job's `bash -c COMMAND` (in the job's directory, with the job's log descriptors, which
come with the request), and as each ends it appends `JOB RUN ATTEMPT RC` to the exit log before
reaping it, then tells the daemon. It outlives the daemon: after a crash it goes on recording
the jobs it started until the last has ended, and a restarted daemon reads their statuses from
the exit log.

One parent for all jobs instead of a recording shell around each: a job costs one process, and
the daemon never waits for a fork. What a job does to its own shell (`trap ... EXIT`, `exec`,
`kill $$`) cannot take its record away: the record is kept by its parent.

A job can also be sent ahead, while every slot is busy: it waits here and starts in the place
of the first job to end that held at least its CPUs and memory, before that one is reported, so
a flood of short jobs goes on without a round trip through the daemon between them. The daemon
counts its resources from its start, which it hears before the end whose place it took. While
more wait here, that end is told with the next message (within STARTED_WAIT), as starts are.

Frames both ways are a 4-byte length and a msgpack array:
  daemon → ("spawn", seq, job, run, attempt, command, cwd, base, own, size, ahead), its stdout
           and stderr attached (command, cwd and the environment as bytes: the job's own
           variables `own` over the daemon's, which is the same for every job and comes as one
           msgpack map in `base`, decoded once; `size`: the [cpus, memory] it holds, a place
           another may take when it ends, or nil; `ahead`: wait for such a place)
         | ("withdraw", seq): an ahead job not started yet is dropped
         | ("go", seq): an ahead job not started yet starts now;
  shepherd → ("started", seq, pid, time) | ("failed", seq, errno, strerror, filename)
           | ("withdrawn", seq) | ("exited", pid, waitstatus-as-exit-code, cpu_seconds, time)
(the times are when it spawned the shell, and when it saw the shell had ended).
Only the daemon's own user can reach the socket: it is one end of a socketpair.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import resource
import select
import selectors
import signal
import socket
import struct
import sys
import time
from typing import NamedTuple

import msgspec

HEADER = struct.Struct("!I")
MAX_FRAME = 64 << 20  # a spawn carries the job's environment; far below this
MAX_FDS = 64  # per receive: a frame's two, for as many frames as one read holds
_APPEND = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
# What a job's own `pkill python`, `kill $PPID` or Ctrl-C in a terminal must not do: end the
# process that keeps every job's record. Jobs get each of these back at its default.
_IGNORED = (
    signal.SIGHUP,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGTERM,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGALRM,
    signal.SIGVTALRM,
    signal.SIGPROF,
    signal.SIGXCPU,
)
_DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, *_IGNORED)
# A start is told with the next message (a short job's end, another's start) or within this: one
# message, and one wake-up of the daemon, for a job that ends at once instead of two. So is the
# end of a job whose place another took while more wait here: the daemon has nothing to do yet.
STARTED_WAIT = 0.002
_ENDED = os.WEXITED | os.WNOHANG | os.WNOWAIT
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(tuple).decode
_decode_map = msgspec.msgpack.Decoder(dict[bytes, bytes]).decode


def open_spawn_lock(exit_log: str) -> int:
    """The lock beside the exit log, held shared by a shepherd while it starts a job and taken
    exclusively by a starting daemon."""
    path = os.path.join(os.path.dirname(exit_log), "spawn.lock")
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)


def frame(*fields: object) -> bytes:
    body = _encode(fields)
    return HEADER.pack(len(body)) + body


class Frames:
    """Frames cut from a byte stream, and the descriptors that came with them, in order."""

    def __init__(self) -> None:
        self.buffer = bytearray()  # an unfinished frame: grows in place, read after read
        self.fds: list[int] = []

    def feed(self, data: bytes | bytearray | memoryview, fds: list[int]) -> list[tuple]:
        self.fds.extend(fds)
        if self.buffer:
            self.buffer += data
            data = self.buffer
        out, at, end = [], 0, len(data)
        with memoryview(data) as view:
            while end - at >= HEADER.size:
                (size,) = HEADER.unpack_from(view, at)
                if size > MAX_FRAME:
                    raise ValueError(f"a frame of {size} bytes")
                if end - at - HEADER.size < size:
                    break
                out.append(_decode(view[at + HEADER.size : at + HEADER.size + size]))
                at += HEADER.size + size
        if data is self.buffer:
            del self.buffer[:at]
        elif at < end:
            self.buffer = bytearray(data[at:])
        return out


_RECEIVE_FLAGS = int(socket.MSG_DONTWAIT | socket.MSG_CMSG_CLOEXEC)  # an IntFlag: or-ed once, not per read
_RECEIVE_ANCILLARY = socket.CMSG_SPACE(MAX_FDS * 4)


def receive_with_fds(sock: socket.socket, into: memoryview) -> tuple[memoryview, list[int]]:
    """What the socket holds (read into `into`), and the descriptors that came with it,
    close-on-exec (never passed on to a job; socket.recv_fds does not pass its flags on)."""
    size, ancillary, _, _ = sock.recvmsg_into([into], _RECEIVE_ANCILLARY, _RECEIVE_FLAGS)
    fds: list[int] = []
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.extend(struct.unpack(f"{len(payload) // 4}i", payload[: len(payload) - len(payload) % 4]))
    return into[:size], fds


def exit_code(si_code: int, si_status: int) -> int:
    """A shell's `$?` for a child that ended so: its exit status, or 128 + the signal."""
    return si_status if si_code == os.CLD_EXITED else 128 + si_status


class Shepherd:
    def __init__(self, sock: socket.socket, exit_log: str, bash: str):
        self.sock, self.exit_log, self.bash = sock, exit_log, bash
        self.lock = open_spawn_lock(exit_log)
        self.frames = Frames()
        self.into = memoryview(bytearray(1 << 20))  # read into, every time: no megabyte allocated per read
        self.keys: dict[int, tuple[int, int, int]] = {}  # pid -> its attempt
        self.places: dict[int, tuple[int, int]] = {}  # pid -> what it holds, for an ahead job when it ends
        self.ahead: list[Ahead] = []  # sent ahead, in order, not started yet
        self.daemon_gone = False
        self.base: tuple[bytes, dict] = (b"", {})  # the daemon's environment, as sent and decoded
        self.held: list[bytes] = []  # frames not sent yet (starts, ends of replaced jobs): told with what comes next
        self.held_until = 0.0
        self.hangup = select.poll()  # whether the daemon's end has closed
        self.hangup.register(self.sock, select.POLLRDHUP)

    def serve(self) -> None:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # only to be woken
        sel = selectors.DefaultSelector()
        sel.register(self.sock, selectors.EVENT_READ)
        sel.register(wake_r, selectors.EVENT_READ)
        while not (self.daemon_gone and not self.keys):
            wait = None if not self.held else max(0.0, self.held_until - time.monotonic())
            for key, _ in sel.select(wait):
                if key.fileobj is self.sock:
                    if not self.receive():
                        sel.unregister(self.sock)
                        self.daemon_gone = True
                        self.drop_ahead()
                else:
                    with contextlib.suppress(BlockingIOError):
                        while len(os.read(wake_r, 4096)) == 4096:
                            pass
            self.reap()
            if self.held and time.monotonic() >= self.held_until:
                self.flush()

    def receive(self) -> bool:
        """Start what the daemon asks for; False once it has gone."""
        try:
            data, fds = receive_with_fds(self.sock, self.into)
        except BlockingIOError:
            return True
        except OSError:
            data, fds = memoryview(b""), []
        if not data:
            _close(fds)
            return False
        requests = self.frames.feed(data, fds)
        if not requests:
            return True
        # A request the daemon sent just before it died must not start behind the back of the
        # daemon that follows it, which finds started jobs by looking at the processes: that one
        # takes the lock exclusively before it looks, and after it has, the dead daemon's end
        # of the socket is seen closed here.
        fcntl.flock(self.lock, fcntl.LOCK_SH)
        try:
            closed = self.daemon_closed()
            for request in requests:
                try:
                    if request and request[0] == "withdraw":
                        self.withdraw(request[1])
                        continue
                    if request and request[0] == "go":
                        self.go(request[1], closed)
                        continue
                    self.spawn(request, closed)
                except Exception as e:  # one bad request must not take the others' records with it
                    print(f"torcd.shepherd: request refused: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
                    if len(request) > 1 and isinstance(request[1], int):
                        self.send("failed", request[1], 0, f"the request to start it was refused: {e}", None)
        finally:
            fcntl.flock(self.lock, fcntl.LOCK_UN)
        return True

    def spawn(self, request: tuple, closed: bool) -> None:
        # Each request comes with its two descriptors: taken whatever it holds, or a refused one
        # would hand its own to the next.
        fds, self.frames.fds = self.frames.fds[:2], self.frames.fds[2:]
        try:
            if len(fds) != 2:
                raise ValueError("it came without its two log descriptors")
            out, err = fds
            _, seq, job, run, attempt, command, cwd, base, own, *rest = request
            size, ahead = rest or (None, False)  # none: from a daemon started before jobs were sent ahead
            if base != self.base[0]:
                self.base = (base, _decode_map(base))
            env = {**self.base[1], **own}
            place = None if size is None else (int(size[0]), int(size[1]))
            if ahead and place is None:
                raise ValueError("a job sent ahead must say what it holds")
        except BaseException:
            _close(fds)
            raise
        if closed:
            _close(fds)
            return
        if ahead:
            assert place is not None
            self.ahead.append(Ahead(seq, (job, run, attempt), command, cwd, env, out, err, place))
        else:
            self.start(seq, (job, run, attempt), command, cwd, env, out, err, place)

    def withdraw(self, seq: int) -> None:
        """Drop an ahead job not started yet; one that has started (or failed to) was said so
        before this answer would have been."""
        if job := self.take_ahead(seq):
            job.close()
            self.send("withdrawn", seq)

    def go(self, seq: int, closed: bool) -> None:
        """Start an ahead job not started yet now (the spawn lock held), unless the daemon that
        asked has gone."""
        if (job := self.take_ahead(seq)) and closed:
            job.close()
        elif job:
            self.start(job.seq, job.key, job.command, job.cwd, job.env, job.out, job.err, job.place)

    def take_ahead(self, seq: int) -> Ahead | None:
        for job in self.ahead:
            if job.seq == seq:
                self.ahead.remove(job)
                return job
        return None

    def take_place(self, place: tuple[int, int]) -> bool:
        """Start the first ahead job in the place of a job that has ended, if it fits there (the
        next, if that one cannot start); whether one did. In order: one that does not fit yet
        is passed by none sent after it."""
        while self.ahead and self.ahead[0].place[0] <= place[0] and self.ahead[0].place[1] <= place[1]:
            job = self.ahead.pop(0)
            fcntl.flock(self.lock, fcntl.LOCK_SH)  # as for a request: never behind a next daemon's back
            try:
                if self.daemon_closed():
                    job.close()
                    self.drop_ahead()
                    return False
                if self.start(job.seq, job.key, job.command, job.cwd, job.env, job.out, job.err, job.place):
                    return True
            except Exception as e:  # as for a request: one bad job must not take the others' records
                # (`start` has closed its descriptors)
                print(f"torcd.shepherd: request refused: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
                self.send("failed", job.seq, 0, f"the request to start it was refused: {e}", None)
            finally:
                fcntl.flock(self.lock, fcntl.LOCK_UN)
        return False

    def drop_ahead(self) -> None:
        """The daemon has gone: what it sent ahead never starts (the next one starts it anew)."""
        for job in self.ahead:
            job.close()
        self.ahead.clear()

    def daemon_closed(self) -> bool:
        return any(events & (select.POLLRDHUP | select.POLLHUP) for _, events in self.hangup.poll(0))

    def start(
        self,
        seq: int,
        key: tuple[int, int, int],
        command: bytes,
        cwd: bytes,
        env: dict,
        out: int,
        err: int,
        place: tuple[int, int] | None = None,
    ) -> bool:
        """`bash -c -- COMMAND` in `cwd` (bytes, as the daemon has them: any file name works);
        False if it could not start (and the daemon is told why)."""
        try:
            try:
                os.chdir(cwd)
            except FileNotFoundError:
                raise FileNotFoundError(errno.ENOENT, "working directory not found", os.fsdecode(cwd)) from None
            argv: list[str | bytes] = [self.bash, "-c", "--", command]
            at = time.time()
            pid = os.posix_spawn(
                self.bash,
                argv,
                env,
                file_actions=[(os.POSIX_SPAWN_DUP2, out, 1), (os.POSIX_SPAWN_DUP2, err, 2)],
                setsid=True,
                setsigdef=_DEFAULT_SIGNALS,
                setsigmask=(),
            )
        except OSError as e:
            filename = os.fsdecode(e.filename) if isinstance(e.filename, (str, bytes)) else None
            # Said in the job's stderr log too, where a shell would have said it.
            said = f"torcd: could not start: {e.strerror or e}" + (f" ({filename})" if filename else "")
            with contextlib.suppress(OSError):
                os.write(err, (said + "\n").encode(errors="replace"))
            self.send("failed", seq, e.errno or 0, e.strerror or str(e), filename)
            return False
        except ValueError as e:  # a NUL byte (the daemon checks first; never trust it here)
            self.send("failed", seq, 0, str(e), None)
            return False
        finally:
            os.close(out)
            os.close(err)
            os.chdir("/")
        self.keys[pid] = key
        if place is not None:
            self.places[pid] = place
        self.send("started", seq, pid, at, hold=True)
        return True

    def reap(self) -> None:
        """Record and reap every child that has ended: the record first, so that once a shell is
        gone from the process table its status is in the exit log."""
        while self.keys:  # every child has a key until it is reaped
            try:
                info = os.waitid(os.P_ALL, 0, _ENDED)
            except ChildProcessError:
                return
            if info is None:
                return
            pid, ended = info.si_pid, time.time()
            try:  # what it left running in its group goes with it (the group is still its own)
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            key = self.keys.pop(pid, None)
            if key is not None:
                self.record(key, exit_code(info.si_code, info.si_status))
            place = self.places.pop(pid, None)
            # Before it is reaped: its pid, not reused yet, cannot be the new job's, whose start
            # the daemon hears before this end.
            replaced = place is not None and bool(self.ahead) and not self.daemon_gone and self.take_place(place)
            _, status, usage = os.wait4(pid, 0)
            cpu = usage.ru_utime + usage.ru_stime
            # Its slot is busy again and more wait here: nothing for the daemon to do at once.
            self.send("exited", pid, os.waitstatus_to_exitcode(status), cpu, ended, hold=replaced and bool(self.ahead))

    def record(self, key: tuple[int, int, int], rc: int) -> None:
        # Opened by name each time: the daemon rotates the log, and the line goes to the current one.
        try:
            fd = os.open(self.exit_log, _APPEND, 0o600)
        except OSError:
            return  # the state directory is gone: nobody will read it
        try:
            os.write(fd, f"{key[0]} {key[1]} {key[2]} {rc}\n".encode())
        except OSError:
            pass
        finally:
            os.close(fd)

    def send(self, *fields: object, hold: bool = False) -> None:
        """Tell the daemon; `hold`: with the next message, or within STARTED_WAIT."""
        if self.daemon_gone:
            return
        self.held.append(frame(*fields))
        if not hold:
            self.flush()
        elif len(self.held) == 1:
            self.held_until = time.monotonic() + STARTED_WAIT

    def flush(self) -> None:
        data, self.held = b"".join(self.held), []
        try:
            self.sock.sendall(data)
        except OSError:  # the daemon died: go on recording for the next one
            self.daemon_gone = True
            self.drop_ahead()


def _close(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


class Ahead(NamedTuple):
    """A job sent ahead, waiting for a place."""

    seq: int
    key: tuple[int, int, int]
    command: bytes
    cwd: bytes
    env: dict
    out: int
    err: int
    place: tuple[int, int]

    def close(self) -> None:
        _close([self.out, self.err])


def main(argv: list[str]) -> int:
    """FD EXIT_LOG BASH UMASK NOFILE: the jobs' umask and soft limit on descriptors (-1: as ours)."""
    fd, exit_log, bash, umask, nofile = int(argv[0]), argv[1], argv[2], int(argv[3], 8), int(argv[4])
    if umask >= 0:
        os.umask(umask)
    if nofile >= 0:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # a daemon gone is seen as EPIPE; jobs get the default back
    for sig in _IGNORED:
        signal.signal(sig, signal.SIG_IGN)
    os.chdir("/")
    os.set_inheritable(fd, False)  # jobs get their three descriptors and nothing else of ours
    Shepherd(socket.socket(fileno=fd), exit_log, bash).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
