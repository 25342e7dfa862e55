"""The corpus in tests/data/bad_specs: every file is refused, naming its line and field; nothing is stored.

Each file's first line says what to expect: `# expect: line=N field=$.path` (field `-` for syntax errors).
"""

from __future__ import annotations

import re

import pytest
from conftest import REPO

from torcctl.transport import RpcError
from torcd.errors import SpecError
from torcd.spec.parse import parse_spec

CORPUS = sorted((REPO / "tests" / "data" / "bad_specs").glob("*.yaml"))
_EXPECT = re.compile(r"^# expect: line=(\d+) field=(\S+)$")


def expectation(path):
    m = _EXPECT.match(path.read_text().splitlines()[0])
    assert m, f"{path.name} lacks its expect line"
    return int(m[1]), None if m[2] == "-" else m[2]


def test_corpus_is_large_enough():
    assert len(CORPUS) >= 40


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_bad_spec_is_refused_with_line_and_field(path):
    line, field = expectation(path)
    with pytest.raises(SpecError) as info:
        parse_spec(path.read_text(), str(path))
    e = info.value
    assert (e.line, e.field) == (line, field), e.message
    assert e.message.startswith(f"{path}:{line}: ")
    if field:
        assert e.message.endswith(f"(at {field})")


def test_daemon_refuses_the_whole_corpus_and_stores_nothing(daemon):
    for path in CORPUS:
        with pytest.raises(RpcError) as info:
            daemon.call(
                "workflows.create", {"spec_text": path.read_text(), "spec_path": str(path), "cwd": str(daemon.tmp)}
            )
        assert info.value.code == -32010 and f"{path}:" in info.value.message
    assert daemon.call("workflows.list") == []
    assert daemon.client.ping()
