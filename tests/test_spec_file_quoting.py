"""`${files.input.NAME}` and `${files.output.NAME}` put a path into a shell command as one quoted
word: a path holding `$(...)`, spaces or quotes names a file and runs nothing."""

from __future__ import annotations

import json
import shlex

from hypothesis import given
from hypothesis import strategies as st

from torcd.spec.parse import parse_spec

TRICKY = [
    "in $(touch pwned).txt",
    "two words.txt",
    'it\'s "quoted".txt',
    "`touch pwned`;x|y&z>w.txt",
    "-n",
    "*",
    "${HOME}",
]


def command_of(path: str) -> str:
    spec = {
        "name": "q",
        "files": [{"name": "src", "path": path}],
        "jobs": [{"name": "a", "command": "cat ${files.input.src} > copy.txt"}],
    }
    return parse_spec(json.dumps(spec, ensure_ascii=False), "wf.yaml").jobs[0].command


def test_a_plain_path_is_substituted_as_it_is():
    assert command_of("data/raw-1.csv") == "cat data/raw-1.csv > copy.txt"


@given(st.sampled_from(TRICKY) | st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1))
def test_the_shell_reads_a_substituted_path_as_exactly_one_word(path):
    assert shlex.split(command_of(path)) == ["cat", path, ">", "copy.txt"]


def test_a_path_with_shell_syntax_runs_nothing_and_the_job_sees_it_exactly(daemon, tmp_path):
    paths = {f"f{i}": p for i, p in enumerate(TRICKY[:4])}
    for p in paths.values():
        (tmp_path / p).write_text(f"contents of {p}\n")
    files = [{"name": n, "path": p} for n, p in paths.items()]
    command = "".join(
        f"printf '%s\\n' ${{files.input.{n}}} >> seen.txt; cat ${{files.input.{n}}} >> copy.txt; " for n in paths
    )
    wf = daemon.submit(json.dumps({"name": "quoted", "files": files, "jobs": [{"name": "a", "command": command}]}))
    assert daemon.wait(wf, timeout=30).counts == {"completed": 1}
    assert (tmp_path / "seen.txt").read_text().splitlines() == list(paths.values())
    assert (tmp_path / "copy.txt").read_text() == "".join(f"contents of {p}\n" for p in paths.values())
    assert not (tmp_path / "pwned").exists()


def _printed(path: str, command: str) -> str:
    import subprocess

    spec = {"name": "q", "files": [{"name": "src", "path": path}], "jobs": [{"name": "a", "command": command}]}
    expanded = parse_spec(json.dumps(spec, ensure_ascii=False), "wf.yaml").jobs[0].command
    return subprocess.run(["bash", "-c", expanded], capture_output=True, text=True, check=True).stdout


@given(
    st.sampled_from(TRICKY)
    | st.text(st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\0"), min_size=1, max_size=20)
)
def test_a_reference_the_user_quoted_themselves_still_gives_the_exact_path(path):
    """Found in review: `cat "${files.input.src}"` (the careful form) got literal quote
    characters when the path held a space. The path is escaped for where it stands."""
    assert _printed(path, "printf %s ${files.input.src}") == path
    assert _printed(path, 'printf %s "${files.input.src}"') == path
    assert _printed(path, "printf %s '${files.input.src}'") == path
    assert _printed(path, 'printf %s "in ${files.input.src}/"') == f"in {path}/"
