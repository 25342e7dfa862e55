"""Dependency graphs: the cycle check on job names, and the folded view of a workflow's DAG that
the dashboard draws (one node per job, or per name template, at most a given number of nodes)."""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping, Sequence

import msgspec


def find_cycle(deps: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A dependency cycle as a list of names (first repeated at the end), or None."""
    WHITE, GREY, BLACK = 0, 1, 2
    color = dict.fromkeys(deps, WHITE)
    for root in deps:
        if color[root] != WHITE:
            continue
        # Iterative DFS: stack of (node, iterator over its dependencies).
        path = [root]
        color[root] = GREY
        stack = [iter(deps[root])]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                color[path.pop()] = BLACK
                stack.pop()
                continue
            state = color.get(nxt, BLACK)
            if state == GREY:
                return [*path[path.index(nxt) :], nxt]
            if state == WHITE:
                color[nxt] = GREY
                path.append(nxt)
                stack.append(iter(deps[nxt]))
    return None


OTHER = "\u2026other"  # the node that holds the groups past the largest `max_nodes - 1`


class GraphNode(msgspec.Struct):
    key: str  # the job's id (as a string), or the template
    label: str  # the job's name, or the template
    job_id: int | None  # None: a node of several jobs
    jobs: int
    counts: dict[str, int]  # its jobs per status label
    internal_deps: int = 0  # dependencies between its own jobs


class GraphEdge(msgspec.Struct):
    source: str  # the key of the node depended on (upstream)
    target: str  # the key of the node that waits for it
    count: int  # job dependencies between them


def graph_nodes(rows: Iterable[tuple[str, str, int | None, str, int]]) -> list[GraphNode]:
    """Nodes from (key, label, job_id, status label, jobs) rows, in the order their keys first come."""
    nodes: dict[str, GraphNode] = {}
    for key, label, job_id, status, n in rows:
        node = nodes.get(key)
        if node is None:
            node = nodes[key] = GraphNode(key, label, job_id, 0, {})
        node.jobs += n
        node.counts[status] = node.counts.get(status, 0) + n
    return list(nodes.values())


def fold_graph(
    nodes: Sequence[GraphNode], edges: Iterable[tuple[str, str, int]], max_nodes: int
) -> tuple[list[GraphNode], list[GraphEdge]]:
    """At most `max_nodes` nodes: past that, the largest `max_nodes - 1` (by jobs, then key) and
    one node OTHER with the rest. Dependencies inside a node add to its `internal_deps`; the rest
    become edges, summed per (source, target) pair."""
    home = {n.key: n.key for n in nodes}
    kept = list(nodes)
    if len(nodes) > max_nodes:
        ranked = sorted(nodes, key=lambda n: (-n.jobs, n.key))
        chosen = {n.key for n in ranked[: max_nodes - 1]}
        kept = [n for n in nodes if n.key in chosen]
        other = GraphNode(OTHER, OTHER, None, 0, {})
        for n in ranked[max_nodes - 1 :]:
            home[n.key] = OTHER
            other.jobs += n.jobs
            other.internal_deps += n.internal_deps
            for status, count in n.counts.items():
                other.counts[status] = other.counts.get(status, 0) + count
        kept.append(other)
    by_key = {n.key: n for n in kept}
    summed: dict[tuple[str, str], int] = collections.defaultdict(int)
    for source, target, count in edges:
        source, target = home[source], home[target]
        if source == target:
            by_key[source].internal_deps += count
        else:
            summed[source, target] += count
    return kept, [GraphEdge(s, t, c) for (s, t), c in summed.items()]
