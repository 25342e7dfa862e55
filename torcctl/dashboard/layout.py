"""Where each node of a workflow's DAG goes on the page, decided without I/O: columns by the
longest path from a source (upstream on the left), rows ordered by the mean row of each node's
upstream nodes so edges cross less. A graph of groups may have cycles (two templates feeding each
other through different jobs): those edges are drawn, they only do not push a node right."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

NODE_WIDTH, NODE_HEIGHT = 200, 56
GAP_X, GAP_Y = 70, 18


@dataclass(frozen=True)
class Placed:
    key: str
    column: int
    row: int
    x: int
    y: int


def columns(keys: Sequence[str], edges: Iterable[tuple[str, str]]) -> dict[str, int]:
    """Each node's column: 0 for a source, else one more than its furthest upstream node. In a
    cycle, the node with the fewest unplaced upstream nodes goes first (Kahn's order, unstuck)."""
    known = set(keys)
    ups: dict[str, set[str]] = defaultdict(set)
    downs: dict[str, set[str]] = defaultdict(set)
    for a, b in edges:
        if a != b and a in known and b in known:
            ups[b].add(a)
            downs[a].add(b)
    waiting = {k: len(ups[k]) for k in keys}
    column = {k: 0 for k in keys}
    ready = [k for k in keys if waiting[k] == 0]
    placed: set[str] = set()
    while len(placed) < len(keys):
        if not ready:  # a cycle: take the node closest to ready, in the given order
            ready = [min((k for k in keys if k not in placed), key=lambda k: waiting[k])]
        k = ready.pop()
        if k in placed:
            continue
        placed.add(k)
        for d in sorted(downs[k]):
            if d in placed:
                continue
            column[d] = max(column[d], column[k] + 1)
            waiting[d] -= 1
            if waiting[d] == 0:
                ready.append(d)
    return column


def place(keys: Sequence[str], edges: Sequence[tuple[str, str]], sweeps: int = 2) -> list[Placed]:
    """Columns, then rows within each column by the mean row of the node's upstream neighbours."""
    column = columns(keys, edges)
    by_column: dict[int, list[str]] = defaultdict(list)
    for k in keys:
        by_column[column[k]].append(k)
    ups: dict[str, list[str]] = defaultdict(list)
    for a, b in edges:
        if a != b and a in column and b in column and column[a] < column[b]:
            ups[b].append(a)
    row = {k: i for c in by_column.values() for i, k in enumerate(c)}
    for _ in range(sweeps):
        for c in sorted(by_column)[1:]:

            def centre(k: str) -> float:
                parents = ups[k]
                return sum(row[p] for p in parents) / len(parents) if parents else row[k]

            by_column[c].sort(key=centre)
            row.update({k: i for i, k in enumerate(by_column[c])})
    tallest = max((len(c) for c in by_column.values()), default=0)
    out = []
    for c, ks in sorted(by_column.items()):
        offset = (tallest - len(ks)) * (NODE_HEIGHT + GAP_Y) // 2  # centre short columns
        for i, k in enumerate(ks):
            out.append(Placed(k, c, i, c * (NODE_WIDTH + GAP_X), offset + i * (NODE_HEIGHT + GAP_Y)))
    return out


def size(placed: Sequence[Placed]) -> tuple[int, int]:
    """The drawing's width and height."""
    if not placed:
        return 0, 0
    return max(p.x for p in placed) + NODE_WIDTH, max(p.y for p in placed) + NODE_HEIGHT
