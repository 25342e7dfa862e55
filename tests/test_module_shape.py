"""The code's shape: no import circles (counting imports made only for type checking or inside
functions), and no module over 600 lines."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("torcd", "torcctl")


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name and not name.startswith(t + "."):  # a package's own __init__ is no circle
                found.add(t)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports(name, path, set(mods)) for name, path in mods.items()}


def test_no_import_circles():
    graph_ = graph()
    circles = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph_[node]):
            if state.get(nxt) == 1:
                circles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for name in sorted(graph_):
        if name not in state:
            visit(name, [name])
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles)


def test_no_module_over_600_lines():
    long = {str(p.relative_to(ROOT)): n for p in modules().values() if (n := len(p.read_text().splitlines())) > 600}
    assert not long, long


def test_the_worker_needs_no_store():
    """A worker in an allocation reports values; it never loads the daemon's database layer."""
    g, seen, todo = graph(), set(), ["torcctl.worker.run"]
    while todo:
        for nxt in g[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    assert not {m for m in seen if m.startswith("torcd.store")}, sorted(seen)


def test_no_function_over_80_lines():
    long = {}
    for path in modules().values():
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                and (n := node.end_lineno - node.lineno + 1) > 80
            ):
                long[f"{path.relative_to(ROOT)}:{node.name}"] = n
    assert not long, long


def test_core_imports_nothing_above_it():
    """`torcd.core` is the pure decisions: it may use the errors and the event types, nothing that does I/O."""
    allowed = ("torcd.core", "torcd.errors", "torcd.events")
    upward = {
        name: sorted(t for t in deps if not t.startswith(allowed))
        for name, deps in graph().items()
        if name.startswith("torcd.core")
    }
    assert not {k: v for k, v in upward.items() if v}, upward


def test_families_are_folders_not_prefixes():
    """New modules of a family go into its folder: no top-level module shares its first word with a package or
    with another top-level module (`spec_x.py` beside `spec/`, or `store_a.py` beside `store_b.py`)."""
    for pkg in PACKAGES:
        top = [p.stem for p in (ROOT / pkg).glob("*.py") if p.stem not in ("__init__", "__main__")]
        folders = {p.name for p in (ROOT / pkg).iterdir() if (p / "__init__.py").exists()}
        words = [stem.split("_")[0] for stem in top]
        clash = sorted(s for s, w in zip(top, words) if w in folders or words.count(w) > 1)
        assert not clash, f"{pkg}: {clash} belong in a folder"


def test_no_module_shadows_the_standard_library():
    import sys

    shadows = sorted(name for name in modules() if name.rpartition(".")[2] in sys.stdlib_module_names)
    assert not shadows, shadows
