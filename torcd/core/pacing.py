"""How the local dispatcher paces its passes (each one transaction): how many jobs it keeps
claimed ahead of its free slots, and how long a pass may wait to gather more starts and exits.

Under a flood of short jobs, a pass per exit costs more than the jobs: the transaction's fixed
cost is paid for one or two rows. Jobs claimed ahead keep every slot busy while a pass waits,
so the pass can record many starts and exits at once. When nothing is queued, or something
new is ready, a pass runs at once: a chain of jobs, or the last jobs of a workflow, never wait.
Pure: the dispatcher passes the clock's readings in.
"""

from __future__ import annotations

import collections

GATHER_S = 0.01  # the longest a start or an exit waits to be recorded with others
HORIZON_S = 2 * GATHER_S  # kept claimed ahead: what started in this long, at the recent pace
MAX_AHEAD = 1024


class Pace:
    def __init__(self, max_cpus: int):
        self.max_cpus = max_cpus
        self._starts: collections.deque[float] = collections.deque()  # within HORIZON_S

    def started(self, now: float) -> None:
        self._starts.append(now)

    def ahead(self, now: float) -> int:
        """Jobs to keep claimed beyond the free slots: one budget's worth, or what the last
        HORIZON_S started if more (a claimed job waits for a slot, `pending` in the store)."""
        while self._starts and self._starts[0] < now - HORIZON_S:
            self._starts.popleft()
        return max(self.max_cpus, min(MAX_AHEAD, len(self._starts)))

    @staticmethod
    def gather(queued: int, urgent: bool) -> float:
        """Seconds a pass may wait for more: none when something new is ready (`urgent`) or
        nothing is queued to start meanwhile."""
        return 0.0 if urgent or queued == 0 else GATHER_S
