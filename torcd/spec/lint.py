"""Warnings about specs that are valid but probably not what their author meant."""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import subprocess
from collections.abc import Callable

import msgspec

from torcd.core.limits import SLURM_TIMEOUT_EXIT
from torcd.core.retry import Rule, select_rule
from torcd.spec.parse import Locator, Workflow, WorkflowDoc, doc_of, load_plain, parse_tree


class Finding(msgspec.Struct, frozen=True):
    line: int | None
    field: str
    message: str


def lint_spec(text: str, file: str, cwd: str, fmt: str | None = None) -> list[Finding]:
    """Errors raise SpecError as for submission; what is left are warnings, in line order."""
    tree, loc = load_plain(text, file, fmt)
    return lint_tree(tree, loc, parse_tree(tree, loc), cwd)


def lint_tree(tree: dict, loc: Locator, spec: Workflow, cwd: str) -> list[Finding]:
    """`lint_spec` for a spec already read (`load_plain`) and expanded (`parse_tree`): its text is
    not read again."""
    doc = doc_of(tree, loc)
    findings = [
        *rule_findings(doc, loc),
        *unused_handlers(doc, loc),
        *multiplier_findings(doc, loc, spec),
        *monitor_findings(doc, loc),
        *accepted_findings(doc, loc),
        *script_findings(doc, loc, lambda script: script_problem(script, cwd)),
    ]
    return sorted(findings, key=lambda f: (f.line or 0, f.field))


def multiplier_findings(doc: WorkflowDoc, loc: Locator, spec) -> list[Finding]:
    """A multiplier with no limit to multiply: no job of the handler has one."""
    limited: dict[str, set[str]] = {"runtime": set(), "memory": set()}
    for job in spec.jobs:
        if job.failure_handler:
            if job.runtime_seconds is not None:
                limited["runtime"].add(job.failure_handler)
            if job.memory_bytes is not None:
                limited["memory"].add(job.failure_handler)
    out = []
    for h, handler in enumerate(doc.failure_handlers):
        for r, rule in enumerate(handler.rules):
            for what in ("runtime", "memory"):
                if getattr(rule, f"{what}_multiplier") is None:
                    continue
                at = f"$.failure_handlers[{h}].rules[{r}].{what}_multiplier"
                if handler.name not in limited[what]:
                    out.append(
                        Finding(
                            loc.line(at),
                            at,
                            f"{what}_multiplier has no limit to multiply: no job of "
                            f"handler {handler.name!r} has a {what} requirement",
                        )
                    )
    return out


def monitor_findings(doc: WorkflowDoc, loc: Locator) -> list[Finding]:
    """Parts of Torc's `resource_monitor` that are accepted but record nothing more here."""
    monitor, out = doc.resource_monitor, list[Finding]()
    if monitor is None:
        return out
    for at, target in (("$.resource_monitor", monitor), ("$.resource_monitor.jobs", monitor.jobs)):
        if target is not None and target.granularity == "time_series":
            out.append(
                Finding(
                    loc.line(f"{at}.granularity"),
                    f"{at}.granularity",
                    "time series are not kept: each attempt records its peak memory and CPU time",
                )
            )
    if monitor.compute_node is not None and monitor.compute_node.enabled:
        at = "$.resource_monitor.compute_node"
        out.append(Finding(loc.line(at), at, "the compute node's own usage is not recorded; only jobs' usage is"))
    if monitor.metrics is not None:
        at = "$.resource_monitor.metrics"
        out.append(Finding(loc.line(at), at, "`metrics` is ignored here, as by Torc"))
    return out


def accepted_findings(doc: WorkflowDoc, loc: Locator) -> list[Finding]:
    """Torc's keys that are read but change nothing here."""
    out = []
    for i, action in enumerate(doc.actions):
        if action.max_parallel_jobs is not None:
            at = f"$.actions[{i}].max_parallel_jobs"
            out.append(
                Finding(
                    loc.line(at),
                    at,
                    "max_parallel_jobs is not applied: workers in allocations run as "
                    "many jobs as their CPUs, memory and GPUs hold",
                )
            )
    for i, f in enumerate(doc.files):
        if f.st_mtime is not None:
            at = f"$.files[{i}].st_mtime"
            out.append(Finding(loc.line(at), at, "st_mtime is not used: a file's existence is what is checked"))
    return out


def rule_findings(doc: WorkflowDoc, loc: Locator) -> list[Finding]:
    """Rules that `select_rule` never picks, or picks for fewer codes than they list. A specific
    rule beats a catch-all wherever it stands, so only the first catch-all can match."""
    out = []
    for h, handler in enumerate(doc.failure_handlers):
        rules = [Rule(exit_codes=r.exit_codes, match_all_exit_codes=r.match_all_exit_codes) for r in handler.rules]
        first_catch_all = next((r for r, rule in enumerate(rules) if rule.match_all_exit_codes), None)
        for r, rule in enumerate(handler.rules):
            at = f"$.failure_handlers[{h}].rules[{r}]"
            if rule.match_all_exit_codes and r != first_catch_all:
                out.append(
                    Finding(
                        loc.line(at),
                        at,
                        f"rule {r} can never match: rule {first_catch_all} "
                        "before it already matches every code no specific rule lists",
                    )
                )
                continue
            codes = sorted(set(rule.exit_codes or []))
            if codes and not rule.match_all_exit_codes:  # a rule of causes alone matches by cause
                taken = [c for c in codes if select_rule(rules, c) != r]
                if taken == codes:
                    out.append(
                        Finding(
                            loc.line(at),
                            at,
                            f"rule {r} can never match: earlier rules cover all its exit codes {codes}",
                        )
                    )
                    continue
                if taken:
                    out.append(
                        Finding(
                            loc.line(at), at, f"exit codes {taken} of rule {r} are matched by an earlier rule first"
                        )
                    )
            if (
                SLURM_TIMEOUT_EXIT in (rule.exit_codes or [])
                and "timeout" not in (rule.causes or [])
                and doc.execution_config is None  # with one, a timed-out job is recorded with its timeout_exit_code
            ):
                out.append(
                    Finding(
                        loc.line(f"{at}.exit_codes"),
                        f"{at}.exit_codes",
                        f"{SLURM_TIMEOUT_EXIT} is Torc's (and Slurm's) exit code of a timed-out job; torc-py "
                        "records a job stopped at its runtime with cause `timeout` (exit 143, or 137 if it had "
                        "to be killed): add `causes: [timeout]` to this rule for those, or give the workflow an "
                        "`execution_config` (Torc's), which records them as 152",
                    )
                )
            if rule.max_retries == 1:
                what = "its recovery script never runs" if rule.recovery_script else "no retry"
                out.append(
                    Finding(
                        loc.line(f"{at}.max_retries"),
                        f"{at}.max_retries",
                        f"max_retries: 1 allows only the first attempt: {what} (max_retries counts attempts)",
                    )
                )
    return out


def unused_handlers(doc: WorkflowDoc, loc: Locator) -> list[Finding]:
    used = {job.failure_handler for job in doc.jobs}
    return [
        Finding(
            loc.line(f"$.failure_handlers[{h}]"),
            f"$.failure_handlers[{h}].name",
            f"failure handler {handler.name!r} is used by no job",
        )
        for h, handler in enumerate(doc.failure_handlers)
        if handler.name not in used
    ]


def script_findings(doc: WorkflowDoc, loc: Locator, problem: Callable[[str], str | None]) -> list[Finding]:
    out = []
    for h, handler in enumerate(doc.failure_handlers):
        for r, rule in enumerate(handler.rules):
            if rule.recovery_script and (why := problem(rule.recovery_script)):
                at = f"$.failure_handlers[{h}].rules[{r}].recovery_script"
                out.append(Finding(loc.line(at), at, why))
    return out


def script_problem(script: str, cwd: str) -> str | None:
    """Why the program a recovery script starts with would not run from `cwd`, if it would not."""
    try:
        words = shlex.split(script, comments=True)
    except ValueError:
        return None  # not simple enough to judge; bash will say
    if not words or "=" in words[0] or "$" in words[0]:
        return None
    program = words[0]
    if "/" in program:
        path = os.path.join(cwd, os.path.expanduser(program))
        if not os.path.exists(path):
            return f"recovery script {program!r} does not exist (relative to {cwd})"
        if not os.access(path, os.X_OK) or os.path.isdir(path):
            return f"recovery script {program!r} is not executable (chmod +x {program})"
        return None
    if shutil.which(program) or program in _shell_words():
        return None
    return f"recovery script command {program!r} is not on PATH nor a shell builtin"


@functools.cache
def _shell_words() -> frozenset[str]:
    out = subprocess.run(["bash", "-c", "compgen -b; compgen -k"], capture_output=True, text=True)
    return frozenset(out.stdout.split())
