"""`GET /metrics` (torcd --metrics): Prometheus text, computed from the database at each scrape,
so the figures survive restarts and nothing is counted on the job path."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from torcd.core.status import JobStatus
from torcd.store.queries import MEMORY_BUCKETS, RECOVERY_BUCKETS, RUNTIME_BUCKETS, Queries

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


async def render(queries: Queries) -> bytes:
    rows = await queries.metric_rows()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(rows))
    return generate_latest(registry)


class _Snapshot(Collector):
    def __init__(self, rows: Mapping[str, Sequence]):
        self.rows = rows

    def collect(self) -> Iterable:
        jobs = GaugeMetricFamily("torc_jobs", "Jobs by workflow and status.", labels=["workflow", "status"])
        for wf, status, n in self.rows["jobs"]:
            jobs.add_metric([str(wf), JobStatus(status).label], n)
        attempts = CounterMetricFamily("torc_attempts", "Attempts started, by workflow.", labels=["workflow"])
        for wf, n in self.rows["attempts"]:
            attempts.add_metric([str(wf)], n)
        decisions = CounterMetricFamily(
            "torc_failure_decisions",
            "What failure handlers decided for failed attempts: retry, recover, "
            "fail or pending_failed, by handler, rule (-1: none matched) and exit code.",
            labels=["workflow", "handler", "rule", "exit_code", "action"],
        )
        for wf, handler, rule, rc, action, n in self.rows["decisions"]:
            decisions.add_metric([str(wf), handler, str(rule), str(rc), action], n)
        recovery = _histogram(
            "torc_recovery_script_seconds", "How long recovery scripts ran.", self.rows["recoveries"], RECOVERY_BUCKETS
        )
        runtime = _histogram(
            "torc_attempt_runtime_seconds",
            "How long attempts ran (start to exit).",
            self.rows["runtimes"],
            RUNTIME_BUCKETS,
        )
        memory = _histogram(
            "torc_attempt_peak_memory_bytes",
            "The most memory each sampled attempt's processes used together.",
            self.rows["peak_memory"],
            MEMORY_BUCKETS,
        )
        allocations = GaugeMetricFamily(
            "torc_allocations", "Slurm allocations by workflow and state.", labels=["workflow", "state"]
        )
        for wf, state, n in self.rows["allocations"]:
            allocations.add_metric([str(wf), state], n)
        return [jobs, attempts, decisions, recovery, runtime, memory, allocations]


def _histogram(name: str, doc: str, rows: Sequence, bounds: tuple) -> HistogramMetricFamily:
    """A histogram by workflow from rows of (workflow, count, sum, cumulative count per bound)."""
    family = HistogramMetricFamily(name, doc, labels=["workflow"])
    for wf, count, total, *under in rows:
        buckets = [(str(b), n or 0) for b, n in zip(bounds, under)] + [("+Inf", count)]
        family.add_metric([str(wf)], buckets, total)
    return family
