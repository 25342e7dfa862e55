"""`torcctl.AsyncClient`: the Client's calls as coroutines, for asyncio code and notebooks.

Each call runs the synchronous Client in a worker thread (`asyncio.to_thread`), so there is one
client in the code base and a slow daemon never blocks the event loop; `events()` is an async
iterator fed by a thread that follows the stream (and resumes it after a reconnect).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal

from torcctl.api.client import Client, Stream, Workflow
from torcctl.api.models import (
    ActionInfo,
    Attempt,
    DaemonInfo,
    Event,
    Explanation,
    Graph,
    Job,
    RecoverResult,
    UserData,
    Worker,
)

if TYPE_CHECKING:
    from torcctl.spec_builder import WorkflowSpec

_END = object()


class AsyncClient:
    """Every Client call as a coroutine. Takes the Client's arguments (or an existing Client)."""

    def __init__(self, socket: str | None = None, *, client: Client | None = None, **options: Any) -> None:
        self.client = client or Client(socket, **options)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await asyncio.to_thread(self.client.close)

    async def call(self, method: str, params: Mapping[str, Any] | None = None, result_type: Any = None) -> Any:
        return await asyncio.to_thread(self.client.call, method, params, result_type)

    async def ping(self) -> DaemonInfo:
        return await asyncio.to_thread(self.client.ping)

    async def submit(
        self,
        spec: str | os.PathLike[str] | Mapping[str, Any] | WorkflowSpec,
        *,
        spec_format: str | None = None,
        cwd: str | os.PathLike[str] | None = None,
        slurm: bool = False,
        account: str | None = None,
        allocations: int | None = None,
    ) -> Workflow:
        return await asyncio.to_thread(
            lambda: self.client.submit(
                spec, spec_format=spec_format, cwd=cwd, slurm=slurm, account=account, allocations=allocations
            )
        )

    async def workflow(self, workflow_id: int) -> Workflow:
        return await asyncio.to_thread(self.client.workflow, workflow_id)

    async def workflows(self) -> list[Workflow]:
        return await asyncio.to_thread(self.client.workflows)

    async def wait(self, workflow_id: int, timeout: float | None = None, progress: bool | None = None) -> Workflow:
        """Wait without blocking the loop; TimeoutError after `timeout` seconds. Each wait has a
        thread of its own, so that many waits never hold up the loop's other calls."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Workflow] = loop.create_future()

        def settle(outcome: Workflow | BaseException) -> None:
            if done.done():
                return
            if isinstance(outcome, BaseException):
                done.set_exception(outcome)
            else:
                done.set_result(outcome)

        def run() -> None:
            try:
                outcome: Workflow | BaseException = self.client.wait(workflow_id, timeout, progress)
            except Exception as e:
                outcome = e
            try:
                loop.call_soon_threadsafe(settle, outcome)
            except RuntimeError:  # the loop closed meanwhile
                pass

        threading.Thread(target=run, name=f"torc-wait-{workflow_id}", daemon=True).start()
        return await done

    async def cancel(self, workflow_id: int) -> Workflow:
        return await asyncio.to_thread(self.client.cancel, workflow_id)

    async def delete(self, workflow_id: int) -> None:
        await asyncio.to_thread(self.client.delete, workflow_id)

    async def reset(self, workflow_id: int, failed_only: bool = False) -> int:
        return await asyncio.to_thread(self.client.reset, workflow_id, failed_only)

    async def recover(self, workflow_id: int, **options: Any) -> RecoverResult:
        return await asyncio.to_thread(lambda: self.client.recover(workflow_id, **options))

    async def jobs(
        self, workflow_id: int, status: str | None = None, limit: int = 10_000, offset: int = 0, **filters: Any
    ) -> list[Job]:
        """A page of the workflow's jobs; `filters` as Client.jobs: name, template, sort, descending."""
        return await asyncio.to_thread(lambda: self.client.jobs(workflow_id, status, limit, offset, **filters))

    async def count_jobs(
        self, workflow_id: int, status: str | None = None, name: str | None = None, template: str | None = None
    ) -> int:
        return await asyncio.to_thread(self.client.count_jobs, workflow_id, status, name, template)

    async def graph(self, workflow_id: int, max_nodes: int = 300) -> Graph:
        return await asyncio.to_thread(self.client.graph, workflow_id, max_nodes)

    async def workers(self, workflow_id: int) -> list[Worker]:
        return await asyncio.to_thread(self.client.workers, workflow_id)

    async def actions(self, workflow_id: int) -> list[ActionInfo]:
        return await asyncio.to_thread(self.client.actions, workflow_id)

    async def explain(self, job_id: int, exit_codes: Iterable[int] | None = None) -> Explanation:
        return await asyncio.to_thread(self.client.explain, job_id, exit_codes)

    async def update_resources(self, job_id: int, reason: str, **options: Any) -> dict[str, Any]:
        return await asyncio.to_thread(lambda: self.client.update_resources(job_id, reason, **options))

    async def job(self, job_id: int) -> Job:
        return await asyncio.to_thread(self.client.job, job_id)

    async def attempts(self, job_id: int) -> list[Attempt]:
        return await asyncio.to_thread(self.client.attempts, job_id)

    async def results(self, workflow_id: int, **options: Any) -> list[Attempt]:
        return await asyncio.to_thread(lambda: self.client.results(workflow_id, **options))

    async def logs(self, job_id: int, attempt_id: int | None = None, stream: Stream = "stdout", **options: Any) -> str:
        return await asyncio.to_thread(lambda: self.client.logs(job_id, attempt_id, stream, **options))

    async def retry(self, job_ids: int | Iterable[int], reason: str = "", source: str = "api") -> list[int]:
        return await asyncio.to_thread(self.client.retry, job_ids, reason, source)

    async def fail(self, job_ids: int | Iterable[int], reason: str = "", source: str = "api") -> list[int]:
        return await asyncio.to_thread(self.client.fail, job_ids, reason, source)

    async def classify(
        self, workflow_id: int, decisions: Mapping[int, tuple[Literal["retry", "fail"], str]], source: str = "api"
    ) -> list[int]:
        return await asyncio.to_thread(self.client.classify, workflow_id, decisions, source)

    async def get_user_data(self, workflow_id: int, name: str) -> Any:
        return await asyncio.to_thread(self.client.user_data.get, workflow_id, name)

    async def set_user_data(self, workflow_id: int, name: str, value: Any) -> None:
        await asyncio.to_thread(self.client.user_data.set, workflow_id, name, value)

    async def list_user_data(self, workflow_id: int) -> list[UserData]:
        return await asyncio.to_thread(self.client.user_data.list, workflow_id)

    async def events(
        self, workflow_id: int, after: int = 0, follow: bool = True, kinds: frozenset[str] | None = None
    ) -> AsyncIterator[Event]:
        """The workflow's events as an async iterator (see Client.events)."""
        async for event in self._pumped(lambda: self.client.events(workflow_id, after, follow, kinds), workflow_id):
            yield event

    async def all_events(self, after: int = 0, kinds: frozenset[str] | None = None) -> AsyncIterator[Event]:
        """Every workflow's events, followed live, as an async iterator (see Client.all_events)."""
        async for event in self._pumped(lambda: self.client.all_events(after, kinds), "all"):
            yield event

    async def _pumped(self, events: Callable[[], Iterator[Event]], name: object) -> AsyncIterator[Event]:
        """A Client event iterator read in a thread of its own, handed over one event at a time."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=1000)
        stop = threading.Event()

        def hand(item: Any) -> bool:
            """Give the reader one item; False once the reader is gone (or its loop closed)."""
            if stop.is_set():
                return False
            try:
                asyncio.run_coroutine_threadsafe(queue.put(item), loop).result()
            except RuntimeError:  # the loop closed
                return False
            return not stop.is_set()

        def pump() -> None:
            try:
                for event in events():
                    if not hand(event):
                        return
                hand(_END)
            except Exception as e:  # raised in the reader
                hand(e)

        # A daemon thread, not the loop's executor: a stream with nothing new blocks in a read,
        # and must not hold up the loop's shutdown.
        threading.Thread(target=pump, name=f"torc-events-{name}", daemon=True).start()
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while not queue.empty():  # a pump waiting on a full queue sees `stop`
                queue.get_nowait()
