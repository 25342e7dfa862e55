"""`torcctl`: submit, run, watch and inspect workflows on torcd."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

from torcctl import checks, data, limits, reports
from torcctl.api.client import Client, connect_transport
from torcctl.commands import UsageError, current_dir, follow, inline, jobs, servers, take_spec_from_stdin, workflows
from torcctl.errors import ConnectError, RpcError
from torcctl.transport import TcpTransport, start_daemon
from torcd.paths import default_socket
from torcd.protocol import SPEC_FORMATS

Handler = Callable[[Client, argparse.Namespace], "int | None"]
AddArguments = Callable[[argparse.ArgumentParser], None]


@dataclass(frozen=True)
class Command:
    """One `torcctl` command: its parser is built from this, and `connect` reads what it needs."""

    name: str
    handler: Handler
    help: str
    add_arguments: AddArguments | None = None
    # False: the command never talks to torcd, so none is pinged or started (or, as a function
    # of the arguments, whether it does this time)
    needs_daemon: bool | Callable[[argparse.Namespace], bool] = True
    via_api_url: bool = False  # a job runs it: it reaches the daemon running the job through $TORC_API_URL
    aliases: tuple[str, ...] = ()
    short_format: bool = True  # False where -f means something else (`events -f` is --follow)


@dataclass(frozen=True)
class Group:
    """A command with actions under it (`torcctl jobs list`)."""

    name: str
    help: str
    dest: str
    metavar: str
    commands: tuple[Command, ...]


def _size(text: str) -> int:
    from torcd.core.resources import parse_memory

    try:
        return parse_memory(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}")
    return int(text)


def _workflow_id(p: argparse.ArgumentParser) -> None:
    p.add_argument("workflow_id", type=int)


def _spec(p: argparse.ArgumentParser, metavar: str = "SPEC") -> None:
    p.add_argument("spec", metavar=metavar, help="the spec's file; - reads it from standard input")
    p.add_argument(
        "--spec-format",
        choices=SPEC_FORMATS,
        help="the spec's format (default: from its extension; .json5, .kdl, else YAML, which reads JSON)",
    )


def _run_args(p: argparse.ArgumentParser) -> None:
    _spec(p, "SPEC|WORKFLOW_ID")
    p.add_argument("-q", "--quiet", action="store_true", help="only print the summary")
    p.add_argument(
        "--label",
        help="run the workflow's jobs with this label (Torc's): they run only while a `run --label` follows",
    )


def _exec_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--command", action="append", metavar="CMD", help="a command; {NAME} takes a --param")
    p.add_argument(
        "-C",
        "--commands-file",
        metavar="FILE",
        help="commands, one per line (# comments and blank lines skipped); - reads standard input",
    )
    p.add_argument(
        "--param",
        action="append",
        metavar="NAME=VALUES",
        help="values of {NAME}: a range 1:10 (0:100:10), a list [a,b], @FILE (one per line) or one value",
    )
    p.add_argument(
        "--link", choices=("product", "zip"), default="product", help="every combination (default), or by position"
    )
    p.add_argument("-n", "--name", help="the workflow's name (default: exec_DATE_TIME)")
    p.add_argument("--description", help="the workflow's description")
    p.add_argument("-o", "--output-dir", help="where job logs go (default: output)")
    p.add_argument("--num-cpus", type=int, default=1, metavar="N", help="CPUs each job takes (default 1)")
    p.add_argument("--dry-run", action="store_true", help="print the spec it would run, as YAML; run nothing")
    p.add_argument("-q", "--quiet", action="store_true", help="only print the summary")
    p.add_argument("words", nargs=argparse.REMAINDER, help="or: -- the command's words (quoted for the shell)")


def _run_function_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--call", nargs=2, metavar=("DIR", "N"), help="an Executor call: the folder of its files, its number"
    )


def _validate_args(p: argparse.ArgumentParser) -> None:
    _spec(p)
    p.add_argument("--print-yaml", action="store_true", help="print the spec as YAML (any format in, YAML out)")
    p.add_argument("--strict", action="store_true", help="exit 1 when there are warnings")


def _explain_args(p: argparse.ArgumentParser) -> None:
    _spec(p)
    p.add_argument("--job", required=True, help="the job's name (as expanded, e.g. work_3)")
    p.add_argument("--exit-codes", required=True, metavar="RC,RC,...", help="exit code of each attempt in turn")


def _submit_slurm_args(p: argparse.ArgumentParser) -> None:
    _spec(p)
    p.add_argument("--account", help="Slurm account for the allocations")
    p.add_argument("--allocations", type=int, help="how many allocations (default: sized to the ready jobs)")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the allocations it would submit and which jobs go on which node; submit nothing",
    )


def _watch_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("workflow_id", type=int)
    auto = p.add_mutually_exclusive_group()
    auto.add_argument(
        "--auto-schedule",
        action="store_true",
        default=None,
        help="keep Slurm allocations coming for ready and retried jobs (stored; survives restarts)",
    )
    auto.add_argument("--no-auto-schedule", dest="auto_schedule", action="store_false")
    p.add_argument(
        "--auto-schedule-threshold",
        type=int,
        default=5,
        metavar="N",
        help="ready retries that justify more allocations while some run (default 5)",
    )
    p.add_argument(
        "--auto-schedule-cooldown",
        type=float,
        default=1800,
        metavar="SECONDS",
        help="at most one such submission per this many seconds (default 1800)",
    )
    p.add_argument(
        "--auto-schedule-stranded-timeout",
        type=float,
        default=7200,
        metavar="SECONDS",
        help="submit anyway when a retry has waited this long (default 7200; 0 turns this off)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="only print the summary")
    p.add_argument(
        "-r",
        "--recover",
        action="store_true",
        help="each time the workflow ends with failed jobs, give those that ran out of memory or time "
        "more (as `torcctl recover`) and run them again",
    )
    p.add_argument(
        "-m", "--max-retries", type=limits.count, default=3, metavar="N", help="at most N recoveries (default 3)"
    )
    p.add_argument(
        "-p",
        "--poll-interval",
        type=float,
        metavar="SECONDS",
        help="Torc's polling period; torcd pushes each event as it happens, so any value means 'at once'",
    )
    p.add_argument(
        "-o",
        "--output-dir",
        metavar="DIR",
        help="where to write watch_HOST_wfID.log, a copy of every event line (default: the workflow's "
        "output directory)",
    )
    p.add_argument(
        "-s",
        "--show-job-counts",
        action="store_true",
        help="as in Torc; the live view and the summary always show the job counts",
    )
    limits.add_options(p)


def _recover_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("workflow_id", type=int)
    p.add_argument("--dry-run", action="store_true", help="print the plan; change nothing")
    limits.add_options(p)


def results_options(p: argparse.ArgumentParser, torc_list: bool = False) -> None:
    if torc_list:  # `torcctl results list WF`, as Torc spells it, is `torcctl results WF`
        p.add_argument("action", nargs="?", choices=["list"], default="list", help=argparse.SUPPRESS)
    p.add_argument("workflow_id", type=int)
    p.add_argument("--failed", action="store_true", help="only attempts that exited non-zero")
    p.add_argument("--all-runs", action="store_true", help="also attempts of earlier runs (before a reset)")
    p.add_argument("--return-code", type=int, metavar="N", help="only attempts that exited N")


def _plot_resources_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("workflow_id", type=int)
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="directory to write into (made if missing)")
    p.add_argument("--png", action="store_true", help="also PNGs, rendered by a headless Chromium ($TORC_CHROMIUM)")


def _check_resource_utilization_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("workflow_id", type=int)
    include = p.add_mutually_exclusive_group()
    include.add_argument(
        "--include-failed",
        action="store_true",
        default=True,
        help="also jobs that failed (the default, as the MCP tool's)",
    )
    include.add_argument(
        "--exclude-failed", dest="include_failed", action="store_false", help="only jobs that exited 0"
    )


def _user_data_get_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name")
    p.add_argument("-w", "--workflow-id", type=int, help="default: $TORC_WORKFLOW_ID")


def _user_data_set_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name")
    p.add_argument("data", nargs="?", metavar="JSON", help="the value, like '{\"rows\": 10}' or '\"text\"'")
    p.add_argument("--data", dest="data_flag", metavar="JSON", help="the value, as Torc's `user-data update` takes it")
    p.add_argument("--data-file", metavar="FILE", help="read the value from FILE (- for stdin)")
    p.add_argument("-w", "--workflow-id", type=int, help="default: $TORC_WORKFLOW_ID")


def _user_data_list_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("workflow", nargs="?", type=int, metavar="WORKFLOW_ID", help="as in Torc (or -w)")
    p.add_argument("-w", "--workflow-id", type=int, help="default: $TORC_WORKFLOW_ID")


def _worker_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=os.environ.get("TORC_API_URL"), help="daemon URL (http://HOST:PORT or unix://PATH)")
    p.add_argument("--token-file", help="file holding this allocation's credential (or set TORC_API_TOKEN)")
    p.add_argument("--ca-file", help="certificate to trust for an https:// daemon URL")
    p.add_argument("--workflow-id", type=int, required=True)
    p.add_argument("--allocation-id", type=int)
    p.add_argument("--cpus", type=int, help="CPUs to use (default: the allocation's)")
    p.add_argument("--walltime", type=float, help="seconds the allocation lasts; stop claiming near the end")
    p.add_argument("--poll-interval", type=float, default=0.5)
    p.add_argument(
        "--idle-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="exit after this long with nothing to do while jobs may still become ready (default: the "
        "workflow's compute_node_wait_for_new_jobs_seconds, 90)",
    )
    p.add_argument(
        "--memory",
        type=_size,
        default=None,
        metavar="SIZE",
        help="memory its jobs may use together, like 256g (default: what Slurm gave the allocation)",
    )
    p.add_argument(
        "--gpus",
        type=int,
        default=None,
        metavar="N",
        help="GPUs to hand out, devices 0..N-1 (default: $TORCD_GPUS, else CUDA_VISIBLE_DEVICES)",
    )
    p.add_argument(
        "--journal",
        metavar="PATH",
        help="where to keep what the daemon has not heard yet (default, in an allocation: a "
        "torc-worker directory in $XDG_RUNTIME_DIR or a private $TMPDIR, else one in $TMPDIR or /tmp "
        "named from the allocation's credential, which no other user can guess); a worker started "
        "with the journal of one that died reports what it left",
    )
    p.add_argument(
        "--wait-for-daemon",
        type=float,
        default=None,
        metavar="SECONDS",
        help="how long to keep trying a daemon that does not answer (default: the workflow's "
        "compute_node_wait_for_healthy_database_minutes, 20 min)",
    )


def _reset_status_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("workflow_id", type=int)
    p.add_argument(
        "--failed-only",
        action="store_true",
        help="only failed, canceled, terminated and pending_failed jobs (and what they block)",
    )


def _reinitialize_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("workflow_id", type=int)
    p.add_argument("--dry-run", action="store_true", help="say which jobs would run again, and why; change nothing")


def _jobs_list_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("workflow_id", type=int)
    p.add_argument("-s", "--status", help="only jobs with this status (e.g. pending_failed)")
    p.add_argument(
        "--sort-by",
        choices=["id", "name", "status", "attempt", "rc"],
        default="id",
        help="order of the listing (default id)",
    )
    p.add_argument("--limit", type=int, default=10_000)
    p.add_argument("--offset", type=int, default=0)


def _job_id(p: argparse.ArgumentParser) -> None:
    p.add_argument("job_id", type=int)


def _classify_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("job_ids", type=int, nargs="+", metavar="JOB")
    p.add_argument("--reason", default="", help="why (stored and shown)")


def _update_resources_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("job_id", type=int, metavar="JOB")
    p.add_argument("--memory", metavar="SIZE", help="like 8g or 512m")
    p.add_argument("--runtime", metavar="DURATION", help="ISO-8601, like PT2H or PT90M")
    p.add_argument("--num-cpus", type=int, metavar="N")
    p.add_argument("--reason", required=True, help="why (kept with each change)")


def _logs_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("job_id", type=int)
    p.add_argument("--attempt", type=int, help="attempt number (default: the latest)")
    p.add_argument("--run", type=int, help="run number (default: the latest)")
    p.add_argument("--stderr", action="store_true")
    p.add_argument("--recovery", action="store_true", help="the recovery script's output instead")
    p.add_argument("--tail", type=_count, metavar="N", help="only the last N lines")


def _dashboard_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (default 0: any free one)")
    p.add_argument("--no-browser", action="store_true", help="only print the URL")


def _events_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("workflow_id", type=int)
    p.add_argument("--after", type=int, default=0, help="only events after this sequence number")
    p.add_argument("-f", "--follow", action="store_true", help="keep following new events")


RESULTS_HELP = "every job's attempts in a workflow: exit code, cause, time, memory, logs"

# Every command, in the order `torcctl --help` lists them.
COMMANDS: tuple[Command | Group, ...] = (
    Command("ping", servers.ping, "check that the daemon answers"),
    Command("submit", workflows.submit, "create a workflow from a spec; print its id", _spec),
    Command(
        "run",
        follow.run,
        "submit a spec (or take a workflow already submitted, by id) and follow it to "
        "the end; exit 0 only if every job completed",
        _run_args,
    ),
    Command(
        "exec",
        inline.exec_,
        "run commands over parameters without a spec (as GNU parallel); exit 0 only if every job completed",
        _exec_args,
        needs_daemon=inline.needs_daemon,
    ),
    Command(
        "validate",
        checks.validate,
        "check a spec without submitting it: errors, then warnings",
        _validate_args,
        needs_daemon=False,
    ),
    Command(
        "explain",
        checks.explain,
        "show, attempt by attempt, what the failure handler does for a job exiting with given codes",
        _explain_args,
        needs_daemon=False,
    ),
    Command(
        "submit-slurm",
        workflows.submit_slurm,
        "create a workflow that runs on Slurm and submit allocations",
        _submit_slurm_args,
    ),
    Command("watch", follow.watch, "follow a workflow's events until nothing more can run", _watch_args),
    Command(
        "recover",
        limits.recover,
        "give failed jobs that ran out of memory or time more, and run them again; "
        "the workflow must have nothing running",
        _recover_args,
    ),
    Command("results", jobs.results, RESULTS_HELP, lambda p: results_options(p, torc_list=True)),
    Group(
        "reports",
        "reports on a workflow: resource use against limits, results, a summary",
        "sub",
        "REPORT",
        (
            Command(
                "check-resource-utilization",
                reports.check_resource_utilization_command,
                "each job's peak memory and runtime against its limits, flagging over- and under-use",
                _check_resource_utilization_args,
            ),
            Command("results", jobs.results, RESULTS_HELP + " (as `torcctl results`)", results_options),
            Command(
                "plot-resources",
                reports.plot_resources_command,
                "memory, runtime and timeline plots of a workflow: SVGs and an index.html (PNGs with --png)",
                _plot_resources_args,
            ),
            Command(
                "summary",
                reports.summary_command,
                "a workflow's status, job counts, failures by cause and time spent",
                _workflow_id,
            ),
        ),
    ),
    Command(
        "files",
        data.files,
        "a workflow's files: the job that writes each, the jobs that read it, whether it exists",
        _workflow_id,
    ),
    Group(
        "user-data",
        "read and write a workflow's user data (from jobs too: they reach the daemon through $TORC_API_URL)",
        "user_data_command",
        "ACTION",
        (
            Command("get", data.user_data_get, "print an entry's value as JSON", _user_data_get_args, via_api_url=True),
            Command(
                "set",
                data.user_data_set,
                "set an entry's value (JSON)",
                _user_data_set_args,
                via_api_url=True,
                aliases=("update", "create"),
            ),
            Command("list", data.user_data_list, "list a workflow's user data", _user_data_list_args, via_api_url=True),
        ),
    ),
    Command(
        "mcp",
        servers.mcp,
        "serve the Model Context Protocol on stdio: AI agents list and classify pending_failed jobs",
    ),
    Command(
        "dashboard",
        servers.dashboard,
        "serve the web dashboard on 127.0.0.1 and open it: workflows, failures, logs, resources, actions",
        _dashboard_args,
    ),
    Command(
        "worker",
        servers.worker,
        "run jobs for the daemon (inside a Slurm allocation)",
        _worker_args,
        needs_daemon=False,
    ),  # it reaches the daemon itself, through --url
    Command(
        "run-function",
        servers.run_function,
        "run a Python function as this job (map_function_to_jobs's jobs; Executor calls with --call)",
        _run_function_args,
        needs_daemon=False,
    ),
    Command(
        "run-postprocess",
        servers.run_postprocess,
        "run map_function_to_jobs's post-process function on every result",
        needs_daemon=False,
    ),
    Command("allocations", workflows.allocations, "list a workflow's Slurm allocations", _workflow_id),
    Group(
        "workflows",
        "list and manage workflows",
        "sub",
        "ACTION",
        (
            Command("list", workflows.workflows_list, "list workflows"),
            Command("show", workflows.workflows_show, "show one workflow", _workflow_id, aliases=("get",)),
            Command("status", workflows.workflows_status, "job counts by status", _workflow_id),
            Command("cancel", workflows.workflows_cancel, "cancel unfinished jobs, killing running ones", _workflow_id),
            Command("delete", workflows.workflows_delete, "delete a finished workflow", _workflow_id),
            Command("create", workflows.submit, "create a workflow from a spec; print its id (as `submit`)", _spec),
            Command(
                "check",
                checks.validate,
                "check a spec without submitting it (as `validate`)",
                _validate_args,
                needs_daemon=False,
            ),
            Command(
                "reset-status", workflows.workflows_reset, "put jobs back to run again in a new run", _reset_status_args
            ),
            Command(
                "reinitialize",
                workflows.workflows_reinitialize,
                "run again only the jobs whose inputs changed since they ran, and what depends on them",
                _reinitialize_args,
                aliases=("reinit",),
            ),
        ),
    ),
    Group(
        "jobs",
        "list and manage jobs",
        "sub",
        "ACTION",
        (
            Command("list", jobs.jobs_list, "list a workflow's jobs", _jobs_list_args),
            Command("show", jobs.jobs_show, "show one job", _job_id, aliases=("get",)),
            Command("attempts", jobs.jobs_attempts, "list a job's attempts", _job_id),
            Command("retry", jobs.jobs_retry, "pending_failed -> ready, next attempt", _classify_args),
            Command("fail", jobs.jobs_fail, "pending_failed -> failed, cancel downstream", _classify_args),
            Command(
                "update-resources",
                limits.update_resources,
                "set a job's memory, runtime or CPUs for its next attempts",
                _update_resources_args,
            ),
        ),
    ),
    Command("logs", jobs.logs, "print a job attempt's stdout (or stderr)", _logs_args),
    Command("events", follow.events, "print a workflow's event log", _events_args, short_format=False),
)


def _add_command(sub: argparse._SubParsersAction, c: Command) -> None:
    p = sub.add_parser(c.name, help=c.help, description=c.help, aliases=list(c.aliases))
    p.set_defaults(func=c.handler, command_entry=c)
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    # `-f json` after the command too, as Torc's docs write it
    p.add_argument(
        *(("-f", "--format") if c.short_format else ("--format",)),
        choices=["table", "json"],
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
    )
    if c.add_arguments:
        c.add_arguments(p)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="torcctl", description="Client of the torc workflow daemon.")
    ap.add_argument("--socket", help="daemon socket (default: $TORCD_SOCKET or the per-user default)")
    ap.add_argument("--state-dir", help="state dir for a daemon this command starts")
    ap.add_argument("--no-autostart", action="store_true", help="fail instead of starting torcd")
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    ap.add_argument("-f", "--format", choices=["table", "json"], help="output format (`-f json` is --json, as in Torc)")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for entry in COMMANDS:
        if isinstance(entry, Command):
            _add_command(sub, entry)
            continue
        group = sub.add_parser(entry.name, help=entry.help).add_subparsers(
            dest=entry.dest, required=True, metavar=entry.metavar
        )
        for c in entry.commands:
            _add_command(group, c)
    return ap


def connect(args: argparse.Namespace) -> Client:
    """The client a command uses: the job's daemon for a command a job runs, else the socket
    (a daemon started when none answers, unless --no-autostart)."""
    entry: Command = args.command_entry
    if (args.socket and not os.path.isabs(args.socket)) or (args.state_dir and not os.path.isabs(args.state_dir)):
        current_dir()  # relative paths need a working directory that still exists
    if args.state_dir:
        args.state_dir = os.path.abspath(args.state_dir)
    via_job = entry.via_api_url and not args.socket and os.environ.get("TORC_API_URL")
    transport = connect_transport(None if via_job else args.socket or default_socket())
    client = Client(transport=transport)
    args.autostarted = None
    needs = entry.needs_daemon(args) if callable(entry.needs_daemon) else entry.needs_daemon
    if not needs or isinstance(transport, TcpTransport):
        return client
    if not transport.ping(2.0):
        if args.no_autostart:
            raise ConnectError(f"no torcd answers on {transport.socket_path} (and --no-autostart was given)")
        args.autostarted = start_daemon(transport.socket_path, args.state_dir)
    return client


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.format == "json":
        args.json = True
    try:
        take_spec_from_stdin(args)
        client = connect(args)
        return args.func(client, args) or 0
    except RpcError as e:
        field = e.data.get("field") if isinstance(e.data, dict) else None
        print(
            f"torcctl: error: {e.message}" + (f" [{field}]" if field and field not in e.message else ""),
            file=sys.stderr,
        )
        return 2
    except (ConnectError, UsageError) as e:
        print(f"torcctl: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
