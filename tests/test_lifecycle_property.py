"""Random stimulus sequences through the lifecycle, applied to an in-memory model of the tables.

Properties: no change leaves the status table; attempt numbers are never reused or skipped; a
report for another attempt changes nothing but closing that attempt; and every job can always
be driven to a final status (no job is lost or stuck)."""

from __future__ import annotations

import collections

from hypothesis import given, settings
from hypothesis import strategies as st

from torcd.core import lifecycle as L
from torcd.core.retry import Rule, decide
from torcd.core.status import ACTIVE, ALLOWED, FINAL
from torcd.core.status import JobStatus as S
from torcd.errors import InvalidTransition

DEPS = {1: [], 2: [1], 3: [1], 4: [2, 3], 5: []}  # a diamond and a loner
RULES = [Rule(exit_codes=[10], max_retries=3), Rule(exit_codes=[20], recovery_script="fix", max_retries=2)]


class Model:
    """The tables, as far as the lifecycle is concerned."""

    def __init__(self) -> None:
        self.jobs = {j: L.Job(j, 1, f"j{j}", S.BLOCKED if DEPS[j] else S.READY) for j in DEPS}
        self.pending = {j: len(d) for j, d in DEPS.items()}
        self.opened: dict[tuple[int, int], list[int]] = collections.defaultdict(list)  # (job, run) -> attempts
        self.closed: dict[tuple[int, int, int], int] = {}
        self.time = 0.0

    def now(self) -> float:
        self.time += 1
        return self.time

    def apply(self, out: L.Outcome) -> None:
        c = out.change
        if c is not None:
            before = self.jobs[c.job_id]
            assert c.old == before.status and (c.new == c.old or c.new in ALLOWED[c.old])
            self.jobs[c.job_id] = L.Job(
                c.job_id,
                1,
                before.name,
                c.new,
                c.run_id,
                c.attempt_id,
                c.worker_id if c.worker_id is not None else before.worker_id,
            )
        for r in out.records:
            if isinstance(r, L.AttemptOpened):
                seen = self.opened[(r.job_id, r.run_id)]
                assert r.attempt_id == len(seen) + 1, f"attempt {r.attempt_id} after {seen}"  # no reuse, no gap
                seen.append(r.attempt_id)
            elif isinstance(r, L.AttemptClosed):
                key = (r.job_id, r.run_id, r.attempt_id)
                if key not in self.closed and r.attempt_id in self.opened[(r.job_id, r.run_id)]:
                    self.closed[key] = r.return_code
        for i in out.instructions:
            if isinstance(i, L.ReleaseDependents):
                for child, parents in DEPS.items():
                    if i.job_id in parents:
                        self.pending[child] -= 1
                        if self.pending[child] <= 0 and self.jobs[child].status == S.BLOCKED:
                            self.apply(L.handle(L.DependenciesMet(self.now()), self.jobs[child]))
            elif isinstance(i, L.CancelDownstream):
                for down in self.downstream(i.job.id):
                    self.apply(L.handle(L.UpstreamFailed(self.now(), i.job.id, i.job.name), self.jobs[down]))

    def downstream(self, j: int) -> list[int]:
        out, todo = [], [j]
        while todo:
            cur = todo.pop()
            for child, parents in DEPS.items():
                if cur in parents and child not in out:
                    out.append(child)
                    todo.append(child)
        return out

    def exited(self, job: L.Job) -> int | None:
        return self.closed.get((job.id, job.run_id, job.attempt_id))

    def reset(self) -> None:
        run = max(j.run_id for j in self.jobs.values()) + 1
        for j in DEPS:  # as the store does: count what is not completed now, then reset everything
            self.pending[j] = len(DEPS[j])
        for j in DEPS:
            self.apply(L.handle(L.Reset(self.now(), run, blocked=bool(DEPS[j])), self.jobs[j]))

    def step(self, j: int, kind: int, rc: int, ok: bool) -> None:
        job, t = self.jobs[j], self.now()
        if kind == 0:
            stim = L.Claimed(t) if rc % 2 else L.Claimed(t, worker_id=9, host="n")
        elif kind == 1:
            stim = L.Started(t, job.run_id, job.attempt_id, "h", 1)
        elif kind == 2:
            stim = L.Requeued(t)
        elif kind == 3:
            stim = L.Exited(t, job.run_id, job.attempt_id - (rc == 1), rc)  # rc 1: a late report of an older attempt
        elif kind == 4:
            code = self.exited(job)
            if code is None or code == 0:
                return
            stim = L.Decided(
                t,
                job.run_id,
                job.attempt_id,
                code,
                decide(RULES, attempt=job.attempt_id, return_code=code, use_pending_failed=True),
            )
        elif kind == 5:
            stim = L.RecoveryDone(t, job.run_id, job.attempt_id, ok, 0 if ok else 1, "r")
        elif kind == 6:
            stim = L.Classified(t, "retry" if ok else "fail", "", "cli")
        elif kind == 7:  # the workflow is canceled: every unfinished job
            for other in list(self.jobs.values()):
                self.apply(L.handle(L.Canceled(t), other))
            return
        else:
            if not any(x.status in ACTIVE for x in self.jobs.values()):
                self.reset()
            return
        if isinstance(stim, L.Exited) and (
            job.status != S.RUNNING
            or self.exited(job) is not None
            or stim.attempt_id not in self.opened[(j, job.run_id)]
        ):
            return  # a process exits once, and only a started one
        try:
            out = L.handle(stim, job)
        except InvalidTransition:
            assert isinstance(stim, (L.Claimed, L.Classified)) and self.jobs[j] == job
            return
        if out.ignored:
            assert out.change is None
        self.apply(out)

    def drive_to_the_end(self) -> None:
        """What the daemon's services do with no more surprises: every job reaches a final status."""
        for _ in range(200):
            active = [j for j in self.jobs.values() if j.status in ACTIVE or j.status == S.PENDING_FAILED]
            if not active:
                return
            job, t = active[0], self.now()
            if job.status == S.READY:
                out = L.handle(L.Claimed(t), job)
            elif job.status == S.PENDING:
                out = L.handle(L.Started(t, job.run_id, job.attempt_id, "h", 1), job)
            elif job.status == S.RUNNING and self.exited(job) is None:
                out = L.handle(L.Exited(t, job.run_id, job.attempt_id, 0), job)
            elif job.status == S.RUNNING:
                code = self.exited(job)
                out = L.handle(
                    L.Decided(
                        t,
                        job.run_id,
                        job.attempt_id,
                        code,
                        decide(RULES, attempt=job.attempt_id, return_code=code, use_pending_failed=True),
                    ),
                    job,
                )
            elif job.status == S.RECOVERING:
                out = L.handle(L.RecoveryDone(t, job.run_id, job.attempt_id, True, 0, "ok"), job)
            else:
                out = L.handle(L.Classified(t, "fail", "", "cli"), job)
            self.apply(out)
        raise AssertionError(f"not finished: {self.jobs}")


steps = st.lists(
    st.tuples(st.sampled_from(list(DEPS)), st.integers(0, 8), st.sampled_from([0, 1, 10, 20, 3]), st.booleans()),
    max_size=80,
)


@settings(max_examples=400, deadline=None)
@given(steps)
def test_random_stimuli_stay_in_the_table_and_every_job_ends(sequence):
    m = Model()
    for j, kind, rc, ok in sequence:
        m.step(j, kind, rc, ok)
        for job in m.jobs.values():
            assert isinstance(job.status, S)
            opened = m.opened[(job.id, job.run_id)]
            # The job's attempt is the last one opened, or the next one not yet started.
            assert job.attempt_id in (len(opened), len(opened) + 1) or (not opened and job.attempt_id == 1)
    m.drive_to_the_end()
    assert len(m.jobs) == len(DEPS) and all(j.status in FINAL for j in m.jobs.values())
