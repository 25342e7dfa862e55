"""Many clients at once, watchers that keep up and one that does not, and SIGTERM mid-flight."""

from __future__ import annotations

import asyncio
import signal
import socket
import statistics
import threading
import time

import aiohttp
import msgspec
from test_crash import check_history

from torcd.protocol import Event

CLIENTS = 200
REQUESTS_PER_CLIENT = 50  # 10,000 in all
SLOWEST_ALLOWED = 5.0  # seconds for any one request, on a shared 2-core machine


def busy_spec(n: int, command: str = "sleep 0.01") -> str:
    return f"""\
name: busy
jobs:
  - {{name: "j{{i}}", command: "{command}", parameters: {{i: "1:{n}"}}}}
"""


async def _client(
    session: aiohttp.ClientSession, k: int, busy_wf: int, latencies: list[float], errors: list[str]
) -> None:
    async def call(method: str, params: dict | None = None):
        started = time.perf_counter()
        async with session.post(
            "http://torcd/rpc", json={"jsonrpc": "2.0", "id": k, "method": method, "params": params or {}}
        ) as resp:
            body = await resp.json()
        latencies.append(time.perf_counter() - started)
        if resp.status != 200 or "error" in body:
            errors.append(f"{method}: {resp.status} {body}")
        return body.get("result")

    mine: list[int] = []
    for r in range(REQUESTS_PER_CLIENT):
        step = r % 25
        if step == 0:  # writes: a small workflow of our own, then cancel and delete it
            wf = await call(
                "workflows.create",
                {
                    "spec_text": f"name: c{k}\njobs:\n  - {{name: a, command: 'true'}}\n",
                    "spec_path": f"c{k}.yaml",
                    "cwd": "/tmp",
                },
            )
            mine.append(wf["id"])
        elif step == 10:
            await call("workflows.cancel", {"workflow_id": mine[-1]})
        elif step == 20:
            await call("workflows.delete", {"workflow_id": mine[-1]})
        elif step % 4 == 0:
            await call("jobs.list", {"workflow_id": busy_wf, "status": "completed", "limit": 50})
        elif step % 4 == 1:
            await call("workflows.show", {"workflow_id": busy_wf})
        elif step % 4 == 2:
            await call("events.list", {"workflow_id": busy_wf, "after": 0, "limit": 100})
        else:
            await call("workflows.list")


async def _load(socket_path: str, busy_wf: int) -> tuple[list[float], list[str]]:
    latencies: list[float] = []
    errors: list[str] = []
    sessions = [aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=socket_path)) for _ in range(CLIENTS)]
    try:
        await asyncio.gather(*(_client(s, k, busy_wf, latencies, errors) for k, s in enumerate(sessions)))
    finally:
        await asyncio.gather(*(s.close() for s in sessions))
    return latencies, errors


def test_200_clients_10k_requests_while_a_workflow_runs(daemon):
    wf = daemon.submit(busy_spec(1000))
    started = time.perf_counter()
    latencies, errors = asyncio.run(_load(daemon.socket, wf))
    elapsed = time.perf_counter() - started
    assert errors == []
    assert len(latencies) == CLIENTS * REQUESTS_PER_CLIENT
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99)]
    print(
        f"load: {len(latencies)} requests from {CLIENTS} clients in {elapsed:.1f} s, "
        f"median {statistics.median(latencies) * 1000:.1f} ms, p99 {p99 * 1000:.0f} ms, "
        f"max {latencies[-1] * 1000:.0f} ms"
    )
    assert latencies[-1] < SLOWEST_ALLOWED
    info = daemon.wait(wf, timeout=120)
    assert info.counts == {"completed": 1000}
    assert [w["name"] for w in daemon.call("workflows.list")] == ["busy"]  # the clients deleted theirs


def _follow(client, wf: int, out: list[Event], after: int = 0, stop_after: int | None = None) -> None:
    for event in client.events(wf, after=after, until_done=True):
        out.append(event)
        if stop_after is not None and len(out) >= stop_after:
            return


def test_a_watcher_that_stops_reading_is_cut_off_and_the_others_get_every_event(make_daemon):
    d = make_daemon(max_parallel_jobs=4).start(env={"TORCD_WATCH_QUEUE_SIZE": "200", "TORCD_WATCH_WRITE_TIMEOUT": "1"})
    wf = d.submit(busy_spec(3000, "true"))
    # The stalled watcher: asks for the stream, then never reads a byte.
    stalled = socket.socket(socket.AF_UNIX)
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(d.socket)
    stalled.sendall(f"GET /events?workflow_id={wf}&after=0 HTTP/1.1\r\nHost: torcd\r\n\r\n".encode())
    streams: list[list[Event]] = [[] for _ in range(3)]
    readers = [threading.Thread(target=_follow, args=(type(d.client)(d.socket), wf, s)) for s in streams]
    for t in readers:
        t.start()
    for t in readers:
        t.join(120)
    d.wait(wf, timeout=120)
    everything = d.events(wf)
    for s in streams:  # every event, in order, none skipped
        assert [e.seq for e in s] == [e.seq for e in everything]
    # The stalled one was disconnected: what it has buffered ends, and the socket closes.
    stalled.settimeout(30)
    received = 0
    while chunk := stalled.recv(1 << 16):
        received += len(chunk)
    stalled.close()
    assert received < sum(len(msgspec.json.encode(e)) + 1 for e in everything)
    assert "watcher_cut_off" in d.log.read_text()


def test_a_watcher_resumes_after_the_last_sequence_it_saw(daemon):
    wf = daemon.submit(busy_spec(200, "true"))
    first: list[Event] = []
    _follow(daemon.client, wf, first, stop_after=50)
    rest: list[Event] = []
    _follow(daemon.client, wf, rest, after=first[-1].seq)
    seqs = [e.seq for e in first + rest]
    assert seqs == [e.seq for e in daemon.events(wf)]
    assert rest[-1].kind == "workflow_done"


def test_sigterm_under_load_stops_in_bounded_time_and_restarts_cleanly(make_daemon):
    d = make_daemon(max_parallel_jobs=8).start()
    wf = d.submit(busy_spec(1500, "sleep 0.05"))
    stop = threading.Event()

    def hammer():
        c = type(d.client)(d.socket)
        while not stop.is_set():
            try:
                c.call("jobs.list", {"workflow_id": wf, "status": "running"})
            except Exception:
                return  # the daemon went away: expected

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    d.wait_for(
        lambda: d.call("workflows.show", {"workflow_id": wf})["counts"].get("completed", 0) > 200,
        what="the workflow to be well under way",
    )
    sent = time.monotonic()
    d.proc.send_signal(signal.SIGTERM)
    code = d.proc.wait(30)
    took = time.monotonic() - sent
    stop.set()
    for t in threads:
        t.join(10)
    print(f"sigterm: stopped in {took:.2f} s with 8 jobs running and 8 clients polling")
    assert code == 0
    assert took < 2 + 5  # the 2 s shutdown grace plus a margin
    d.restart()
    stopped = d.jobs(wf, "terminated")  # what was running; the rest carries on after the restart
    assert 0 < len(stopped) <= 8
    assert all(d.attempts(j.id)[-1].return_code == 143 for j in stopped.values())
    assert d.ctl("workflows", "reset-status", str(wf), "--failed-only")[0] == 0
    assert d.wait(wf, timeout=180).counts == {"completed": 1500}
    check_history(d, wf)


def test_a_request_that_never_finishes_arriving_does_not_hold_up_a_stop(daemon):
    import socket

    half = socket.socket(socket.AF_UNIX)
    half.connect(daemon.socket)
    half.sendall(
        b"POST /rpc HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b'Content-Length: 1000\r\n\r\n{"jsonrpc": "2.0"'
    )  # and never the rest
    time.sleep(0.5)
    sent = time.monotonic()
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(30) == 0
    assert time.monotonic() - sent < 5 + 5  # REQUEST_GRACE plus a margin, not aiohttp's 60 s
    half.close()
