"""The libyaml reader (`torcd.spec.yaml12`) against ruamel, the reader it replaced: the same tree or
the same error (message, line and field) for every document, and ruamel itself where libyaml could
read a text otherwise. A field's line is found after the fact, in every format."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from torcd.errors import SpecError
from torcd.spec import yaml12
from torcd.spec.parse import load_plain, parse_spec

HEAD = "name: x\njobs:\n  - {name: a, command: 'true'}\n"


def outcome(text: str, monkeypatch: pytest.MonkeyPatch, fast: bool, whole: bool = False) -> tuple:
    """What reading (or, `whole`, validating) the text gives, by libyaml or by ruamel alone."""
    monkeypatch.setattr(yaml12, "AVAILABLE", fast)
    try:
        if whole:
            spec = parse_spec(text, "wf.yaml")
            return ("ok", [(j.name, j.command) for j in spec.jobs])
        tree, _ = load_plain(text, "wf.yaml")
        return ("ok", repr(tree))
    except SpecError as e:
        return ("error", e.message, e.line, e.field)
    except Exception as e:  # ruamel's own failures (an unhashable key) are ruamel's in both
        return ("raised", type(e).__name__, str(e))


def reads_fast(text: str) -> bool:
    try:
        yaml12.read(text)
    except yaml12.Fallback:
        return False
    except yaml12.TreeError:
        pass
    return True


SCALARS = [
    "plain",
    "'single'",
    '"double"',
    '"esc \\u00e9 \\x41 \\\\ \\" \\/"',
    "''",
    '""',
    "~",
    "null",
    "Null",
    "NULL",
    "",
    "true",
    "True",
    "TRUE",
    "false",
    "False",
    "FALSE",
    "yes",
    "no",
    "on",
    "off",
    "y",
    "n",
    "Yes",
    "NO",
    "0",
    "-0",
    "+0",
    "7",
    "-7",
    "+7",
    "123456789012345678901234567890",
    "017",
    "0o17",
    "0O17",
    "0x1F",
    "0X1F",
    "0b101",
    "1_000",
    "_1",
    "0.5",
    "-0.5",
    "+0.5",
    ".5",
    "5.",
    "1e3",
    "1E3",
    "1.5e3",
    "1.5e-3",
    "1.0e+3",
    "1_000.5",
    ".inf",
    "-.inf",
    "+.Inf",
    ".INF",
    ".nan",
    ".NaN",
    "nan",
    "inf",
    "1:20",
    "1:30:00",
    "190:20:30",
    "2001-12-14",
    "2001-12-14t21:59:43.10-05:00",
    "2001-12-14 21:59:43.10 -5",
    "2001-12-14T21:59:43Z",
    "12:30",
    "0x",
    "0o",
    "-",
    "--x",
    "+x",
    ".x",
    "..",
    "1.2.3",
    "1e",
    "4g",
    "240G",
    "PT1H",
    "=",
    "'<<'",
    "é",
    "日本語",
    "emoji \U0001f600",
    "a b  c",
    "x # not a comment",
    "x#y",
    "'it''s'",
    '"a\\tb"',
    "&anchor value",
    "!!str 12",
    "!!int '12'",
    "!!float 1",
    "!!bool yes",
    "!!null ''",
    "!custom x",
    "! 12",
    "[1, 2, 3]",
    "{a: 1}",
    "[]",
    "{}",
    "[a, [b, [c]]]",
    "{a: {b: {c: d}}}",
    "[yes, no, 0o7, 1_0]",
]


@pytest.mark.parametrize("value", SCALARS)
def test_a_value_reads_as_ruamel_reads_it(value, monkeypatch):
    text = f"v: {value}\n" + HEAD
    assert outcome(text, monkeypatch, True) == outcome(text, monkeypatch, False)


@pytest.mark.parametrize("value", SCALARS)
def test_a_key_reads_as_ruamel_reads_it(value, monkeypatch):
    text = f"m:\n  {value}: 1\n  other: 2\n" + HEAD
    assert outcome(text, monkeypatch, True) == outcome(text, monkeypatch, False)


DOCUMENTS = [
    # (text, read by libyaml: True, or by ruamel: False)
    (HEAD, True),
    ("# a comment\n\n" + HEAD + "# the end\n", True),
    ("---\n" + HEAD + "...\n", True),
    ("%YAML 1.1\n---\nv: yes\n" + HEAD, False),
    ("%YAML 1.2\n---\nv: yes\n" + HEAD, False),
    ("%TAG !e! tag:example.com,2000:\n---\n" + HEAD, False),
    ("v: |\n  line 1\n  line 2\n\n" + HEAD, True),
    ("v: |-\n  keep\n   indented\n" + HEAD, True),
    ("v: >\n  folded\n  text\n\n  para\n" + HEAD, True),
    ("v: >+\n  kept\n\n\n" + HEAD, True),
    ('v: "multi\n  line\n\n  quoted"\n' + HEAD, True),
    ("v: plain\n  continued\n  lines\n" + HEAD, True),
    ("v: 'single\n\n  folded'\n" + HEAD, True),
    ("v: &a [1, 2]\nw: *a\n" + HEAD, True),
    ("v: &a {x: 1}\nw: [*a, *a]\n" + HEAD, True),
    ("v: &s text\nw: *s\n" + HEAD, True),
    ("w: *a\nv: &a 1\n" + HEAD, False),  # an alias before its anchor: ruamel's error
    ("v: &a 1\nw: &a 2\nx: *a\n" + HEAD, False),  # an anchor defined twice
    ("base: &b {x: 1}\nv:\n  <<: *b\n  y: 2\n" + HEAD, False),
    ("v: {a: 1, a: 2}\n" + HEAD, False),
    ("v: 1\nv: 2\n" + HEAD, False),
    ("v: {1: a, '1': b}\n" + HEAD, True),
    ("v: {1: a, true: b}\n" + HEAD, False),
    ("v: {1.5: a}\n" + HEAD, False),
    ("v: {2001-12-14: a}\n" + HEAD, False),
    ("v: {[a]: b}\n" + HEAD, False),
    ("? complex\n: value\n" + HEAD, True),
    ("v: {a: 1}\nv2: {b: [1, {c: 2}]}\n" + HEAD, True),
    ('{"name": "x", "jobs": [{"name": "a", "command": "true"}]}', True),
    ('{"name":"x","jobs":[{"name":"a","command":"true"}]}', True),
    ('{\n\t"name": "x",\n\t"jobs": [{"name": "a", "command": "true"}]\n}', False),
    ("v:\tx\n" + HEAD, False),
    ("v: 'a\tb'\n" + HEAD, False),
    ("v: a\x85b\n" + HEAD, False),
    ("v: a\u2028b\n" + HEAD, False),
    ("v: a\r\nw: b\r\n" + HEAD.replace("\n", "\r\n"), True),
    ("\ufeff" + HEAD, True),
    ("v: a\x00b\n" + HEAD, False),
    ("v: \x07\n" + HEAD, False),
    ("v: '\\x00'\n" + HEAD, True),
    ('v: "\\x00"\n' + HEAD, True),
    ("v: [a, b\n" + HEAD, False),
    ("v: {a: 1\n" + HEAD, False),
    ("v: 'open\n" + HEAD, False),
    ("- a\n- b\n", True),
    ("[a, b]\n", True),
    ("just text\n", True),
    ("", True),
    ("# only a comment\n", True),
    ("42\n", True),
    ("- {a: 1, a: 2}\n", False),
    ("name: x\njobs: []\n", True),
    ("name: x\njobs:\n  -\n    name: a\n    command: 'true'\n", True),
    ("name: x\njobs:\n- name: a\n  command: 'true'\n  env: {A: '1', 'B': \"2\"}\n", True),
    ("name: x\njobs:\n  - name: a\n    command: true\n", True),
    ("name: x\njobs:\n  - name: a\n    command: 'true'\n    input_files: null\n    env: ~\n", True),
    ("name: x\njobs:\n  - name: a\n    command: 'true'\n    input_files:\n    input_files: ~\n", False),
    ("name: x\ninput_files: ~\nparameters:\njobs:\n  - {name: a, command: 'true'}\n", True),
    ("name: x\nuser_data:\n  - name: d\n    data: {env: null, files: ~}\n" + HEAD.removeprefix("name: x\n"), True),
    (
        "v: &e {A: '1'}\nname: x\njobs:\n  - {name: a, command: 'true', env: *e}\n  - {name: b, command: x, env: *e}\n",
        True,
    ),
    ("v: &e {A: \"\\x00\"}\nname: x\njobs:\n  - {name: a, command: 'true', env: *e}\n", True),
    ("name: x\njobs:\n  - {name: a, command: 'true', env: {'': v}}\n", True),
    ("name: x\njobs:\n  - {name: a, command: 'true', env: {'A=B': v}}\n", True),
    ("name: x\njobs:\n  - {name: a, command: 'true', env: {\"A\\x01\": v}}\n", True),
    ('name: x\njobs:\n  - {name: a, command: "a\\x01b"}\n', True),
    ('name: x\njobs:\n  - {name: a, command: "a\\tb\\nc"}\n', True),
    ("name: \"x\\ny\"\njobs:\n  - {name: a, command: 'true'}\n", True),
    ('name: x\nname2: "\\x00"\nname2: 1\njobs: []\n', False),  # the duplicate is reported first
    ("v: " + "[" * 40 + "]" * 40 + "\n" + HEAD, True),
    ("v: " + "[" * 600 + "]" * 600 + "\n" + HEAD, False),
    ("[" * 5000 + "]" * 5000, False),
    ("v:\n" + "".join("  " * i + f"- k{i}:\n" for i in range(1, 25)) + HEAD, True),
    ("v:\n" + "".join("  " * i + f"- k{i}:\n" for i in range(1, 40)) + HEAD, False),  # deeper than MAX_DEPTH
    ("é: ü\n日本: 語\n" + HEAD, True),
    ("v: 'emoji \U0001f600'\n" + HEAD, True),
    ("v: x # trailing comment\n# between\nw: y\n" + HEAD, True),
    ("v: !!binary aGVsbG8=\n" + HEAD, False),
    ("v: !!set {a, b}\n" + HEAD, False),
    ("v: !!omap [a: 1]\n" + HEAD, False),
    ("v: [a: 1, b: 2]\n" + HEAD, True),
    ("v: {a, b: 1}\n" + HEAD, True),
    ("v: {a:1}\n" + HEAD, True),
    ("v: [a:1, b]\n" + HEAD, True),
    ("v: a: b\n" + HEAD, False),
    ("v: - a\n" + HEAD, False),
    ("a: 1\n---\nb: 2\n", False),
]


@pytest.mark.parametrize("text,fast", DOCUMENTS, ids=[repr(d[0][:40]) for d in DOCUMENTS])
def test_a_document_reads_as_ruamel_reads_it(text, fast, monkeypatch):
    assert outcome(text, monkeypatch, True) == outcome(text, monkeypatch, False)
    assert outcome(text, monkeypatch, True, whole=True) == outcome(text, monkeypatch, False, whole=True)
    assert reads_fast(text) == fast


def alias_bomb(levels: int) -> str:
    lines = ["a0: &a0 [" + ", ".join(["lol"] * 10) + "]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\nname: bomb\njobs:\n  - {name: a, command: 'true'}\n"


BOMBS = [
    alias_bomb(5),
    alias_bomb(6),
    alias_bomb(9),
    alias_bomb(40),
    "a: &s [" + ", ".join(["x" * 1000] * 20) + "]\nb: [" + ", ".join(["*s"] * 700) + "]\n" + HEAD,
    "a: &s [" + ", ".join(["x" * 1000] * 20) + "]\nb: *s\nc: {k: *s}\n" + HEAD,
    "a: &a [x, y]\nb: &b [*a, *a, *a]\nc: &c {k: *b, l: *b}\nd: [*c, *c, *c]\n" + HEAD,
    "l0: &l0 {k: v}\n" + "".join(f"l{i}: &l{i} {{a: *l{i - 1}, b: *l{i - 1}}}\n" for i in range(1, 25)) + HEAD,
]


@pytest.mark.parametrize("text", BOMBS, ids=range(len(BOMBS)))
def test_aliases_cost_what_they_cost_in_ruamel(text, monkeypatch):
    assert reads_fast(text)
    assert outcome(text, monkeypatch, True) == outcome(text, monkeypatch, False)


keys = st.sampled_from(["name", "command", "env", "A", "jobs", "input_files", "v", "1", "true", "é"])
leaves = st.sampled_from(["x", "1", "-2", "0.5", "~", "''", "yes", "true", "0o7", "1_0", "'a\\x01'", '"b\\tc"'])


def to_yaml(value) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {to_yaml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(to_yaml(v) for v in value) + "]"
    return value


trees = st.recursive(leaves, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3))


@given(st.dictionaries(keys, trees, max_size=4))
def test_any_small_document_reads_as_ruamel_reads_it(doc):
    text = "\n".join(f"{k}: {to_yaml(v)}" for k, v in doc.items()) + "\n"
    with pytest.MonkeyPatch.context() as mp:
        assert outcome(text, mp, True) == outcome(text, mp, False)


def test_without_libyaml_ruamel_reads_every_spec(monkeypatch):
    monkeypatch.setattr(yaml12, "AVAILABLE", False)
    monkeypatch.setattr(yaml12, "read", None)  # never called
    assert [j.name for j in parse_spec(HEAD, "wf.yaml").jobs] == ["a"]
    with pytest.raises(SpecError) as info:
        parse_spec(HEAD + "  - {name: b, command: x, bogus: 1}\n", "wf.yaml")
    assert info.value.line == 4


def test_libyaml_is_there():
    assert yaml12.AVAILABLE  # PyYAML's wheels ship it; without it, specs read at ruamel's speed


def spec(fmt: str, n: int, bad: bool) -> str:
    """n chained jobs; `bad`: the last has an unknown key."""
    jobs = [{"name": f"j{i}", "command": f"echo {i}", **({"depends_on": [f"j{i - 1}"]} if i else {})} for i in range(n)]
    if bad:
        jobs[-1]["bogus"] = 1
    if fmt == "yaml":
        return "name: big\njobs:\n" + "".join(
            "  - " + "\n    ".join(f"{k}: {json.dumps(v)}" for k, v in job.items()) + "\n" for job in jobs
        )
    if fmt == "json":
        return "{\n" + ' "name": "big",\n "jobs": [\n' + ",\n".join("  " + json.dumps(j) for j in jobs) + "\n ]\n}\n"
    if fmt == "json5":
        return "// big\n{\n name: 'big',\n jobs: [\n" + ",\n".join("  " + json.dumps(j) for j in jobs) + ",\n ],\n}\n"
    body = "".join(
        f'job "{j["name"]}" {{\n    command "{j["command"]}"\n'
        + "".join(f'    depends_on "{d}"\n' for d in j.get("depends_on", []))
        + ("    bogus 1\n" if "bogus" in j else "")
        + "}\n"
        for j in jobs
    )
    return 'name "big"\n' + body


@pytest.mark.parametrize("fmt", ["yaml", "json", "json5", "kdl"])
def test_an_error_in_the_last_job_names_its_line_in_every_format(fmt):
    n = 3000
    assert len(parse_spec(spec(fmt, n, False), f"big.{fmt}").jobs) == n
    text = spec(fmt, n, True)
    with pytest.raises(SpecError) as info:
        parse_spec(text, f"big.{fmt}")
    lines = text.splitlines()
    e = info.value
    assert e.field == f"$.jobs[{n - 1}].bogus"
    assert e.line is not None and "bogus" in lines[e.line - 1], (e.line, lines[e.line - 1])
    assert e.message == f"big.{fmt}:{e.line}: unknown key `bogus` (at $.jobs[{n - 1}].bogus)"


def json_outcome(text: str, monkeypatch: pytest.MonkeyPatch, fmt: str | None, fast: bool = True) -> tuple:
    monkeypatch.setattr(yaml12, "AVAILABLE", fast)
    try:
        tree, loc = load_plain(text, "wf.json", fmt)
        spec = parse_spec(text, "wf.json", fmt)
        return ("ok", repr(tree), [(j.name, j.command) for j in spec.jobs])
    except SpecError as e:
        return ("error", e.message, e.line, e.field)


JOB = '{"name": "a", "command": "true"}'
JSON_DOCUMENTS = [
    '{"name": "x", "jobs": [' + JOB + "]}",
    '{\n  "name": "x",\n  "jobs": [\n    ' + JOB + "\n  ]\n}\n",
    '{\n\t"name": "x",\n\t"jobs": [\n\t\t' + JOB + "\n\t]\n}\n",
    '{"name": "x", "name": "y", "jobs": [' + JOB + "]}",
    '{"name": "x", "v": NaN, "jobs": [' + JOB + "]}",
    '{"name": "x", "v": "\\ud83d\\ude00", "jobs": [' + JOB + "]}",
    '{"name": "x", "v": "\\u00e9\\/\\n", "jobs": [' + JOB + "]}",
    '{"name": "x", "v": [1e3, -0, 1.5E-3, 100000000000000000000, 0.5, true, null], "jobs": [' + JOB + "]}",
    '{"name": "x\\u0001", "jobs": [' + JOB + "]}",
    '{"name": "x", "jobs": [{"name": "a", "command": "true", "env": {"A=B": "v"}}]}',
    '{"name": "x", "jobs": [{"name": "a", "command": "t\\u0000", "input_files": null}]}',
    '{"name": "x", "input_files": null, "jobs": [{"name": "a", "command": "true", "env": null}]}',
    '{"name": "x", "jobs": [{"name": "a", "command": "true", "bogus": 1}]}',
    '{"name": "x", "v": ' + "[" * 100 + "]" * 100 + ', "jobs": [' + JOB + "]}",
    '[{"name": "x"}]',
    '"text"',
    '{"name": "x", "jobs": [' + JOB + ",]}",
    "name: x\njobs:\n  - {name: a, command: 'true'}\n",
    '{"name": "x", "jobs": [' + JOB + "]",
]


@pytest.mark.parametrize("text", JSON_DOCUMENTS, ids=[repr(d[:40]) for d in JSON_DOCUMENTS])
def test_json_reads_as_yaml_reads_it(text, monkeypatch):
    fast = json_outcome(text, monkeypatch, None)
    assert fast == json_outcome(text, monkeypatch, "yaml")
    assert fast == json_outcome(text, monkeypatch, "yaml", fast=False)


def test_the_collector_is_paused_while_specs_are_read_and_restored_after():
    import gc
    import threading

    from torcd.spec.collector import collector_paused

    assert gc.isenabled()
    inside, release, entered = [], threading.Event(), threading.Event()

    def other() -> None:
        with collector_paused():
            entered.set()
            release.wait()
            inside.append(gc.isenabled())

    t = threading.Thread(target=other)
    t.start()
    entered.wait()
    with collector_paused():
        inside.append(gc.isenabled())
    assert not gc.isenabled()  # the other reader is still reading
    release.set()
    t.join()
    assert inside == [False, False] and gc.isenabled()
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()  # off before, off after
    finally:
        gc.enable()
