"""A stream's backlog is read a page at a time (10,000 events) and still arrives whole and in order."""

from __future__ import annotations

from torcctl.transport import Transport


def test_a_backlog_longer_than_a_page_streams_whole_and_in_order(daemon):
    wf = daemon.submit('name: many\njobs:\n  - {name: "j{i}", command: ":", parameters: {i: "1:5100"}}\n')
    daemon.wait(wf, timeout=120)
    listed, after = [], 0
    while page := daemon.call("events.list", {"workflow_id": wf, "after": after, "limit": 5000}):
        listed += [e["seq"] for e in page]
        after = page[-1]["seq"]
    assert len(listed) > 10_000  # more than one page of the stream's backlog
    streamed = [e.seq for e in Transport(daemon.socket, timeout=60).events(wf, 0, until_done=True)]
    assert streamed == listed
