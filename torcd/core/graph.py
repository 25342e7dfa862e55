"""Dependency graph checks on job names."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


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
