"""GET /metrics with --metrics: Prometheus text computed from the database."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

SPEC = """\
name: m
failure_handlers:
  - name: h
    rules:
      - {exit_codes: [10], max_retries: 3}
      - {exit_codes: [11], recovery_script: "sleep 0.2", max_retries: 3}
jobs:
  - {name: a, command: "[ $TORC_ATTEMPT_ID -ge 3 ] || exit 10", failure_handler: h}
  - {name: b, command: "[ $TORC_ATTEMPT_ID -ge 2 ] || exit 11", failure_handler: h}
  - {name: c, command: "exit 5", failure_handler: h}
"""


def _scrape(d) -> dict[str, list]:
    from torcctl.transport import _UnixConnection

    conn = _UnixConnection(d.socket, 10)
    conn.request("GET", "/metrics")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Content-Type").startswith("text/plain; version=0.0.4")
    text = resp.read().decode()
    conn.close()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def test_metrics_count_jobs_attempts_decisions_and_recovery_time(make_daemon):
    d = make_daemon().start("--metrics")
    wf = d.submit(SPEC)
    d.wait(wf)
    m = _scrape(d)
    jobs = {s.labels["status"]: s.value for s in m["torc_jobs"] if s.labels["workflow"] == str(wf)}
    assert jobs == {"completed": 2, "pending_failed": 1}
    assert [s.value for s in m["torc_attempts"] if s.name == "torc_attempts_total"] == [6]
    decisions = {
        (s.labels["handler"], s.labels["rule"], s.labels["exit_code"], s.labels["action"]): s.value
        for s in m["torc_failure_decisions"]
        if s.name == "torc_failure_decisions_total"
    }
    assert decisions == {
        ("h", "0", "10", "retry"): 2,
        ("h", "1", "11", "recover"): 1,
        ("h", "-1", "5", "pending_failed"): 1,
    }
    rec = {s.name: s for s in m["torc_recovery_script_seconds"] if s.labels.get("le") in (None, "0.1", "+Inf")}
    assert rec["torc_recovery_script_seconds_count"].value == 1
    assert 0.2 <= rec["torc_recovery_script_seconds_sum"].value < 5
    buckets = {s.labels["le"]: s.value for s in m["torc_recovery_script_seconds"] if "le" in s.labels}
    assert (buckets["0.1"], buckets["0.5"], buckets["+Inf"]) == (0, 1, 1)
    d.stop()
    d.start("--metrics")  # figures come from the database: a restart keeps them
    assert [s.value for s in _scrape(d)["torc_attempts"] if s.name == "torc_attempts_total"] == [6]


def test_no_metrics_endpoint_unless_asked(daemon):
    from torcctl.transport import _UnixConnection

    conn = _UnixConnection(daemon.socket, 10)
    conn.request("GET", "/metrics")
    assert conn.getresponse().status == 404
    conn.close()


def test_metrics_have_runtime_and_peak_memory_histograms(make_daemon):
    d = make_daemon().start("--metrics")
    wf = d.submit(
        "name: h\nresource_monitor: {sample_interval_seconds: 0.2}\njobs:\n"
        "  - {name: held, command: '(head -c 40m /dev/zero; sleep 1.2) | tail >/dev/null'}\n"
        "  - {name: quick, command: 'true'}\n"
    )
    d.wait(wf)
    m = _scrape(d)
    runtime = {(s.name, s.labels.get("le")): s.value for s in m["torc_attempt_runtime_seconds"]}
    assert runtime[("torc_attempt_runtime_seconds_count", None)] == 2
    assert (
        runtime[("torc_attempt_runtime_seconds_bucket", "1")],
        runtime[("torc_attempt_runtime_seconds_bucket", "10")],
    ) == (1, 2)
    memory = {(s.name, s.labels.get("le")): s.value for s in m["torc_attempt_peak_memory_bytes"]}
    assert memory[("torc_attempt_peak_memory_bytes_count", None)] == 1  # `true` ended before its first sample
    assert (
        memory[("torc_attempt_peak_memory_bytes_bucket", str(1 << 24))],
        memory[("torc_attempt_peak_memory_bytes_bucket", str(1 << 26))],
    ) == (0, 1)
