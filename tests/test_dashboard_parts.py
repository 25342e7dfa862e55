"""The dashboard's parts that decide without a browser: who may see it (a table), where the DAG's
nodes go, which user holds a loopback connection, a log followed as it grows, and the fan-out of
events to browsers."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from torcctl.dashboard.access import MAX_SESSIONS, Seen, Sessions, host_name, judge
from torcctl.dashboard.hub import Hub
from torcctl.dashboard.layout import columns, place
from torcctl.dashboard.logs import CHUNK_BYTES, Follower
from torcctl.dashboard.peers import peer_uid

S = Sessions(token="the-token")
SID = S.open()
CSRF = S.csrf[SID]
HOST = "127.0.0.1:8080"
ORIGIN = "http://127.0.0.1:8080"

# (what the request shows, outcome, status)
ACCESS = [
    (Seen("GET", HOST, token="the-token"), "login", 200),
    (Seen("GET", "localhost:9999", token="the-token"), "login", 200),  # an SSH tunnel's port
    (Seen("GET", "[::1]:8080", token="the-token"), "login", 200),
    (Seen("GET", HOST, token="wrong"), "refuse", 401),
    (Seen("GET", HOST), "refuse", 401),
    (Seen("GET", HOST, session="forged"), "refuse", 401),
    (Seen("GET", HOST, session=SID), "allow", 200),
    (Seen("HEAD", HOST, session=SID), "allow", 200),
    (Seen("GET", "evil.example:8080", session=SID), "refuse", 403),  # DNS rebinding
    (Seen("GET", "127.0.0.1.evil.example", token="the-token"), "refuse", 403),
    (Seen("GET", None, session=SID), "refuse", 403),
    (Seen("GET", HOST, session=SID, peer_is_user=False), "refuse", 403),  # another user, even with a session
    (Seen("GET", HOST, token="the-token", peer_is_user=False), "refuse", 403),
    (Seen("POST", HOST, origin=ORIGIN, session=SID, csrf=CSRF), "allow", 200),
    (Seen("POST", HOST, origin=ORIGIN.upper(), session=SID, csrf=CSRF), "allow", 200),
    (Seen("POST", HOST, origin="http://evil.example", session=SID, csrf=CSRF), "refuse", 403),
    (Seen("POST", HOST, origin="null", session=SID, csrf=CSRF), "refuse", 403),
    (Seen("POST", HOST, session=SID, csrf=CSRF), "refuse", 403),  # no Origin
    (Seen("POST", HOST, origin="http://localhost:8080", session=SID, csrf=CSRF), "refuse", 403),
    (Seen("POST", HOST, origin=ORIGIN, session=SID), "refuse", 403),  # no CSRF token
    (Seen("POST", HOST, origin=ORIGIN, session=SID, csrf="guess"), "refuse", 403),
    (Seen("POST", HOST, origin=ORIGIN, token="the-token", csrf=CSRF), "refuse", 401),  # the token opens no change
    (Seen("POST", HOST, origin=ORIGIN, csrf=CSRF), "refuse", 401),
    (Seen("GET", HOST, origin=ORIGIN, session=SID, websocket=True), "allow", 200),
    (Seen("GET", HOST, session=SID, websocket=True), "refuse", 403),  # no Origin: not the page's
    (Seen("GET", HOST, origin="http://evil.example", session=SID, websocket=True), "refuse", 403),
    (Seen("GET", HOST, origin=ORIGIN, token="the-token", websocket=True), "refuse", 401),
]


@pytest.mark.parametrize(("seen", "outcome", "status"), ACCESS)
def test_who_may_see_the_dashboard(seen: Seen, outcome: str, status: int) -> None:
    verdict = judge(seen, S)
    assert (verdict.outcome, verdict.status) == (outcome, status), verdict.reason
    assert verdict.outcome != "refuse" or verdict.reason


@pytest.mark.parametrize(
    ("host", "name"),
    [("localhost:80", "localhost"), ("127.0.0.1", "127.0.0.1"), ("[::1]:8080", "[::1]"), ("[::1]", "[::1]")],
)
def test_host_name_drops_the_port(host: str, name: str) -> None:
    assert host_name(host) == name


def test_a_session_carries_its_own_csrf_token_and_old_sessions_are_evicted() -> None:
    sessions = Sessions()
    first = sessions.open()
    assert not sessions.csrf_matches(first, S.csrf[SID])
    for _ in range(MAX_SESSIONS):
        sessions.open()
    assert not sessions.known(first) and len(sessions.csrf) == MAX_SESSIONS


# -- layout --


def test_columns_follow_the_longest_path_and_survive_cycles() -> None:
    assert columns(["a", "b", "c", "d"], [("a", "b"), ("b", "c"), ("a", "c"), ("c", "d")]) == {
        "a": 0,
        "b": 1,
        "c": 2,
        "d": 3,
    }
    cyc = columns(["x", "y", "z"], [("x", "y"), ("y", "x"), ("y", "z")])
    assert set(cyc) == {"x", "y", "z"} and cyc["z"] > cyc["y"]


@given(
    st.integers(1, 40).flatmap(
        lambda n: st.tuples(
            st.just([f"n{i}" for i in range(n)]),
            st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=3 * n),
        )
    )
)
def test_every_node_gets_its_own_place_and_acyclic_edges_point_right(graph) -> None:
    keys, pairs = graph
    edges = [(keys[a], keys[b]) for a, b in pairs]
    placed = place(keys, edges)
    assert sorted(p.key for p in placed) == sorted(keys)
    assert len({(p.x, p.y) for p in placed}) == len(keys)
    col = {p.key: p.column for p in placed}
    if all(a < b for a, b in pairs):  # a DAG by index order
        assert all(col[keys[a]] < col[keys[b]] for a, b in pairs)


# -- peers --


def test_the_peer_of_a_loopback_connection_is_this_user() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    with server, socket.create_connection(server.getsockname()) as c:
        conn, peer = server.accept()
        with conn:
            assert peer_uid(peer, conn.getsockname()) == os.getuid()
            assert c.getsockname() == peer
    assert peer_uid(("127.0.0.1", 1), ("127.0.0.1", 2)) == -1  # no such connection: nobody


# -- logs --


def test_a_log_is_followed_from_its_tail_through_growth_and_truncation(tmp_path) -> None:
    path = tmp_path / "job_1.o"
    f = Follower(str(path), tail_bytes=10)
    assert f.read().note == "missing"
    assert f.read() is None  # still missing: nothing new to say
    path.write_bytes(b"0123456789abcdefghij")
    assert f.read().text == "abcdefghij"
    assert f.read() is None
    with open(path, "ab") as out:
        out.write("é".encode()[:1])  # half a character: held back until the rest comes
    assert f.read().text == ""
    with open(path, "ab") as out:
        out.write("é".encode()[1:] + b"!")
    assert f.read().text == "é!"
    path.write_bytes(b"new")
    piece = f.read()
    assert (piece.text, piece.note) == ("new", "truncated")


def test_a_huge_log_is_read_a_chunk_at_a_time(tmp_path) -> None:
    path = tmp_path / "big"
    path.write_bytes(b"x" * (3 * CHUNK_BYTES))
    f = Follower(str(path), tail_bytes=3 * CHUNK_BYTES)
    sizes = []
    while (piece := f.read()) is not None:
        sizes.append(len(piece.text))
    assert sizes == [CHUNK_BYTES] * 3


@pytest.mark.parametrize("kind", ["fifo", "symlink", "directory"])
def test_a_log_a_job_turned_into_something_else_is_refused_not_read(tmp_path, kind: str) -> None:
    path = tmp_path / "job_1.o"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "symlink":
        (tmp_path / "secret").write_text("do not show")
        path.symlink_to(tmp_path / "secret")
    else:
        path.mkdir()
    piece = Follower(str(path)).read()
    assert piece is not None and piece.note.startswith("unreadable") and piece.text == ""


# -- the hub --


def test_the_hub_coalesces_events_and_drops_a_browser_that_stops_reading() -> None:
    events = [{"seq": i, "workflow_id": 1 + i % 2, "kind": "job_completed"} for i in range(1, 1001)]

    async def scenario() -> None:
        hub = Hub(lambda after: iter(()), tick=3600)
        both, one, slow = hub.subscribe(None), hub.subscribe(1), hub.subscribe(2)
        for e in events:
            hub._arrive(e)
        hub.flush()
        m = both.queue.get_nowait()
        assert m["changed"] == [1, 2] and m["events"] == []
        m = one.queue.get_nowait()
        assert len(m["events"]) == 200 and m["skipped"] == 300 and m["events"][-1]["seq"] == 1000
        for _ in range(40):  # nobody reads `slow` (nor the others)
            hub._arrive(events[1])
            hub.flush()
        assert slow.dropped and slow not in hub.subscribers
        assert hub.last_seq == 1000
        hub.close()

    asyncio.run(scenario())
