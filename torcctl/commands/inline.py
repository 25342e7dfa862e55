"""`torcctl exec`: run commands over parameters without writing a spec (Torc's `exec`, in the
manner of GNU parallel). The commands and `--param` values become a spec of one job per
command and combination, which is then run as `torcctl run` runs a spec (or, with
`--dry-run`, printed as YAML)."""

from __future__ import annotations

import ast
import json
import shlex
import time
from collections.abc import Sequence

from torcctl.api.client import Client
from torcctl.commands import UsageError, read_spec, remember_spec, stdin_text
from torcd.core import params as P
from torcd.errors import SpecError
from torcd.spec.parse import parse_spec, spec_as_yaml
from torcd.spec.schema import MAX_JOBS

MAX_COMMANDS = 100_000
MAX_LIST_LINES = 1_000_000
EXEC_SPEC = "<exec>"  # what the spec made here is called in messages


Command = str | list[str]  # a command line, or words to quote for the shell once filled in


def exec_spec(
    commands: Sequence[Command],
    params: dict[str, Sequence[P.Scalar]],
    link: str,
    name: str,
    description: str = "",
    output_dir: str | None = None,
    num_cpus: int = 1,
) -> dict:
    """The spec `exec` runs: one job per command and combination of the parameters it uses
    (`{name}` in it), all of them or zipped (`link`). Values are filled in as written (text
    stays text: "3.10", "007"), and as numbers where a format asks (`{n:03d}`). Pure."""
    if not commands:
        raise UsageError("give a command: -c CMD, -C FILE, or the command's words after --")
    names = [P.placeholders(c if isinstance(c, str) else " ".join(c)) for c in commands]
    if unused := sorted(set(params) - {p for used in names for p in used}):
        raise UsageError(f"--param {unused[0]} is used by no command (write {{{unused[0]}}} in one)")
    owns = [{p: params[p] for p in sorted(used) if p in params} for used in names]
    counts = []
    for k, own in enumerate(owns, 1):
        try:
            counts.append(P.product_size(own, link == "zip") if own else 1)
        except P.ParameterError as e:
            raise UsageError(f"command {k}: {e}") from None
    if sum(counts) > MAX_JOBS:  # before any is built
        raise UsageError(f"these commands and values make {sum(counts):,} jobs; the limit is {MAX_JOBS:,}")
    jobs = []
    several = len(commands) > 1
    for k, (command, own, count) in enumerate(zip(commands, owns, counts), 1):
        width = len(str(count))
        for n, combo in enumerate(P.combinations(own, link == "zip") if own else [{}], 1):
            try:
                filled = (
                    P.fill_text(command, combo)
                    if isinstance(command, str)
                    else shlex.join(P.fill_text(w, combo) for w in command)
                )
            except P.ParameterError as e:
                raise UsageError(f"command {k}: {e}") from None
            suffix = f"_{n:0{width}d}" if count > 1 else ""
            job: dict[str, str | int] = {"name": (f"cmd{k}" if several else "job") + suffix, "command": filled}
            if num_cpus != 1:
                job["num_cpus"] = num_cpus
            jobs.append(job)
    spec: dict = {"name": name, "jobs": jobs}
    if description:
        spec["description"] = description
    if output_dir:
        spec["output_dir"] = output_dir
    return spec


def param_values(text: str, read_lines=None) -> tuple[str, Sequence[P.Scalar]]:
    """`NAME=VALUE` as Torc's exec reads it: an integer range `1:10` (`0:100:10`), a list
    `[a,b]`, `@FILE` (a value per line), or one value. Values are kept as written."""
    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier() or not name.isascii():
        raise UsageError(f"--param {text!r}: write NAME=VALUES, NAME a parameter name (letters, digits, _)")
    try:
        if value.startswith("@"):
            lines = (read_lines or _lines)(value[1:])
            if not lines:
                raise UsageError(f"--param {name}: {value[1:]} holds no values")
            return name, lines
        if value.lstrip().startswith("["):
            return name, _list_as_written(value)
        if P.RANGE.fullmatch(value) or P.FLOAT_RANGE.fullmatch(value):
            return name, P.parse_values(value)
    except P.ParameterError as e:
        raise UsageError(f"--param {name}: {e}") from None
    return name, [value]


def _list_as_written(text: str) -> list[P.Scalar]:
    """A list's items as their text (`[3.9, 3.10]` keeps "3.10"): a quoted item without its
    quotes; anything else as written between the commas (Torc's `[a,b,c]`)."""
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        tree = None
    constants = [e for e in tree.elts if isinstance(e, ast.Constant)] if isinstance(tree, ast.List) else None
    if constants is not None and isinstance(tree, ast.List) and len(constants) == len(tree.elts):
        source = text.strip()
        items = [e.value if isinstance(e.value, str) else ast.get_source_segment(source, e) for e in constants]
    else:
        items = [str(v) for v in P.parse_values(text)]  # bare words; its errors say what is wrong
    if not items or any(i is None or isinstance(i, bool) for i in items):
        raise P.ParameterError(f"cannot read list {text[:60]!r}")
    return [str(i) for i in items]


def _lines(path: str) -> list[str]:
    """A list file's values: one per line, blank lines skipped."""
    text = read_spec(path)  # the same checks as a spec's: a regular file, size-limited, UTF-8
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) > MAX_LIST_LINES:
        raise UsageError(f"{path} has {len(lines):,} values; the limit is {MAX_LIST_LINES:,}")
    return lines


def commands_of(args) -> list[Command]:
    commands: list[Command] = list(args.command or [])
    if args.commands_file:
        text = read_spec(args.commands_file) if args.commands_file != "-" else stdin_text()
        commands += [c for c in (line.strip() for line in text.splitlines()) if c and not c.startswith("#")]
    words = [w for w in args.words if w != "--"] if args.words else []
    if words:
        if commands:
            raise UsageError("give the command either with -c/-C or after --, not both")
        commands = [words]  # quoted for the shell once each word is filled in
    if len(commands) > MAX_COMMANDS:
        raise UsageError(f"{len(commands):,} commands; the limit is {MAX_COMMANDS:,}")
    return commands


def exec_(client: Client | None, args) -> int:
    from torcctl.commands.follow import run  # the run a spec gets

    params: dict[str, Sequence[P.Scalar]] = {}
    for given in args.param or []:
        name, values = param_values(given)
        if name in params:
            raise UsageError(f"--param {name} is given twice")
        params[name] = values
    spec = exec_spec(
        commands_of(args),
        params,
        args.link,
        args.name or time.strftime("exec_%Y%m%d_%H%M%S"),
        args.description or "",
        args.output_dir,
        args.num_cpus,
    )
    text = json.dumps(spec)
    try:
        parse_spec(text, EXEC_SPEC, "json")  # every error here, before a daemon is asked for
    except SpecError as e:
        raise UsageError(e.message) from None
    if args.dry_run:
        print(spec_as_yaml(text, EXEC_SPEC, "json"), end="")
        return 0
    assert client is not None
    remember_spec(EXEC_SPEC, text)
    args.spec, args.spec_format = EXEC_SPEC, "json"
    return run(client, args)


def needs_daemon(args) -> bool:
    return not args.dry_run
