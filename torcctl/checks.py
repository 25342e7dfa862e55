"""Commands that read a spec without running it: validate (and convert), explain."""

from __future__ import annotations

import sys

from torcctl.api.client import Client
from torcctl.commands import UsageError, current_dir, read_spec
from torcctl.render import print_json


def validate(client: Client, args) -> int:
    """Errors as at submission, then warnings about what is valid but likely a mistake."""
    from torcd.errors import SpecError
    from torcd.spec.lint import lint_tree
    from torcd.spec.parse import load_plain, parse_tree

    text = read_spec(args.spec)
    loaded = None
    try:  # the text is read once: validation, warnings and the list of errors share its tree
        loaded = tree, loc = load_plain(text, args.spec, args.spec_format)
        spec = parse_tree(tree, loc)
        findings = lint_tree(tree, loc, spec, current_dir())
    except SpecError as e:  # a user error: exit 2, as `run` and `submit` do
        from torcd.spec.errors import MAX_ERRORS, spec_errors

        errors = spec_errors(text, args.spec, args.spec_format, loaded) or [e]
        if args.json:
            print_json({"ok": False, "errors": [{"message": x.message, **(x.data or {})} for x in errors]})
        else:
            for x in errors:
                print(f"torcctl: error: {x.message}", file=sys.stderr)
            if len(errors) > 1:
                capped = " (the first 50; there may be more)" if len(errors) >= MAX_ERRORS else ""
                print(f"{args.spec}: {len(errors)} errors{capped}", file=sys.stderr)
        return 2
    if args.print_yaml:  # after validation, so only a spec that would be accepted is converted
        from torcd.spec.parse import spec_as_yaml

        sys.stdout.write(spec_as_yaml(text, args.spec, args.spec_format))
        return 0
    if args.json:
        print_json(
            {"ok": True, "jobs": len(spec.jobs), "failure_handlers": len(spec.failure_handlers), "warnings": findings}
        )
    else:
        for f in findings:
            print(f"{args.spec}:{f.line}: warning: {f.message} (at {f.field})")
        print(
            f"{args.spec}: ok ({len(spec.jobs)} jobs, {len(spec.failure_handlers)} failure handlers, "
            f"{len(findings)} warnings)"
        )
    return 1 if findings and args.strict else 0  # 1: it ran, and --strict counts the warnings


def explain(client: Client, args) -> int:
    """Attempt by attempt, what the daemon would do for a job exiting with the given codes."""
    from torcd.core.retry import simulate
    from torcd.errors import SpecError
    from torcd.spec.parse import parse_spec

    codes = _exit_codes(args.exit_codes)
    try:
        spec = parse_spec(read_spec(args.spec), args.spec, args.spec_format)
    except SpecError as e:
        raise UsageError(e.message) from None
    job = next((j for j in spec.jobs if j.name == args.job), None)
    if job is None:
        names = [j.name for j in spec.jobs]
        shown = ", ".join(names[:10]) + (f", ... ({len(names)} in all)" if len(names) > 10 else "")
        raise UsageError(f"no job {args.job!r} in {args.spec}; jobs: {shown}")
    rules = spec.failure_handlers.get(job.failure_handler) if job.failure_handler else None
    steps = simulate(rules, spec.use_pending_failed, codes)
    final = steps[-1].status if steps else "ready"
    if args.json:
        print_json({"job": job.name, "failure_handler": job.failure_handler, "steps": steps, "final_status": final})
        return 0
    print(
        f"job {job.name}: "
        + (f"failure handler {job.failure_handler!r}" if rules else "no failure handler")
        + f"; use_pending_failed: {_setting(spec.use_pending_failed, rules is not None)}"
    )
    for step in steps:
        rule = ""
        if step.rule_index is not None and rules is not None:  # a rule decided: the job has rules
            r = rules[step.rule_index]
            match = (
                f"causes {r.causes}"
                if r.causes and step.cause in r.causes
                else "any exit code"
                if r.match_all_exit_codes
                else f"exit_codes {r.exit_codes}"
            )
            rule = f" [rule {step.rule_index}: {match}, max_retries {r.max_retries}]"
        then = _consequence(step, rules)
        ended = f"{step.cause} (exit {step.return_code})" if step.cause else f"exit {step.return_code}"
        print(f"attempt {step.attempt}: {ended} -> {then}{rule}")
        if step.action not in ("complete", "retry", "recover"):
            print(f"  because: {step.reason}")
    if final == "ready":
        print(f"attempt {len(steps) + 1} would run next (give more exit codes to follow it)")
    print(f"final status: {final}")
    return 0


def _consequence(step, rules) -> str:
    if step.action == "retry":
        return f"retry as attempt {step.attempt + 1}"
    if step.action == "recover":
        return (
            f"run recovery script `{rules[step.rule_index].recovery_script}` (TORC_RETURN_CODE="
            f"{step.return_code}); if it succeeds, retry as attempt {step.attempt + 1}, else the job fails"
        )
    return {
        "complete": "completed",
        "fail": "the job fails",
        "pending_failed": "pending_failed: waits for `torcctl jobs retry|fail` or an agent",
    }[step.action]


def _exit_codes(text: str) -> list[tuple[int, str | None]]:
    """Each attempt's ending: an exit code, or a cause (`timeout`, `oom`, `missing_output`)."""
    from torcd.core.retry import CAUSE_CODES

    out: list[tuple[int, str | None]] = []
    for token in (t.strip() for t in text.split(",") if t.strip()):
        if token in CAUSE_CODES:
            out.append((CAUSE_CODES[token], token))
        elif token.isascii() and token.isdigit() and int(token) <= 255:
            out.append((int(token), None))
        else:
            raise UsageError(
                f"--exit-codes takes exit codes 0-255 and causes ({', '.join(CAUSE_CODES)}), "
                f"comma-separated; {token!r} is neither"
            )
    if not out:
        raise UsageError("--exit-codes needs at least one exit code or cause")
    return out


def _setting(value: bool | None, has_handler: bool) -> str:
    if value is None:
        return f"unset (unmatched codes {'park the job' if has_handler else 'fail the job'})"
    return "true (unmatched codes park the job)" if value else "false (unmatched codes fail the job)"
