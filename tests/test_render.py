"""Tables off a terminal: the quick path prints exactly what rich's table prints (for headers
that are not empty and cells of printable ASCII; anything else goes to rich itself)."""

from __future__ import annotations

import io

from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console
from rich.table import Table

from torcctl.render import aligned, table


def rich_table(headers: list[str], rows: list[list[str]]) -> str:
    t = Table(*headers, box=None, header_style="bold", pad_edge=False)
    for row in rows:
        t.add_row(*row)
    out = io.StringIO()
    Console(file=out, width=100_000, highlight=False, markup=False, emoji=False).print(t)
    return out.getvalue()


CASES = [
    (["id", "name"], []),
    (["id"], [["x"]]),
    (["id", "name", "status"], [["1", "a b", "ready"], ["22", "longer name", ""], ["3", "", "x"]]),
    (["a", "b"], [["[bold]x", ":smile:"], ["  lead", "trail  "]]),
]


def test_known_tables() -> None:
    for headers, rows in CASES:
        assert aligned(headers, rows) == rich_table(headers, rows), (headers, rows)


cell = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12)


@given(
    st.integers(1, 4).flatmap(
        lambda n: st.tuples(
            st.lists(cell.filter(bool), min_size=n, max_size=n),
            st.lists(st.lists(cell, min_size=n, max_size=n), max_size=6),
        )
    )
)
def test_any_printable_table(table: tuple[list[str], list[list[str]]]) -> None:
    headers, rows = table
    assert aligned(headers, rows) == rich_table(headers, rows)


def test_table_off_a_terminal_prints_what_rich_prints(capsys) -> None:
    for headers, rows in [*CASES, (["name", "path"], [["日本語", "/ü/x"], ["a\tb", "two\nlines"]])]:
        table(headers, rows)
        assert capsys.readouterr().out == rich_table(headers, rows), (headers, rows)
