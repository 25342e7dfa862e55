"""The dashboard as a person uses it: the real `torcctl dashboard` serving a real daemon, driven in
headless Chromium. Lists update live, a pending_failed job is retried from its page, logs follow,
recover's preview changes nothing until applied, and requests without the session, from another
origin, host or user change nothing."""

from __future__ import annotations

import http.client
import json
import os
import re
import time
import urllib.parse
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from tests.conftest import REPO, run_as
from tests.dashboard_browser import launch, serve_dashboard

SHOTS = REPO / "docs" / "dashboard"
LIVE = 20_000  # ms a live update may take to show (the page refreshes at most once a second)


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = launch(p)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    context.close()
    assert not errors, f"the page raised: {errors}"


@pytest.fixture
def dashboard(daemon):
    with serve_dashboard(daemon.socket) as url:
        yield url


def gate_spec(tmp: Path, name: str = "gated") -> str:
    return f"""
        name: {name}
        jobs:
          - name: wait_for_gate
            command: "while [ ! -e {tmp}/gate ]; do sleep 0.05; done; echo passed"
          - name: after
            command: echo after
            depends_on: [wait_for_gate]
        """


def test_the_workflow_list_renders_and_updates_live_when_a_job_completes(daemon, dashboard, page, tmp_path):
    wf = daemon.submit(gate_spec(tmp_path))
    page.goto(dashboard)
    row = page.locator(f"#workflows tr[data-id='{wf}']")
    expect(row.locator(".progress")).to_have_text("0 / 2")
    assert "token=" not in page.url  # the token leaves the address bar once exchanged
    (tmp_path / "gate").touch()
    expect(row.locator(".progress")).to_have_text("2 / 2", timeout=LIVE)
    expect(row.locator(".state")).to_have_text("done", timeout=LIVE)
    expect(row.locator(".ended")).not_to_be_empty()
    page.reload()  # the session cookie, not the token, keeps the page open
    expect(row.locator(".progress")).to_have_text("2 / 2")


def test_a_pending_failed_job_is_retried_from_its_page_and_the_workflow_completes(daemon, dashboard, page, tmp_path):
    wf = daemon.submit(
        f"""
        name: flaky
        use_pending_failed: true
        jobs:
          - name: flaky
            command: "if [ -e {tmp_path}/2nd ]; then echo fine; else touch {tmp_path}/2nd; echo broke >&2; exit 3; fi"
          - name: report
            command: echo report
            depends_on: [flaky]
        """
    )
    daemon.wait(wf, state="awaiting_classification")
    job = daemon.jobs(wf)["flaky"]
    page.goto(dashboard)
    row = page.locator(f"#workflows tr[data-id='{wf}']")
    expect(row).to_have_class(re.compile("attention"))
    expect(row.locator(".pending-failed")).to_contain_text("1")
    row.locator("a").click()
    page.locator("#graph .node", has_text="flaky").click()
    expect(page.locator("h1")).to_contain_text("flaky")
    expect(page.locator("#attempts")).to_contain_text("3")
    expect(page.locator("#explain")).to_contain_text("exit 3")
    page.locator("input.reason").fill("a transient error")
    page.locator("#retry-job").click()
    daemon.wait(wf, state="done")
    assert daemon.jobs(wf)["flaky"].status == "completed"
    classified = [e for e in daemon.events(wf) if e.kind == "job_classified"]
    assert [(e.source, e.message) for e in classified] == [("dashboard", "a transient error")]
    expect(page.locator("h1")).to_contain_text("completed", timeout=LIVE)
    assert job.id


def test_a_log_follows_what_the_job_writes(daemon, dashboard, page, tmp_path):
    wf = daemon.submit(
        f"""
        name: chatty
        jobs:
          - name: chatty
            command: "for i in $(seq 1 400); do echo line$i; [ -e {tmp_path}/stop ] && break; sleep 0.05; done"
        """
    )
    job = daemon.wait_for(lambda: daemon.jobs(wf)["chatty"].status == "running" and daemon.jobs(wf)["chatty"])
    page.goto(f"{dashboard}#/job/{job.id}")
    log = page.locator("#log")
    expect(log).to_contain_text("line1", timeout=LIVE)
    first = len(log.text_content() or "")
    expect(log).to_contain_text("line30", timeout=LIVE)  # written after the page opened
    assert len(log.text_content() or "") > first
    (tmp_path / "stop").touch()
    daemon.wait(wf)


def test_recover_previews_without_changing_anything_until_applied(daemon, dashboard, page):
    wf = daemon.submit(
        """
        name: slow
        resource_requirements:
          - {name: short, runtime: PT1S}
        jobs:
          - name: slow
            command: sleep 30
            resource_requirements: short
        """
    )
    daemon.wait(wf, state=("done", "awaiting_classification"), timeout=60)
    before = daemon.jobs(wf)["slow"]
    assert before.status == "failed"
    page.goto(f"{dashboard}#/workflow/{wf}/resources")
    page.locator("#recover-show").click()
    expect(page.locator("#adjustments")).to_contain_text("timeout")
    time.sleep(0.5)
    after_preview = daemon.jobs(wf)["slow"]
    assert (after_preview.status, after_preview.runtime_seconds, after_preview.attempt_id) == (
        "failed",
        before.runtime_seconds,
        before.attempt_id,
    )
    page.locator("#recover-apply").click()
    daemon.wait_for(lambda: daemon.jobs(wf)["slow"].runtime_seconds != before.runtime_seconds, what="recover")
    assert daemon.jobs(wf)["slow"].runtime_seconds == pytest.approx(1.4)
    daemon.call("workflows.cancel", {"workflow_id": wf})


def test_a_large_sweep_is_drawn_as_groups_that_open_on_click(daemon, dashboard, page, tmp_path):
    wf = daemon.submit(
        f"""
        name: big_sweep
        jobs:
          - name: gate
            command: "while [ ! -e {tmp_path}/never ]; do sleep 1; done"
          - name: point_{{i}}
            command: echo {{i}}
            parameters: {{i: "1:400"}}
            depends_on: [gate]
          - name: collect
            command: echo collect
            depends_on: ["point_{{i}}"]
            parameters: {{i: "1:400"}}
        """
    )
    page.goto(f"{dashboard}#/workflow/{wf}/graph")
    nodes = page.locator("#graph .node")
    expect(nodes).to_have_count(3)
    group = page.locator("#graph .node", has_text="point_{i}")
    expect(group).to_contain_text("400 jobs")
    group.click()
    expect(page.locator("#expanded .cells a")).to_have_count(400)
    page.locator("#expanded a", has_text="open in the job table").click()
    expect(page.locator("#pager")).to_contain_text("of 400")
    page.locator("#next-page").click()
    expect(page.locator("#pager")).to_have_text("101\N{EN DASH}200 of 400")
    daemon.call("workflows.cancel", {"workflow_id": wf})


# -- who may see it: plain HTTP, as an attacker would send it --


def _request(url: str, method: str = "GET", path: str = "/", headers: dict | None = None, body: dict | None = None):
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, data, {"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, resp.getheaders(), resp.read().decode()
    finally:
        conn.close()


def _session(url: str) -> tuple[str, str, str]:
    """Log in with the token as a browser would: (cookie header, csrf token, host header)."""
    parts = urllib.parse.urlsplit(url)
    status, headers, text = _request(url, path="/?" + parts.query)
    assert status == 200
    cookie = next(v for k, v in headers if k.lower() == "set-cookie").split(";")[0]
    csrf = re.search(r'name="csrf" content="([^"]+)"', text).group(1)
    return cookie, csrf, f"127.0.0.1:{parts.port}"


def test_requests_without_the_session_from_another_origin_or_host_are_refused_and_change_nothing(daemon, dashboard):
    wf = daemon.submit('name: r\nuse_pending_failed: true\njobs:\n  - {name: j, command: "exit 3"}\n')
    daemon.wait(wf, state="awaiting_classification")
    job = daemon.jobs(wf)["j"]
    retry = {"method": "jobs.retry", "params": {"job_ids": [job.id], "reason": "x"}}
    cookie, csrf, host = _session(dashboard)
    origin = f"http://{host}"
    refused = [
        (401, {}),  # no session, no token
        (401, {"Cookie": "torc_dashboard_1=forged"}),
        (403, {"Cookie": cookie, "X-Torc-CSRF": csrf}),  # no Origin
        (403, {"Cookie": cookie, "X-Torc-CSRF": csrf, "Origin": "http://evil.example"}),
        (403, {"Cookie": cookie, "Origin": origin}),  # no CSRF token
        (403, {"Cookie": cookie, "X-Torc-CSRF": "guess", "Origin": origin}),
        (403, {"Cookie": cookie, "X-Torc-CSRF": csrf, "Origin": origin, "Host": "evil.example"}),  # rebinding
    ]
    for status, headers in refused:
        got = _request(dashboard, "POST", "/api/rpc", headers, retry)
        assert got[0] == status, (headers, got)
    parts = urllib.parse.urlsplit(dashboard)
    assert _request(dashboard, path="/?token=wrong")[0] == 401
    assert _request(dashboard, path="/?" + parts.query, headers={"Host": "attacker.example"})[0] == 403
    assert _request(dashboard, path="/api/stream")[0] == 401
    assert _request(dashboard, path=f"/api/log/{job.id}")[0] == 401
    assert daemon.jobs(wf)["j"].status == "pending_failed"  # nothing changed
    # Not a method the dashboard calls, even with a good session.
    ok = {"Cookie": cookie, "X-Torc-CSRF": csrf, "Origin": origin}
    status, _, text = _request(dashboard, "POST", "/api/rpc", ok, {"method": "shutdown", "params": {}})
    assert status == 400 and "does not call" in text
    status, _, text = _request(dashboard, "POST", "/api/rpc", ok, {"method": "jobs.retry", "params": {"job_ids": "x"}})
    assert status == 400 and "job_ids" in text
    assert daemon.call("ping")
    status, _, text = _request(dashboard, "POST", "/api/rpc", ok, retry)
    assert status == 200 and daemon.jobs(wf)["j"].status != "pending_failed"


def test_another_user_on_the_host_gets_nothing_even_with_the_token(daemon, dashboard, other_user, shared_tmp):
    wf = daemon.submit('name: r\nuse_pending_failed: true\njobs:\n  - {name: j, command: "exit 3"}\n')
    daemon.wait(wf, state="awaiting_classification")
    parts = urllib.parse.urlsplit(dashboard)
    out = Path(shared_tmp) / "seen"
    out.touch()
    os.chmod(out, 0o666)

    origin = f"http://127.0.0.1:{parts.port}"

    def attempt() -> None:
        statuses = [
            _request(dashboard, path="/?" + parts.query)[0],
            _request(dashboard, path="/api/stream?" + parts.query)[0],
            _request(
                dashboard,
                "POST",
                "/api/rpc",
                {"Origin": origin},
                {"method": "workflows.list"},
            )[0],
        ]
        out.write_text(json.dumps(statuses))

    run_as(other_user, attempt)
    assert json.loads(out.read_text()) == [403, 403, 403]
    assert daemon.jobs(wf)["j"].status == "pending_failed"


def test_a_page_on_another_origin_cannot_act_through_the_users_browser(daemon, dashboard, page, tmp_path):
    """The user is logged in; a page from another site posts to the dashboard: the SameSite cookie
    stays home, so the daemon is never asked."""
    import http.server
    import threading

    wf = daemon.submit('name: r\nuse_pending_failed: true\njobs:\n  - {name: j, command: "exit 3"}\n')
    daemon.wait(wf, state="awaiting_classification")
    job = daemon.jobs(wf)["j"]
    page.goto(dashboard)
    expect(page.locator(f"#workflows tr[data-id='{wf}']")).to_be_visible()
    target = dashboard.split("?")[0] + "api/rpc"
    body = json.dumps({"method": "jobs.retry", "params": {"job_ids": [job.id]}})
    attack = f"""<html><body>
        <form id=f method=POST action="{target}" enctype="text/plain">
          <input name='{{"method":"jobs.retry","params":{{"job_ids":[{job.id}],"x":"' value='"}}}}'>
        </form>
        <script>
          fetch("{target}", {{method: "POST", mode: "no-cors", credentials: "include", body: '{body}'}})
            .finally(() => document.getElementById("f").submit())
        </script></body></html>"""

    class Evil(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(attack.encode())

        def log_message(self, *args) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.2", 0), Evil)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        evil = page.context.new_page()
        evil.goto(f"http://127.0.0.2:{server.server_port}/")
        evil.wait_for_load_state("networkidle")
        time.sleep(1)
    finally:
        server.shutdown()
    assert daemon.jobs(wf)["j"].status == "pending_failed"


def test_the_daemon_serves_the_dashboard_with_its_url_in_a_private_file(make_daemon, page):
    d = make_daemon().start("--dashboard-port", "0")
    url_file = Path(d.state_dir) / "dashboard.url"
    assert url_file.stat().st_mode & 0o777 == 0o600
    url = url_file.read_text().strip()
    wf = d.submit("name: hosted\njobs:\n  - {name: a, command: 'true'}\n")
    d.wait(wf)
    page.goto(url)
    expect(page.locator(f"#workflows tr[data-id='{wf}'] .state")).to_have_text("done")


def test_the_dashboard_command_refuses_a_bad_port_in_one_line(daemon):
    import socket
    import subprocess
    import sys

    with socket.create_server(("127.0.0.1", 0)) as held:
        port = held.getsockname()[1]
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "torcctl",
                "--socket",
                daemon.socket,
                "dashboard",
                "--no-browser",
                "--port",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "in use" in r.stderr
    code, _, err = daemon.ctl("dashboard", "--no-browser", "--port", "70000")
    assert code == 2 and "--port" in err


def test_events_list_gives_the_latest_events_in_order(daemon):
    wf = daemon.submit("name: e\njobs:\n" + "".join(f"  - {{name: j{i}, command: 'true'}}\n" for i in range(5)))
    daemon.wait(wf)
    every = [e.seq for e in daemon.events(wf)]
    latest = daemon.call("events.list", {"workflow_id": wf, "last": 3})
    assert [e["seq"] for e in latest] == every[-3:]
    assert [e["seq"] for e in daemon.call("events.list", {"workflow_id": wf, "last": 3, "after": every[-2]})] == every[
        -1:
    ]
    assert len(every) > 3


def test_screenshots_of_the_main_pages_for_the_docs(daemon, dashboard, page, tmp_path):
    """docs/dashboard.md shows these: a sweep with a failure parked for a person and one that ran
    out of time, and a workflow that completed."""
    done = daemon.submit("name: nightly_report\njobs:\n  - {name: fetch, command: 'echo fetched'}\n", name="n.yaml")
    wf = daemon.submit(
        """
        name: calibration_sweep
        use_pending_failed: true
        resource_requirements:
          - {name: quick, runtime: PT2S, memory: 200m}
        failure_handlers:
          - name: retry_transient
            rules:
              - {exit_codes: [75], max_retries: 2}
        jobs:
          - name: prepare
            command: echo preparing inputs
          - name: fit_{site}_{k}
            command: "echo fitting {site} k={k}; sleep 0.{k}; [ {k} != 3 ] || [ {site} != north ] || exit 4"
            parameters: {site: "['north', 'south']", k: "1:4"}
            depends_on: [prepare]
            failure_handler: retry_transient
            resource_requirements: quick
          - name: slow_fit
            command: sleep 10
            depends_on: [prepare]
            resource_requirements: quick
          - name: summarize
            command: echo summary
            depends_on: ["fit_{site}_{k}", slow_fit]
            parameters: {site: "['north', 'south']", k: "1:4"}
        """,
        name="sweep.yaml",
    )
    daemon.wait(done)
    daemon.wait(wf, state="awaiting_classification", timeout=60)
    failed = daemon.jobs(wf)["fit_north_3"]
    SHOTS.mkdir(exist_ok=True)
    page.goto(dashboard)
    expect(page.locator(f"#workflows tr[data-id='{wf}']")).to_be_visible()
    page.screenshot(path=SHOTS / "workflows.png")
    page.goto(f"{dashboard}#/workflow/{wf}/graph")
    expect(page.locator("#graph .node").first).to_be_visible()
    page.screenshot(path=SHOTS / "workflow-graph.png")
    page.goto(f"{dashboard}#/workflow/{wf}/jobs")
    expect(page.locator("#jobs tbody tr").first).to_be_visible()
    page.screenshot(path=SHOTS / "workflow-jobs.png")
    page.goto(f"{dashboard}#/workflow/{wf}/resources")
    page.locator("#recover-show").click()
    expect(page.locator("#adjustments")).to_be_visible()
    for name in ("memory", "runtime", "timeline"):
        expect(page.locator(f"#plot-{name}")).to_be_visible()
        page.wait_for_function(f"document.getElementById('plot-{name}').naturalWidth > 0")
    page.screenshot(path=SHOTS / "workflow-resources.png", full_page=True)
    page.goto(f"{dashboard}#/job/{failed.id}")
    expect(page.locator("#log")).to_contain_text("fitting north", timeout=LIVE)
    page.locator("#log-stream").select_option("stdout")
    page.screenshot(path=SHOTS / "job.png", full_page=True)
    for name in ("workflows", "workflow-graph", "workflow-jobs", "workflow-resources", "job"):
        assert (SHOTS / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_workflows_actions_and_their_firings_are_shown(daemon, dashboard, page):
    wf = daemon.submit(
        """
        name: with_actions
        actions:
          - trigger_type: on_workflow_start
            action_type: run_commands
            commands: [echo starting]
          - trigger_type: on_workflow_complete
            action_type: run_commands
            commands: ["exit 5"]
        jobs:
          - {name: a, command: "true"}
        """
    )
    daemon.wait(wf)
    daemon.wait_for(lambda: all(a["state"] != "armed" for a in daemon.call("actions.list", {"workflow_id": wf})))
    actions = daemon.call("actions.list", {"workflow_id": wf})
    assert [(a["index"], a["trigger"], a["state"]) for a in actions] == [
        (0, "on_workflow_start", "done"),
        (1, "on_workflow_complete", "failed"),
    ]
    page.goto(f"{dashboard}#/workflow/{wf}/actions")
    expect(page.locator("#actions tr[data-state='failed']")).to_contain_text("exit 5")
    expect(page.locator("#action-runs")).to_contain_text("action_finished")
