"""The dashboard under load: prints a table of figures (medians).

    python benchmarks/dashboard.py big [--jobs 100000]      # a 100,000-job workflow's pages
    python benchmarks/dashboard.py follow [--jobs 20000]    # the daemon's CPU with 5 dashboards following

`big`: a parameter sweep of --jobs jobs (all waiting on one gate job, so nothing runs). Server
time: the dashboard's own HTTP answers (the DAG, a page of the job table at the start, middle and
end, sorted by id, name and status, and its count), timed from a Python client with the session
cookie. Browser time: Chromium opening the workflow's graph until the nodes are drawn (the first
useful paint), the job table until its rows are there, and one click on "next" until the next page
shows.

`follow`: emulated Slurm workers complete --jobs trivial jobs as fast as the daemon answers
(as `bench.py workers`), first with no dashboard, then with 5 `torcctl dashboard` processes each
showing the workflow's page in Chromium; the same twice each, alternating. Reported: the jobs
completed per second and the daemon's CPU seconds (from /proc) per run, and the extra CPU the
dashboards cost the daemon as a share of one core.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import http.client
import json
import os
import re
import statistics
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.bench import Daemon, _cpu_seconds, _emulated_workers, print_table  # noqa: E402
from tests.dashboard_browser import launch, serve_dashboard  # noqa: E402
from torcctl.transport import Transport  # noqa: E402


def login(url: str) -> tuple[http.client.HTTPConnection, dict[str, str]]:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=300)
    conn.request("GET", "/?" + parts.query)
    resp = conn.getresponse()
    text = resp.read().decode()
    cookie = resp.getheader("Set-Cookie").split(";")[0]
    csrf = re.search(r'name="csrf" content="([^"]+)"', text).group(1)
    return conn, {"Cookie": cookie, "X-Torc-CSRF": csrf, "Origin": f"http://127.0.0.1:{parts.port}"}


def timed(conn: http.client.HTTPConnection, headers: dict, method: str, path: str, body: dict | None = None) -> float:
    data = json.dumps(body).encode() if body is not None else None
    t = time.perf_counter()
    conn.request(method, path, data, {**headers, "Content-Type": "application/json"})
    resp = conn.getresponse()
    resp.read()
    elapsed = time.perf_counter() - t
    if resp.status != 200:
        raise RuntimeError(f"{path} {body}: HTTP {resp.status}")
    return elapsed * 1000


def median_ms(fn, runs: int) -> float:
    return statistics.median(fn() for _ in range(runs))


def big(args) -> list[dict]:
    root = Path(tempfile.mkdtemp(prefix="torc-dash-bench-"))
    d = Daemon(root, 2)
    rows: list[dict] = []
    try:
        spec = {
            "name": "big",
            "jobs": [
                {"name": "gate", "command": f"while [ ! -e {root}/never ]; do sleep 1; done"},
                {
                    "name": "point_{i}",
                    "command": "echo {i}",
                    "parameters": {"i": f"1:{args.jobs}"},
                    "depends_on": ["gate"],
                },
                {
                    "name": "collect",
                    "command": "true",
                    "depends_on": ["point_{i}"],
                    "parameters": {"i": f"1:{args.jobs}"},
                },
            ],
        }
        t = time.perf_counter()
        wf = Transport(d.socket, timeout=600).call(
            "workflows.create", {"spec_text": json.dumps(spec), "spec_format": "json", "cwd": str(root)}
        )["id"]
        print(f"created a {args.jobs + 2:,}-job workflow in {time.perf_counter() - t:.1f} s")
        with serve_dashboard(d.socket) as url:
            conn, headers = login(url)

            def rpc(method: str, params: dict) -> float:
                return timed(conn, headers, "POST", "/api/rpc", {"method": method, "params": params})

            def row(what: str, fn) -> None:
                rows.append({"what": what, "ms": median_ms(fn, args.runs)})

            row("server: the DAG (/api/graph)", lambda: timed(conn, headers, "GET", f"/api/graph/{wf}"))
            row("server: workflows.show", lambda: rpc("workflows.show", {"workflow_id": wf}))
            row("server: jobs.count", lambda: rpc("jobs.count", {"workflow_id": wf}))
            for sort in ("id", "name", "status"):
                for offset in (0, args.jobs // 2, args.jobs - 100):
                    page = {"workflow_id": wf, "sort": sort, "limit": 100, "offset": offset}
                    row(f"server: jobs page by {sort} at {offset:,}", lambda page=page: rpc("jobs.list", page))
            rows.extend(browser_times(url, wf, args.runs))
    finally:
        d.stop()
    print_table(f"a {args.jobs + 2:,}-job workflow in the dashboard (medians of {args.runs})", rows)
    return rows


def browser_times(url: str, wf: int, runs: int) -> list[dict]:
    from playwright.sync_api import expect, sync_playwright

    paint, table, flip = [], [], []
    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.goto(url)
        base = url.split("?")[0]
        for _ in range(runs):
            page.goto("about:blank")
            t = time.perf_counter()
            page.goto(f"{base}#/workflow/{wf}/graph")
            page.locator("#graph .node").first.wait_for()
            paint.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            page.goto(f"{base}#/workflow/{wf}/jobs")
            page.locator("#jobs tbody tr").nth(99).wait_for()
            table.append((time.perf_counter() - t) * 1000)
            before = page.locator("#pager").text_content()
            t = time.perf_counter()
            page.locator("#next-page").click()
            expect(page.locator("#pager")).not_to_have_text(before or "")
            flip.append((time.perf_counter() - t) * 1000)
        browser.close()
    return [
        {"what": "browser: graph page, first useful paint", "ms": statistics.median(paint)},
        {"what": "browser: job table page, 100 rows shown", "ms": statistics.median(table)},
        {"what": "browser: next page of the job table", "ms": statistics.median(flip)},
    ]


def one_run(jobs: int, dashboards: int, rate: float | None) -> dict:
    root = Path(tempfile.mkdtemp(prefix="torc-dash-follow-"))
    d = Daemon(root, 1, "--listen", "127.0.0.1:0")
    try:
        spec = f"name: w\njobs:\n  - {{name: 'j{{i}}', command: 'true', parameters: {{i: '1:{jobs}'}}}}\n"
        wf = Transport(d.socket, timeout=120).call(
            "workflows.create", {"spec_text": spec, "cwd": str(root), "executor": "slurm"}
        )["id"]
        with contextlib.ExitStack() as stack:
            pages = []
            if dashboards:
                from playwright.sync_api import sync_playwright

                p = stack.enter_context(sync_playwright())
                browser = launch(p)
                stack.callback(browser.close)
                for _ in range(dashboards):
                    url = stack.enter_context(serve_dashboard(d.socket))
                    page = browser.new_page()
                    page.goto(url + f"#/workflow/{wf}/events")
                    page.locator("#events").wait_for()
                    pages.append(page)
            cpu = _cpu_seconds(d.proc.pid)
            # Playwright's sync API holds this thread's event loop: the workers get a thread of their own.
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                wall = pool.submit(asyncio.run, _emulated_workers(d.socket, wf, 20, 8, jobs, rate)).result()
            cpu = _cpu_seconds(d.proc.pid) - cpu
            shown = [p.locator("#events div").count() for p in pages]
    finally:
        d.stop()
    return {
        "dashboards": dashboards,
        "jobs_per_s": jobs / wall,
        "wall_s": wall,
        "daemon_cpu_s": cpu,
        "events_shown": min(shown, default=0),
    }


def follow(args) -> list[dict]:
    rows = [one_run(args.jobs, n, args.rate or None) for _ in range(args.repeat) for n in (0, 5)]
    pace = f"at {args.rate:,.0f} a second" if args.rate else "as fast as the daemon goes"
    print_table(f"{args.jobs:,} jobs completed by emulated workers {pace}, with 0 and 5 dashboards following", rows)
    base = [r for r in rows if r["dashboards"] == 0]
    five = [r for r in rows if r["dashboards"] == 5]
    rate0 = statistics.median(r["jobs_per_s"] for r in base)
    rate5 = statistics.median(r["jobs_per_s"] for r in five)
    # Extra daemon CPU per second of a run at the same pace, as a share of one core.
    per_job0 = statistics.median(r["daemon_cpu_s"] / args.jobs for r in base)
    per_job5 = statistics.median(r["daemon_cpu_s"] / args.jobs for r in five)
    extra = (per_job5 - per_job0) * rate5
    summary = [
        {
            "jobs_per_s_0": rate0,
            "jobs_per_s_5": rate5,
            "throughput_ratio": rate5 / rate0,
            "daemon_cpu_ms_per_job_0": per_job0 * 1000,
            "daemon_cpu_ms_per_job_5": per_job5 * 1000,
            "extra_daemon_cpu_share_of_a_core": extra,
        }
    ]
    print_table("summary (medians)", summary)
    return rows + summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["big", "follow"])
    ap.add_argument("--jobs", type=int, help="jobs in the workflow (big: 100,000; follow: 20,000)")
    ap.add_argument("--runs", type=int, default=5, help="samples per figure in `big`")
    ap.add_argument("--repeat", type=int, default=2, help="runs of each case in `follow`")
    ap.add_argument("--rate", type=float, default=1000, help="follow: completions a second (0: as fast as it goes)")
    args = ap.parse_args()
    args.jobs = args.jobs or (100_000 if args.what == "big" else 20_000)
    print(f"machine: {os.cpu_count()} cpus")
    {"big": big, "follow": follow}[args.what](args)


if __name__ == "__main__":
    main()
