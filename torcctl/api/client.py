"""`torcctl.Client`: the daemon's calls as typed Python methods. The CLI is built on it.

    client = Client()                     # the user's daemon, started if none runs
    wf = client.submit("diamond.yaml")    # a path, a spec's text, a dict or a WorkflowSpec
    wf.wait()
    for job in wf.jobs(status="failed"): ...

It connects as the CLI does: the socket from $TORCD_SOCKET or the per-user default, the same
ownership checks (nothing is sent to a daemon another user runs), and a daemon started when none
answers unless `autostart=False`. Inside a job it reaches the daemon that runs the job
($TORC_API_URL); `Client(url=..., token=...)` is the TCP door. It is synchronous (http.client
under the hood), so it works the same in a script, in a notebook and in a job; asyncio code has
`AsyncClient`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from torcctl.api.log_paths import attempt_log_path, read_log
from torcctl.api.models import (
    ActionInfo,
    AllocationInfo,
    Attempt,
    DaemonInfo,
    DatasetInfo,
    Event,
    Explanation,
    FileInfo,
    Graph,
    Job,
    RecoverResult,
    UserData,
    Worker,
)
from torcctl.api.progress import ProgressBar, in_notebook
from torcctl.api.spec_files import every_error, spec_text
from torcctl.errors import ConnectError, SpecError
from torcctl.transport import TcpTransport, Transport, read_token, start_daemon
from torcd.events import IDLE_EVENTS
from torcd.protocol import JobSort, WorkflowSummary

if TYPE_CHECKING:
    import subprocess

    from torcctl.spec_builder import WorkflowSpec

T = TypeVar("T")
Stream = Literal["stdout", "stderr"]
RESULTS_PAGE = 10_000  # attempts a request of `results` asks for
RECONNECT_FOR = 60.0  # seconds a followed event stream keeps trying to reach a restarted daemon


def connect_transport(
    socket: str | None = None,
    *,
    url: str | None = None,
    token: str | None = None,
    ca_file: str | None = None,
    timeout: float | None = 120.0,
) -> Transport:
    """The transport a Client with these arguments uses: a URL (or, with neither, a job's
    $TORC_API_URL) means the TCP door; otherwise the Unix socket."""
    if url is None and socket is None:
        api_url = os.environ.get("TORC_API_URL", "")
        if api_url.startswith("unix://"):
            socket = api_url[len("unix://") :]
        elif api_url:
            url = api_url
    if url is not None:
        token = token if token is not None else read_token(os.environ.get("TORC_API_TOKEN_FILE"))
        return TcpTransport(url, token, ca_file or os.environ.get("TORC_CA_FILE"), timeout=timeout)
    from torcd.paths import default_socket

    return Transport(os.path.abspath(socket) if socket else default_socket(), timeout=timeout)


FINAL_STATES = frozenset({"done", "awaiting_classification", "canceled"})


class Workflow(WorkflowSummary, dict=True):
    """Its fields are a snapshot taken when it was fetched (`refresh()` fetches a new one).
    A workflow as the daemon saw it when fetched: id, name, state, counts by job status...
    and the calls that concern it."""

    @property
    def _client(self) -> Client:
        client: Client = self.__dict__["_client"]  # set by the client that fetched it
        return client

    @property
    def is_final(self) -> bool:
        """Nothing more runs unless someone acts: done, awaiting classification, or canceled."""
        return self.state in FINAL_STATES

    def refresh(self) -> Workflow:
        """The workflow as it is now."""
        return self._client.workflow(self.id)

    def wait(self, timeout: float | None = None, progress: bool | None = None) -> Workflow:
        """Block until the workflow is done, awaits classification or is canceled; return it then.
        Raises TimeoutError after `timeout` seconds. `progress`: show a progress bar (default:
        only in a notebook)."""
        return self._client.wait(self.id, timeout=timeout, progress=progress)

    def events(self, after: int = 0, follow: bool = True, kinds: frozenset[str] | None = None) -> Iterator[Event]:
        """The workflow's events from sequence `after`; with `follow`, new ones as they happen."""
        return self._client.events(self.id, after=after, follow=follow, kinds=kinds)

    def jobs(self, status: str | None = None, limit: int = 10_000, offset: int = 0, **filters: Any) -> list[Job]:
        """A page of the workflow's jobs; `filters` as Client.jobs takes them (name, template, sort, descending)."""
        return self._client.jobs(self.id, status=status, limit=limit, offset=offset, **filters)

    def results(self, all_runs: bool = False, failed: bool = False) -> list[Attempt]:
        return self._client.results(self.id, all_runs=all_runs, failed=failed)

    def cancel(self) -> Workflow:
        return self._client.cancel(self.id)

    def reset(self, failed_only: bool = False) -> int:
        return self._client.reset(self.id, failed_only=failed_only)

    def recover(self, **options: Any) -> RecoverResult:
        return self._client.recover(self.id, **options)

    def delete(self) -> None:
        self._client.delete(self.id)


class Client:
    """A connection to torcd and every call it answers, with typed results."""

    def __init__(
        self,
        socket: str | None = None,
        *,
        url: str | None = None,
        token: str | None = None,
        ca_file: str | None = None,
        state_dir: str | None = None,
        autostart: bool = True,
        timeout: float | None = 120.0,
        transport: Transport | None = None,
    ) -> None:
        self.transport = transport or connect_transport(socket, url=url, token=token, ca_file=ca_file, timeout=timeout)
        self.state_dir = os.path.abspath(state_dir) if state_dir else None
        self.autostart = autostart and not isinstance(self.transport, TcpTransport)
        self.started: subprocess.Popen[bytes] | None = None  # the daemon this client started, if it did
        self._checked = transport is not None
        self.user_data = UserDataCalls(self)

    # -- connection --

    def ensure_daemon(self) -> None:
        """Make sure a daemon answers: start one if none does and autostart is on."""
        if self._checked:
            return
        if not isinstance(self.transport, TcpTransport) and not self.transport.ping(2.0):
            if not self.autostart:
                raise ConnectError(f"no torcd answers on {self.transport.socket_path} (and autostart is off)")
            self.started = start_daemon(self.transport.socket_path, self.state_dir)
        self._checked = True

    @overload
    def call(self, method: str, params: Mapping[str, Any] | None = None, result_type: None = None) -> Any: ...
    @overload
    def call(self, method: str, params: Mapping[str, Any] | None, result_type: type[T]) -> T: ...
    def call(self, method: str, params: Mapping[str, Any] | None = None, result_type: type[T] | None = None) -> Any:
        """One JSON-RPC call by name (every typed method below is one of these)."""
        self.ensure_daemon()
        return self.transport.call(method, dict(params or {}), result_type)

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ping(self) -> DaemonInfo:
        """Who answers: the daemon's version, pid, socket and state dir."""
        return self.call("ping", None, DaemonInfo)

    # -- workflows --

    def submit(
        self,
        spec: str | os.PathLike[str] | Mapping[str, Any] | WorkflowSpec,
        *,
        spec_format: str | None = None,
        cwd: str | os.PathLike[str] | None = None,
        slurm: bool = False,
        account: str | None = None,
        allocations: int | None = None,
    ) -> Workflow:
        """Create a workflow and start its jobs. `spec` is a spec file's path, a spec's text
        (YAML, JSON, JSON5 or KDL), a dict in the spec's shape, or a WorkflowSpec. Relative paths
        in it are relative to `cwd` (default: the current directory). Raises SpecError listing
        every error of an invalid spec, each with its file, line and field. `slurm=True` is
        `torcctl submit-slurm`: the jobs run in Slurm allocations (`allocations` of them, by
        default as many as the ready jobs need), submitted now."""
        text, path, fmt = spec_text(spec, spec_format)
        params: dict[str, Any] = {"spec_text": text, "spec_path": path, "cwd": _directory(cwd)}
        if fmt:
            params["spec_format"] = fmt
        if slurm:
            params["executor"] = "slurm"
            if account:
                params["account"] = account
        try:
            summary = self._bind(self.call("workflows.create", params, Workflow))
        except SpecError as e:
            raise every_error(e, text, path, fmt) from None
        if slurm:
            self.submit_allocations(summary.id, allocations)
        return summary

    def files(self, workflow_id: int, limit: int = 100_000) -> list[FileInfo]:
        """The workflow's files (the first `limit`, up to 1,000,000): the job that writes each,
        the jobs that read it, whether it exists."""
        return self.call("workflows.files", {"workflow_id": workflow_id, "limit": limit}, list[FileInfo])

    def datasets(self, workflow_id: int) -> list[DatasetInfo]:
        """The workflow's datasets: the jobs that write each, those that read it, whether it exists."""
        return self.call("workflows.datasets", {"workflow_id": workflow_id}, list[DatasetInfo])

    def allocations(self, workflow_id: int) -> list[AllocationInfo]:
        """The workflow's Slurm allocations, with their state."""
        return self.call("allocations.list", {"workflow_id": workflow_id}, list[AllocationInfo])

    def submit_allocations(self, workflow_id: int, count: int | None = None) -> list[AllocationInfo]:
        """Submit Slurm allocations for the workflow's ready jobs (`count`, or as many as they need)."""
        params: dict[str, Any] = {"workflow_id": workflow_id}
        if count is not None:
            params["count"] = count
        return self.call("allocations.submit", params, list[AllocationInfo])

    def workflow(self, workflow_id: int) -> Workflow:
        return self._bind(self.call("workflows.show", {"workflow_id": workflow_id}, Workflow))

    def workflows(self) -> list[Workflow]:
        return [self._bind(w) for w in self.call("workflows.list", None, list[Workflow])]

    def wait(self, workflow_id: int, timeout: float | None = None, progress: bool | None = None) -> Workflow:
        """Block until the workflow is done, awaits classification or is canceled; return it then.
        Raises TimeoutError after `timeout` seconds (the workflow goes on)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        wf = self.workflow(workflow_id)
        if progress is None:
            progress = in_notebook()
        bar = ProgressBar(wf) if progress and not wf.is_final else None
        try:
            after, shown = 0, 0.0
            while not wf.is_final:
                for event in self.events(workflow_id, after=after, follow=True, deadline=deadline, until_idle=True):
                    after = event.seq
                    if bar is not None and event.kind in _COUNTING and time.monotonic() - shown > 0.2:
                        bar.update(self.workflow(workflow_id))
                        shown = time.monotonic()
                wf = self.workflow(workflow_id)
        finally:
            if bar is not None:
                bar.close(wf)
        return wf

    def cancel(self, workflow_id: int) -> Workflow:
        """Cancel every unfinished job (running ones are stopped); the workflow afterwards."""
        return self._bind(self.call("workflows.cancel", {"workflow_id": workflow_id}, Workflow))

    def delete(self, workflow_id: int) -> None:
        """Delete a workflow that has nothing unfinished (cancel it first), with its history."""
        self.call("workflows.delete", {"workflow_id": workflow_id})

    def reset(self, workflow_id: int, failed_only: bool = False) -> int:
        """Run the workflow again (a new run id): all jobs, or only the failed ones and what they
        block. Returns how many jobs were reset."""
        return int(
            self.call("workflows.reset_status", {"workflow_id": workflow_id, "failed_only": failed_only})["reset"]
        )

    def recover(
        self,
        workflow_id: int,
        *,
        dry_run: bool = False,
        memory_multiplier: float = 1.5,
        runtime_multiplier: float = 1.4,
        retry_unknown: bool = False,
        reason: str = "",
        source: str = "api",
    ) -> RecoverResult:
        """Raise the limits of jobs that failed for lack of memory or time and run them again;
        with `dry_run`, only say what would change."""
        params = {
            "workflow_id": workflow_id,
            "dry_run": dry_run,
            "memory_multiplier": memory_multiplier,
            "runtime_multiplier": runtime_multiplier,
            "retry_unknown": retry_unknown,
            "source": source,
            "reason": reason,
        }
        return self.call("workflows.recover", params, RecoverResult)

    # -- jobs --

    def jobs(
        self,
        workflow_id: int,
        status: str | None = None,
        limit: int = 10_000,
        offset: int = 0,
        *,
        name: str | None = None,
        template: str | None = None,
        sort: JobSort = "id",
        descending: bool = False,
    ) -> list[Job]:
        """A page of the workflow's jobs: those in `status`, whose name holds `name` (any case),
        made from `template`; ordered by `sort` (id, name, status, attempt_id, updated,
        template), then id."""
        params = _job_filter(workflow_id, status, name, template)
        params.update(limit=limit, offset=offset, sort=sort, descending=descending)
        return self.call("jobs.list", params, list[Job])

    def count_jobs(
        self, workflow_id: int, status: str | None = None, name: str | None = None, template: str | None = None
    ) -> int:
        """How many of the workflow's jobs `jobs` would list with these filters, over all pages."""
        return int(self.call("jobs.count", _job_filter(workflow_id, status, name, template))["count"])

    def graph(self, workflow_id: int, max_nodes: int = 300) -> Graph:
        """The workflow's DAG to draw: a node per job, or per name template past `max_nodes` jobs."""
        return self.call("workflows.graph", {"workflow_id": workflow_id, "max_nodes": max_nodes}, Graph)

    def workers(self, workflow_id: int) -> list[Worker]:
        """The workflow's workers in allocations, with the jobs each runs now."""
        return self.call("workers.list", {"workflow_id": workflow_id}, list[Worker])

    def actions(self, workflow_id: int) -> list[ActionInfo]:
        """The workflow's actions, each with its state and what its last firing said."""
        return self.call("actions.list", {"workflow_id": workflow_id}, list[ActionInfo])

    def explain(self, job_id: int, exit_codes: Iterable[int] | None = None) -> Explanation:
        """What the job's failure handler would do, attempt by attempt, for these exit codes
        (default: those of its attempts in its current run)."""
        params: dict[str, Any] = {"job_id": job_id}
        if exit_codes is not None:
            params["exit_codes"] = list(exit_codes)
        return self.call("jobs.explain", params, Explanation)

    def job(self, job_id: int) -> Job:
        return self.call("jobs.show", {"job_id": job_id}, Job)

    def attempts(self, job_id: int) -> list[Attempt]:
        """Every attempt of the job, in every run, oldest first."""
        return self.call("jobs.attempts", {"job_id": job_id}, list[Attempt])

    def results(
        self, workflow_id: int, *, all_runs: bool = False, failed: bool = False, return_code: int | None = None
    ) -> list[Attempt]:
        """Every job's attempts in the current run (in every run with `all_runs`), optionally only
        failed ones, in job order; fetched a page of jobs at a time, so none is left out."""
        params: dict[str, Any] = {"workflow_id": workflow_id, "all_runs": all_runs, "failed": failed}
        if return_code is not None:
            params["return_code"] = return_code
        out: list[Attempt] = []
        while page := self.call(
            "workflows.results",
            {**params, "limit": RESULTS_PAGE, "after_job_id": out[-1].job_id if out else 0},
            list[Attempt],
        ):
            out += page
        return out

    def logs(
        self,
        job_id: int,
        attempt_id: int | None = None,
        stream: Stream = "stdout",
        *,
        run_id: int | None = None,
        recovery: bool = False,
        max_bytes: int = 16 * 1024 * 1024,
    ) -> str:
        """A job attempt's stdout or stderr (the last attempt by default; `recovery`: its recovery
        script's). At most the last `max_bytes`."""
        return read_log(self.log_path(job_id, attempt_id, stream, run_id=run_id, recovery=recovery), max_bytes)

    def log_path(
        self,
        job_id: int,
        attempt_id: int | None = None,
        stream: Stream = "stdout",
        *,
        run_id: int | None = None,
        recovery: bool = False,
    ) -> str:
        """Where that log is."""
        return attempt_log_path(
            self.attempts(job_id), attempt_id, stream, run_id=run_id, recovery=recovery, job_id=job_id
        )

    def retry(self, job_ids: int | Iterable[int], reason: str = "", source: str = "api") -> list[int]:
        """Retry pending_failed (or failed) jobs; returns the ids that changed."""
        return self._classify("jobs.retry", job_ids, reason, source)

    def fail(self, job_ids: int | Iterable[int], reason: str = "", source: str = "api") -> list[int]:
        """Fail pending_failed jobs for good (what they block is canceled)."""
        return self._classify("jobs.fail", job_ids, reason, source)

    def classify(
        self, workflow_id: int, decisions: Mapping[int, tuple[Literal["retry", "fail"], str]], source: str = "api"
    ) -> list[int]:
        """Classify several pending_failed jobs at once, all or none: {job_id: ("retry", why)}."""
        if not isinstance(decisions, Mapping) or not all(
            isinstance(d, tuple) and len(d) == 2 and d[0] in ("retry", "fail") for d in decisions.values()
        ):
            raise TypeError('decisions maps each job id to ("retry" or "fail", reason)')
        classifications = [{"job_id": j, "action": a, "reason": r} for j, (a, r) in decisions.items()]
        params = {"workflow_id": workflow_id, "classifications": classifications, "source": source}
        return list(self.call("jobs.classify", params)["changed"])

    def update_resources(
        self,
        job_id: int,
        reason: str,
        *,
        memory: str | None = None,
        runtime: str | None = None,
        num_cpus: int | None = None,
        source: str = "api",
    ) -> dict[str, Any]:
        """Change a job's limits before its next attempt (memory "8g", runtime "PT2H")."""
        params: dict[str, Any] = {"job_id": job_id, "reason": reason, "source": source}
        params.update({k: v for k, v in (("memory", memory), ("runtime", runtime), ("num_cpus", num_cpus)) if v})
        return dict(self.call("jobs.update_resources", params))

    def _classify(self, method: str, job_ids: int | Iterable[int], reason: str, source: str) -> list[int]:
        ids = [job_ids] if isinstance(job_ids, int) else list(job_ids)
        return list(self.call(method, {"job_ids": ids, "reason": reason, "source": source})["changed"])

    # -- events --

    def events(
        self,
        workflow_id: int,
        after: int = 0,
        follow: bool = True,
        kinds: frozenset[str] | None = None,
        *,
        deadline: float | None = None,
        until_idle: bool = False,
        reconnect_for: float = RECONNECT_FOR,
        serve_label: str | None = None,
    ) -> Iterator[Event]:
        """The workflow's events after sequence `after`. With `follow`, new events as they happen,
        for as long as the caller reads; a stream cut (a daemon restart, a slow reader) is
        resumed from the last event seen, for up to `reconnect_for` seconds without a daemon.
        `until_idle`: end when nothing more runs. `serve_label`: while following, the daemon runs
        the workflow's jobs with this label (Torc's `run --label`)."""
        self.ensure_daemon()
        if not follow:
            yield from self._listed_events(workflow_id, after, kinds)
            return
        yield from self._follow(workflow_id, after, kinds, deadline, until_idle, reconnect_for, serve_label)

    def all_events(
        self, after: int = 0, kinds: frozenset[str] | None = None, *, reconnect_for: float = RECONNECT_FOR
    ) -> Iterator[Event]:
        """Every workflow's events, followed live: those after global sequence `after` (with 0,
        the daemon's latest 10,000 first), then new ones for as long as the caller reads."""
        self.ensure_daemon()
        yield from self._follow(None, after, kinds, None, False, reconnect_for)

    def _follow(
        self,
        workflow_id: int | None,
        after: int,
        kinds: frozenset[str] | None,
        deadline: float | None,
        until_idle: bool,
        reconnect_for: float,
        serve_label: str | None = None,
    ) -> Iterator[Event]:
        lost_since: float | None = None
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(f"workflow {workflow_id} is still active")
            try:
                for event in self.transport.events(
                    workflow_id, after, until_idle, kinds, read_timeout=left, serve_label=serve_label
                ):
                    lost_since = None
                    after = event.seq
                    yield event
                if until_idle:
                    return
            except TimeoutError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"workflow {workflow_id} is still active") from None
            except ConnectError:
                lost_since = lost_since or time.monotonic()
                if time.monotonic() - lost_since >= reconnect_for:
                    raise
                time.sleep(0.2)

    def _listed_events(self, workflow_id: int, after: int, kinds: frozenset[str] | None) -> Iterator[Event]:
        while True:
            page = self.call("events.list", {"workflow_id": workflow_id, "after": after}, list[Event])
            for event in page:
                if not kinds or event.kind in kinds:
                    yield event
            if len(page) < 10_000:
                return
            after = page[-1].seq

    def _bind(self, wf: Workflow) -> Workflow:
        wf.__dict__["_client"] = self
        return wf


class UserDataCalls:
    """`client.user_data`: a workflow's named JSON values, as jobs share them."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def get(self, workflow_id: int, name: str) -> Any:
        """The value (any JSON value)."""
        return self.info(workflow_id, name).data

    def info(self, workflow_id: int, name: str) -> UserData:
        """The value with its producer, whether it is ephemeral, and when it changed."""
        return self._client.call("user_data.get", {"workflow_id": workflow_id, "name": name}, UserData)

    def set(self, workflow_id: int, name: str, value: Any) -> None:
        """Set a value (1 MiB of JSON at most)."""
        self._client.call("user_data.set", {"workflow_id": workflow_id, "name": name, "data": value})

    def list(self, workflow_id: int) -> list[UserData]:
        return self._client.call("user_data.list", {"workflow_id": workflow_id}, list[UserData])


# -- helpers --

_COUNTING = frozenset({"job_completed", "job_failed", "job_terminated", "job_classified", "jobs_added", *IDLE_EVENTS})


def _job_filter(workflow_id: int, status: str | None, name: str | None, template: str | None) -> dict[str, Any]:
    given = (("status", status), ("name", name), ("template", template))
    return {"workflow_id": workflow_id, **{k: v for k, v in given if v is not None}}


def _directory(cwd: str | os.PathLike[str] | None) -> str:
    if cwd is not None:
        return os.path.abspath(os.fspath(cwd))
    try:
        return os.getcwd()
    except FileNotFoundError:
        raise FileNotFoundError("the current directory no longer exists; pass cwd=") from None
