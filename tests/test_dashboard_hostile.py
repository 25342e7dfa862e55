"""The dashboard against hostile and careless use: odd request bodies and hosts, a daemon gone,
many tabs, live updates while the user types, filters hiding selected jobs, a workflow deleted
while shown. The real `torcctl dashboard` for a real daemon, over plain HTTP and in headless
Chromium."""

from __future__ import annotations

import time

from playwright.sync_api import expect

from tests.test_dashboard import LIVE, _request, _session, browser, dashboard, gate_spec, page  # noqa: F401
from torcctl.dashboard.access import Seen, Sessions, judge


def test_a_method_that_is_not_a_name_is_refused_with_400_not_a_traceback(daemon, dashboard):
    cookie, csrf, host = _session(dashboard)
    ok = {"Cookie": cookie, "X-Torc-CSRF": csrf, "Origin": f"http://{host}"}
    for method in ([1], {"a": 1}, None, 7):
        status, _, text = _request(dashboard, "POST", "/api/rpc", ok, {"method": method, "params": {}})
        assert status == 400 and "error" in text, (method, status, text)


def test_plots_and_logs_say_the_daemon_is_gone_rather_than_500(daemon, dashboard):
    wf = daemon.submit('name: r\njobs:\n  - {name: j, command: "echo hi"}\n')
    daemon.wait(wf)
    job = daemon.jobs(wf)["j"]
    cookie, _, _ = _session(dashboard)
    daemon.stop()
    for path in (f"/api/plots/{wf}/memory.svg", f"/api/log/{job.id}", f"/api/graph/{wf}"):
        status, _, text = _request(dashboard, path=path, headers={"Cookie": cookie})
        assert status == 502 and "torcd" in text, (path, status, text)


def test_a_host_with_anything_after_the_ipv6_brackets_is_not_loopback():
    sessions = Sessions()
    sid = sessions.open()
    for host in ("[::1]evil.example", "[::1]evil.example:80", "[::1].attacker.example"):
        verdict = judge(Seen("GET", host, session=sid), sessions)
        assert (verdict.outcome, verdict.status) == ("refuse", 403), host
    for host in ("[::1]", "[::1]:8765", "LOCALHOST:1", "127.0.0.1"):
        assert judge(Seen("GET", host, session=sid), sessions).outcome == "allow", host


def test_several_job_pages_open_in_tabs_leave_the_dashboard_usable(daemon, dashboard, page, tmp_path):
    """Each job page holds two event streams (the workflow's and the log's); a browser opens at most
    six HTTP/1.1 connections to one host, so three such tabs starve every other request."""
    wf = daemon.submit(gate_spec(tmp_path))
    job = daemon.wait_for(
        lambda: daemon.jobs(wf)["wait_for_gate"].status == "running" and daemon.jobs(wf)["wait_for_gate"]
    )
    page.goto(dashboard)
    expect(page.locator(f"#workflows tr[data-id='{wf}']")).to_be_visible()
    base = dashboard.split("?")[0]
    for _ in range(3):
        tab = page.context.new_page()
        tab.goto(f"{base}#/job/{job.id}")
        expect(tab.locator("#log-note")).to_be_attached()
    try:
        last = page.context.new_page()
        last.goto(f"{base}#/workflow/{wf}/jobs", timeout=15_000)
        expect(last.locator("#jobs tbody tr")).to_have_count(2, timeout=10_000)
    finally:
        (tmp_path / "gate").touch()


def test_a_reason_being_typed_on_a_job_page_survives_live_updates(daemon, dashboard, page, tmp_path):
    wf = daemon.submit(
        f"""
        name: busy
        use_pending_failed: true
        jobs:
          - {{name: bad, command: "exit 3"}}
          - {{name: gate, command: "while [ ! -e {tmp_path}/gate ]; do sleep 0.05; done"}}
          - name: tick_{{i}}
            command: sleep 0.2
            parameters: {{i: "1:60"}}
            depends_on: [gate]
        """
    )
    daemon.wait_for(lambda: daemon.jobs(wf)["bad"].status == "pending_failed")
    page.goto(f"{dashboard}#/job/{daemon.jobs(wf)['bad'].id}")
    box = page.locator("input.reason")
    box.click()
    (tmp_path / "gate").touch()  # the other jobs now finish, several a second
    reason = "the node had a bad disk yesterday"
    page.keyboard.type(reason, delay=100)
    assert box.input_value() == reason
    daemon.call("workflows.cancel", {"workflow_id": wf})


def test_jobs_filtered_out_of_the_table_are_not_retried(daemon, dashboard, page):
    wf = daemon.submit(
        'name: r\nuse_pending_failed: true\njobs:\n  - {name: alpha, command: "exit 3"}\n'
        '  - {name: beta, command: "exit 3"}\n'
    )
    daemon.wait(wf, state="awaiting_classification")
    page.goto(f"{dashboard}#/workflow/{wf}/jobs")
    page.locator("#jobs tr", has_text="alpha").locator("input[type=checkbox]").check()
    page.locator("#name-filter").fill("beta")
    expect(page.locator("#jobs tbody tr")).to_have_count(1)
    page.locator("input.reason").fill("only what I see")
    page.locator("#retry-selected").click()
    time.sleep(1.5)
    assert daemon.jobs(wf)["alpha"].attempt_id == 1  # alpha, no longer shown, was not retried


def test_a_workflow_deleted_while_viewed_says_so(daemon, dashboard, page, tmp_path):
    wf = daemon.submit(gate_spec(tmp_path))
    page.goto(f"{dashboard}#/workflow/{wf}/jobs")
    expect(page.locator("#jobs tbody tr")).to_have_count(2)
    daemon.call("workflows.cancel", {"workflow_id": wf})
    expect(page.locator("h1")).to_contain_text("canceled", timeout=LIVE)  # the page is live
    daemon.call("workflows.delete", {"workflow_id": wf})
    # Not a stale page that still offers to retry and cancel what is gone.
    expect(page.locator("body")).to_contain_text(f"no workflow {wf}", timeout=LIVE)


def test_a_deeply_nested_body_is_refused_with_400_not_a_traceback(daemon, dashboard):
    import http.client
    import urllib.parse

    cookie, csrf, host = _session(dashboard)
    parts = urllib.parse.urlsplit(dashboard)
    deep = b'{"method": "workflows.list", "params": {"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=20)
    try:
        conn.request(
            "POST",
            "/api/rpc",
            deep,
            {"Content-Type": "application/json", "Cookie": cookie, "X-Torc-CSRF": csrf, "Origin": f"http://{host}"},
        )
        resp = conn.getresponse()
        status, text = resp.status, resp.read().decode()
    finally:
        conn.close()
    assert status == 400 and "JSON" in text, (status, text)
