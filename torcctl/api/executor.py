"""`torcctl.Executor`: a `concurrent.futures.Executor` whose calls run as jobs of one workflow.

    with Executor(resources={"memory": "2g"}, failure_handler=[{"exit_codes": [1], "max_retries": 2}]) as ex:
        results = list(ex.map(simulate, params))
        summary = ex.submit(aggregate, *[ex.submit(simulate, p) for p in params]).result()

Each call is a job: its resources, failure handler, retries, logs, `recover` and Slurm
allocations apply as to any job, and `torcctl jobs list WF` shows it. The workflow is created
with the first calls and grows as more are submitted (`workflows.add_jobs`), in batches: calls
submitted within `batch_delay` of each other go in one request. A Future passed as an argument
(top-level, positional or keyword) becomes a dependency: the call's job waits for that job and
reads its result. Functions and arguments travel with cloudpickle through files in `directory`
(which Slurm nodes must see: by default under the current directory); results come back the
same way, never through the daemon. An exception raised in a job is raised by `result()` with
the remote traceback as its cause.

One thread submits batches; one follows the workflow's events (resuming after a daemon restart)
and resolves futures as their jobs end: completed → the result; failed, canceled or terminated
→ the exception. A job parked `pending_failed` keeps its future pending until it is classified.
"""

from __future__ import annotations

import atexit
import concurrent.futures as cf
import functools
import itertools
import os
import shlex
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, ParamSpec, TypeVar

import msgspec

from torcctl.api.calls import Ref, RemoteError, in_path, pack_call, read_result, write_whole
from torcctl.api.client import RECONNECT_FOR, Client
from torcctl.errors import ConnectError, TorcError
from torcd import events as E

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

__all__ = ["Executor", "RemoteError"]

_ENDED_BADLY = ("failed", "canceled", "terminated", "disabled")
# Jobs added already canceled (an argument failed first) say so only in jobs_added.
_SWEEP_ON = (E.JobFailed, E.JobTerminated, E.JobsAdded, E.WorkflowCanceled, *E.IDLE)
_KINDS = frozenset(E.tag_of(k) for k in (E.JobCompleted, *_SWEEP_ON))
MAX_BATCH = 5_000  # calls per request


class _Call:
    __slots__ = ("deps", "future", "job_id", "number")

    def __init__(self, number: int, future: cf.Future[Any], deps: list[int]) -> None:
        self.number, self.future, self.deps = number, future, deps
        self.job_id: int | None = None


class Executor(cf.Executor):
    """Run Python calls as jobs of one torc workflow (see the module's docstring)."""

    def __init__(
        self,
        *,
        client: Client | None = None,
        name: str = "executor",
        resources: Mapping[str, Any] | None = None,
        failure_handler: Sequence[Mapping[str, Any]] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        max_workers: int | None = None,
        directory: str | os.PathLike[str] | None = None,
        python: str = sys.executable,
        max_argument_bytes: int = 256 * 2**20,
        max_result_bytes: int = 256 * 2**20,
        batch_delay: float = 0.02,
        keep_files: bool = False,
        use_pending_failed: bool = False,
    ) -> None:
        """`resources`: what each call's job needs (num_cpus, memory "2g", runtime "PT1H",
        num_gpus). `failure_handler`: its rules, as in a spec. `scheduler`: a Slurm scheduler's
        fields (account, walltime, nodes, ...): calls then run in allocations the daemon keeps
        coming. `max_workers`: at most this many calls unfinished at once (default: no limit;
        the daemon's own CPU budget still applies). `directory`: under which a private folder of
        this executor's calls and results is made (default: ./torc_executor).
        `use_pending_failed`: a failure no rule matches parks the call's job for a person to
        classify (its future waits) instead of failing it."""
        _check_arguments(name, resources, failure_handler, scheduler, max_workers, batch_delay)
        self.client = client or Client()
        self.name = name
        self.python = python
        self.max_argument_bytes, self.max_result_bytes = max_argument_bytes, max_result_bytes
        self.batch_delay, self.keep_files = batch_delay, keep_files
        self._base = self._base_spec(resources, failure_handler, scheduler, use_pending_failed)
        _check_spec(self._base)
        self.directory = private_directory(os.fspath(directory) if directory else "torc_executor", name)
        self._command = " ".join(shlex.quote(a) for a in (python, "-m", "torcctl.api.calls", self.directory))
        self._slurm = scheduler is not None
        self._limit = max_workers
        self._lock = threading.Condition()
        self._queue: list[_Call] = []  # submitted by the caller, not yet sent to the daemon
        self._calls: dict[int, _Call] = {}  # sent and unresolved, by call number
        self._by_job: dict[int, _Call] = {}
        self._done_jobs: dict[int, int] = {}  # call number -> job id, of resolved calls
        self._next = 1
        self._unfinished = 0
        self._shutdown = False
        self._broken: BaseException | None = None
        self.workflow_id: int | None = None
        self._sender = threading.Thread(target=self._send_loop, name=f"torc-{name}-send", daemon=True)
        self._sender.start()
        atexit.register(self._send_before_exit)  # a daemon thread: calls still queued would be lost
        self._follower: threading.Thread | None = None

    # -- the concurrent.futures.Executor interface --

    def submit(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> cf.Future[R]:
        """Run `fn(*args, **kwargs)` as a job; its Future resolves when the job ends."""
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if self._broken is not None:
                raise RuntimeError(f"the executor is broken: {self._broken}")
            number = self._next
            deps, failed = self._references(args, kwargs)
            if failed is not None:
                future: cf.Future[R] = cf.Future()
                future.set_exception(failed)
                return future
            packed = pack_call(
                fn,
                tuple(Ref(a._torc_call) if isinstance(a, cf.Future) else a for a in args),  # type: ignore[attr-defined]
                {k: Ref(v._torc_call) if isinstance(v, cf.Future) else v for k, v in kwargs.items()},  # type: ignore[attr-defined]
                self.max_result_bytes,
            )
            if len(packed) > self.max_argument_bytes:
                raise ValueError(
                    f"the call of {getattr(fn, '__qualname__', fn)!r} is {len(packed):,} bytes pickled; "
                    f"the limit is {self.max_argument_bytes:,} (max_argument_bytes): pass a path instead"
                )
            write_whole(in_path(self.directory, number), packed)
            self._next += 1
            future = cf.Future()
            future._torc_call = number  # type: ignore[attr-defined]
            future._torc_executor = self  # type: ignore[attr-defined]
            self._queue.append(_Call(number, future, deps))
            self._unfinished += 1
            self._lock.notify_all()
            return future

    def map(
        self, fn: Callable[..., R], *iterables: Iterable[Any], timeout: float | None = None, chunksize: int = 1
    ) -> Iterator[R]:
        """`fn` over the iterables, results in order. Each call is a job; with `chunksize` > 1,
        each job runs that many calls in one process (a Python start per chunk, not per call:
        much faster for short calls, but a failure fails, and a retry reruns, the whole chunk)."""
        if chunksize < 1:
            raise ValueError("chunksize must be at least 1")
        if chunksize == 1:
            return super().map(fn, *iterables, timeout=timeout)
        chunks = super().map(functools.partial(run_chunk, fn), _chunks(zip(*iterables), chunksize), timeout=timeout)
        return itertools.chain.from_iterable(chunks)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No more calls; with `wait`, return once every call has ended. `cancel_futures`
        cancels the calls not yet sent (sent ones run on: `torcctl cancel` stops them)."""
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                for call in self._queue:
                    if call.future.cancel():
                        self._unfinished -= 1
                self._queue = [c for c in self._queue if not c.future.cancelled()]
            self._lock.notify_all()
            if not wait:
                return
            while self._unfinished and self._broken is None:
                self._lock.wait(0.5)
        self._sender.join()
        atexit.unregister(self._send_before_exit)
        if self._follower is not None:
            self._follower.join(5)
        if not self.keep_files and self._broken is None:
            shutil.rmtree(self.directory, ignore_errors=True)

    def _send_before_exit(self) -> None:
        """At interpreter exit: send what is queued (its jobs run on without us)."""
        with self._lock:
            self._shutdown = True
            self._lock.notify_all()
        self._sender.join(30)

    # -- what travels --

    def _references(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[list[int], BaseException | None]:
        deps: list[int] = []
        for value in (*args, *kwargs.values()):
            if not isinstance(value, cf.Future):
                continue
            if getattr(value, "_torc_executor", None) is not self:
                raise TypeError("a Future passed as an argument must come from this Executor")
            if value.done() and not value.cancelled() and value.exception() is not None:
                error = RemoteError(f"call_{value._torc_call} (an argument) failed: {value.exception()}")  # type: ignore[attr-defined]
                return [], error
            if value.cancelled():
                return [], cf.CancelledError(f"call_{value._torc_call} (an argument) was canceled")  # type: ignore[attr-defined]
            deps.append(value._torc_call)  # type: ignore[attr-defined]
        return deps, None

    def _base_spec(
        self,
        resources: Mapping[str, Any] | None,
        failure_handler: Sequence[Mapping[str, Any]] | None,
        scheduler: Mapping[str, Any] | None,
        use_pending_failed: bool,
    ) -> dict[str, Any]:
        spec: dict[str, Any] = {"name": self.name, "use_pending_failed": use_pending_failed}
        if resources:
            spec["resource_requirements"] = [{"name": "call", **resources}]
        if failure_handler is not None:
            spec["failure_handlers"] = [{"name": "call", "rules": [dict(r) for r in failure_handler]}]
        if scheduler is not None:
            spec["slurm_schedulers"] = [{"name": "call", **scheduler}]
        return spec

    def _job(self, call: _Call, in_batch: set[int]) -> dict[str, Any]:
        job: dict[str, Any] = {"name": f"call_{call.number}", "command": f"{self._command} {call.number}"}
        if "resource_requirements" in self._base:
            job["resource_requirements"] = "call"
        if "failure_handlers" in self._base:
            job["failure_handler"] = "call"
        if self._slurm:
            job["scheduler"] = "call"
        if inside := [d for d in call.deps if d in in_batch]:
            job["depends_on"] = [f"call_{d}" for d in inside]
        return job

    # -- the sending thread --

    def _send_loop(self) -> None:
        try:
            self._send_batches()
        except BaseException as e:  # never leave a caller waiting on a thread that died
            with self._lock:
                self._break(RemoteError(f"the executor stopped sending calls: {type(e).__name__}: {e}"))

    def _break(self, error: BaseException) -> None:
        """Under the lock: fail every call not yet ended; refuse new ones."""
        self._broken = error
        for c in list(self._calls.values()):  # sent: running already
            self._resolve(c, False, error)
        for c in self._queue:
            if c.future.set_running_or_notify_cancel():
                self._resolve(c, False, error)
            else:
                self._unfinished -= 1
        self._queue = []
        self._lock.notify_all()

    def _send_batches(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._shutdown:
                    self._lock.wait()
                if not self._queue and self._shutdown:
                    return
            time.sleep(self.batch_delay)  # let a burst of calls gather into one request
            with self._lock:
                room = len(self._queue) if self._limit is None else self._limit - len(self._calls)
                batch = [c for c in self._queue[: min(room, MAX_BATCH)] if c.future.set_running_or_notify_cancel()]
                taken = min(room, MAX_BATCH)
                for c in self._queue[:taken]:
                    if c.future.cancelled():
                        self._unfinished -= 1
                self._queue = self._queue[taken:]
                if not batch:
                    if room <= 0:
                        self._lock.wait(0.5)  # max_workers calls unfinished: wait for one to end
                    continue
                for c in batch:
                    self._calls[c.number] = c
                # Sent under the lock: the follower must not see a job end before its call is known.
                self._send(batch)

    def _send(self, batch: list[_Call]) -> None:
        numbers = {c.number for c in batch}
        spec = {**self._base, "jobs": [self._job(c, numbers) for c in batch]}
        outside = {f"call_{c.number}": [self._job_id(d) for d in c.deps if d not in numbers] for c in batch}
        outside = {k: [i for i in v if i is not None] for k, v in outside.items() if v}
        try:
            if self.workflow_id is None:
                wf = self.client.submit(spec, slurm=self._slurm)
                self.workflow_id = wf.id
                self._follower = threading.Thread(target=self._follow, name=f"torc-{self.name}-follow", daemon=True)
                self._follower.start()  # before anything else can fail: the jobs run already
                ids = {j.name: j.id for j in _patiently(lambda: self.client.jobs(wf.id))}
                if self._slurm:  # allocations for the retried calls too
                    self.client.call("workflows.set_auto_schedule", {"workflow_id": wf.id, "threshold": 1})
            else:
                added = {k: v for k, v in spec.items() if k != "use_pending_failed"}  # the workflow's own
                params = {
                    "workflow_id": self.workflow_id,
                    "spec_text": _json(added),
                    "spec_path": f"<{self.name} calls>",
                    "spec_format": "json",
                    "depends_on_ids": outside,
                }
                ids = self.client.call("workflows.add_jobs", params)["job_ids"]
                if self._slurm and not any(
                    a.state in ("pending", "running") for a in self.client.allocations(self.workflow_id)
                ):
                    self.client.submit_allocations(self.workflow_id)  # the last ones left when idle
        except (TorcError, OSError, ValueError, TypeError) as e:
            self._fail_batch(batch, e)
            return
        for c in batch:
            c.job_id = ids[f"call_{c.number}"]
            self._by_job[c.job_id] = c
        self._lock.notify_all()

    def _job_id(self, call: int) -> int | None:
        known = self._calls.get(call)
        if known is not None:
            return known.job_id
        return self._done_jobs.get(call)

    def _fail_batch(self, batch: list[_Call], e: BaseException) -> None:
        """Under the lock."""
        error = RemoteError(f"the daemon refused these calls: {e}")
        for c in batch:
            self._calls.pop(c.number, None)
            self._resolve(c, False, error)
        if self.workflow_id is None:
            self._break(error)  # nothing was created: later calls would fail alike

    # -- the following thread --

    def _follow(self) -> None:
        assert self.workflow_id is not None
        after, lost_since = 0, None
        try:
            while True:
                # A stream at a time of at most a second: between two, see whether it is over.
                try:
                    for event in self.client.events(
                        self.workflow_id, after, kinds=_KINDS, deadline=time.monotonic() + 1.0
                    ):
                        after = event.seq
                        if isinstance(event, E.JobCompleted) and event.job_id is not None:
                            self._completed(event.job_id)
                        elif (job_id := _ended_alone(event)) is not None:
                            _patiently(functools.partial(self._ended, job_id))
                        elif isinstance(event, _SWEEP_ON):
                            _patiently(self._sweep)
                except TimeoutError:
                    if self.client.transport.ping(1.0):
                        lost_since = None
                    else:
                        lost_since = lost_since or time.monotonic()
                        if time.monotonic() - lost_since > RECONNECT_FOR:
                            raise ConnectError(f"no daemon answered for {RECONNECT_FOR:g}s") from None
                with self._lock:
                    if self._shutdown and not self._unfinished and not self._queue:
                        return
        except Exception as e:  # the daemon is gone for good: say so to every waiting caller
            with self._lock:
                self._break(RemoteError(f"lost the workflow's events: {e}"))

    def _completed(self, job_id: int) -> None:
        with self._lock:
            call = self._by_job.get(job_id)
        if call is None:
            return
        ok, value = read_result(self.directory, call.number)
        with self._lock:
            self._resolve(call, ok, value)

    def _ended(self, job_id: int) -> None:
        """One job failed or was terminated, nothing canceled with it: resolve its call alone
        (a sweep per failure would list every failed job again: failures times jobs)."""
        with self._lock:
            if job_id not in self._by_job:
                return
        job = self.client.job(job_id)
        if job.status in _ENDED_BADLY:
            self._ended_badly(job.id, job.status, job.reason)

    def _sweep(self) -> None:
        """Resolve the calls whose jobs ended other than completed: after what may end many
        jobs at once (a cascade, a cancel, jobs added canceled, the workflow going idle)."""
        assert self.workflow_id is not None
        for status in _ENDED_BADLY:
            with self._lock:
                if not self._by_job:
                    return
            for job in self.client.jobs(self.workflow_id, status=status, limit=1_000_000):
                self._ended_badly(job.id, status, job.reason)

    def _ended_badly(self, job_id: int, status: str, reason: str | None) -> None:
        with self._lock:
            call = self._by_job.get(job_id)
        if call is None:
            return
        ok, value = read_result(self.directory, call.number)
        if ok or (isinstance(value, RemoteError) and "wrote no result" in str(value)):
            value = RemoteError(f"call_{call.number} (job {job_id}) ended {status}: {reason or ''}".strip())
        with self._lock:
            self._resolve(call, False, value)

    def _resolve(self, call: _Call, ok: bool, value: Any) -> None:
        """Under the lock."""
        if call.future.done():
            return
        if ok:
            call.future.set_result(value)
        else:
            call.future.set_exception(value)
        self._calls.pop(call.number, None)
        if call.job_id is not None:
            self._by_job.pop(call.job_id, None)
            self._done_jobs[call.number] = call.job_id
        self._unfinished -= 1
        self._lock.notify_all()


def _ended_alone(event: E.EventBase) -> int | None:
    """The job that failed or was terminated, if it ended alone (canceled nothing downstream)."""
    if isinstance(event, E.JobTerminated) or (isinstance(event, E.JobFailed) and not event.count):
        return event.job_id
    return None


def _patiently(call: Callable[[], T]) -> T:
    """Call, trying again while the daemon restarts (as the event stream itself does)."""
    since = time.monotonic()
    while True:
        try:
            return call()
        except ConnectError:
            if time.monotonic() - since > RECONNECT_FOR:
                raise
            time.sleep(0.2)


def private_directory(parent: str, name: str) -> str:
    """A new folder of this process's own, mode 0700, under `parent`: call files are unpickled,
    so no one else may write there. A parent that is not a real directory is refused."""
    parent = os.path.abspath(parent)
    os.makedirs(parent, mode=0o700, exist_ok=True)
    if os.path.islink(parent) or not os.path.isdir(parent):
        raise ValueError(f"directory {parent} is not a directory (or is a symbolic link)")
    return tempfile.mkdtemp(prefix=f"{name}-", dir=parent)


def _check_arguments(
    name: object,
    resources: object,
    failure_handler: object,
    scheduler: object,
    max_workers: object,
    batch_delay: object,
) -> None:
    if not isinstance(name, str) or not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"name must be letters, digits, '-' and '_', not {name!r}")
    for what, value in (("resources", resources), ("scheduler", scheduler)):
        if value is not None and not isinstance(value, Mapping):
            raise TypeError(f"{what} must be a dict of a spec entry's fields, not {type(value).__name__}")
    if failure_handler is not None and (
        isinstance(failure_handler, Mapping | str) or not all(isinstance(r, Mapping) for r in failure_handler)  # type: ignore[attr-defined]
    ):
        raise TypeError("failure_handler must be a list of rules (dicts), as a spec's `rules`")
    if max_workers is not None and (not isinstance(max_workers, int) or max_workers < 1):
        raise ValueError(f"max_workers must be a whole number of at least 1, not {max_workers!r}")
    if not isinstance(batch_delay, int | float) or not 0 <= batch_delay <= 60:
        raise ValueError(f"batch_delay must be between 0 and 60 seconds, not {batch_delay!r}")


def _check_spec(base: dict[str, Any]) -> None:
    """Refuse now resources, rules or a scheduler the daemon would refuse at the first call."""
    from torcd.spec.errors import spec_errors

    probe = {**base, "jobs": [{"name": "call_1", "command": "true"}]}
    for key, ref in (
        ("resource_requirements", "resource_requirements"),
        ("failure_handlers", "failure_handler"),
        ("slurm_schedulers", "scheduler"),
    ):
        if key in base:
            probe["jobs"][0][ref] = "call"
    if errors := spec_errors(msgspec.json.encode(probe).decode(), "<Executor arguments>", "json"):
        raise ValueError("; ".join(str(e) for e in errors))


def run_chunk(fn: Callable[..., R], chunk: list[tuple[Any, ...]]) -> list[R]:
    """A chunk of a map's calls, in one job."""
    return [fn(*args) for args in chunk]


def _chunks(items: Iterator[tuple[Any, ...]], size: int) -> Iterator[list[tuple[Any, ...]]]:
    while chunk := list(itertools.islice(items, size)):
        yield chunk


def _json(spec: dict[str, Any]) -> str:
    return msgspec.json.encode(spec).decode()
