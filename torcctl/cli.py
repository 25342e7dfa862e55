"""`torcctl`: submit, run, watch and inspect workflows on torcd."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

from torcctl import arguments as A
from torcctl import checks, data, limits, reports
from torcctl.api.client import Client, connect_transport
from torcctl.commands import (
    UsageError,
    crate,
    current_dir,
    follow,
    hpc,
    inline,
    jobs,
    servers,
    spawn,
    take_spec_from_stdin,
    workflows,
)
from torcctl.errors import ConnectError, RpcError
from torcctl.transport import TcpTransport, start_daemon
from torcd.paths import default_socket

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


RESULTS_HELP = "every job's attempts in a workflow: exit code, cause, time, memory, logs"

# Every command, in the order `torcctl --help` lists them.
COMMANDS: tuple[Command | Group, ...] = (
    Command("ping", servers.ping, "check that the daemon answers"),
    Command("submit", workflows.submit, "create a workflow from a spec; print its id", A.spec),
    Command(
        "run",
        follow.run,
        "submit a spec (or take a workflow already submitted, by id) and follow it to "
        "the end; exit 0 only if every job completed",
        A.run_args,
    ),
    Command(
        "exec",
        inline.exec_,
        "run commands over parameters without a spec (as GNU parallel); exit 0 only if every job completed",
        A.exec_args,
        needs_daemon=inline.needs_daemon,
    ),
    Command(
        "validate",
        checks.validate,
        "check a spec without submitting it: errors, then warnings",
        A.validate_args,
        needs_daemon=False,
    ),
    Command(
        "explain",
        checks.explain,
        "show, attempt by attempt, what the failure handler does for a job exiting with given codes",
        A.explain_args,
        needs_daemon=False,
    ),
    Command(
        "submit-slurm",
        workflows.submit_slurm,
        "create a workflow that runs on Slurm and submit allocations",
        A.submit_slurm_args,
    ),
    Command("watch", follow.watch, "follow a workflow's events until nothing more can run", A.watch_args),
    Command(
        "recover",
        limits.recover,
        "give failed jobs that ran out of memory or time more, and run them again; "
        "the workflow must have nothing running",
        A.recover_args,
    ),
    Command("results", jobs.results, RESULTS_HELP, lambda p: A.results_options(p, torc_list=True)),
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
                A.check_resource_utilization_args,
            ),
            Command("results", jobs.results, RESULTS_HELP + " (as `torcctl results`)", A.results_options),
            Command(
                "plot-resources",
                reports.plot_resources_command,
                "memory, runtime and timeline plots of a workflow: SVGs and an index.html (PNGs with --png)",
                A.plot_resources_args,
            ),
            Command(
                "summary",
                reports.summary_command,
                "a workflow's status, job counts, failures by cause and time spent",
                A.workflow_id,
            ),
        ),
    ),
    Command(
        "files",
        data.files,
        "a workflow's files: the job that writes each, the jobs that read it, whether it exists",
        A.workflow_id,
    ),
    Command(
        "datasets",
        data.datasets,
        "a workflow's datasets: the jobs that write and read each, its files and bytes (--hash: its hash)",
        A.datasets_args,
    ),
    Group(
        "ro-crate",
        "the workflow as an RO-Crate 1.1: its files and how each was made",
        "sub",
        "ACTION",
        (Command("export", crate.export, "write the workflow's RO-Crate metadata", A.ro_crate_args),),
    ),
    Group(
        "user-data",
        "read and write a workflow's user data (from jobs too: they reach the daemon through $TORC_API_URL)",
        "user_data_command",
        "ACTION",
        (
            Command(
                "get", data.user_data_get, "print an entry's value as JSON", A.user_data_get_args, via_api_url=True
            ),
            Command(
                "set",
                data.user_data_set,
                "set an entry's value (JSON)",
                A.user_data_set_args,
                via_api_url=True,
                aliases=("update", "create"),
            ),
            Command(
                "list", data.user_data_list, "list a workflow's user data", A.user_data_list_args, via_api_url=True
            ),
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
        A.dashboard_args,
    ),
    Command(
        "worker",
        servers.worker,
        "run jobs for the daemon (inside a Slurm allocation)",
        A.worker_args,
        needs_daemon=False,
    ),  # it reaches the daemon itself, through --url
    Command(
        "run-function",
        servers.run_function,
        "run a Python function as this job (map_function_to_jobs's jobs; Executor calls with --call)",
        A.run_function_args,
        needs_daemon=False,
    ),
    Command(
        "run-postprocess",
        servers.run_postprocess,
        "run map_function_to_jobs's post-process function on every result",
        needs_daemon=False,
    ),
    Group(
        "hpc",
        "HPC profiles: a cluster's partitions, and which suits a job",
        "sub",
        "ACTION",
        (
            Command("list", hpc.hpc_list, "the known profiles, and which this machine is on", needs_daemon=False),
            Command("detect", hpc.hpc_detect, "the profile this machine is on", needs_daemon=False),
            Command("show", hpc.hpc_show, "a profile and its partitions", A.hpc_profile_args, needs_daemon=False),
            Command("partitions", hpc.hpc_partitions, "a profile's partitions", A.hpc_profile_args, needs_daemon=False),
            Command(
                "match", hpc.hpc_match, "the partitions a job fits, best first", A.hpc_match_args, needs_daemon=False
            ),
            Command(
                "generate",
                hpc.hpc_generate,
                "a profile of this cluster (from sinfo), for Torc's config file",
                A.hpc_generate_args,
                needs_daemon=False,
            ),
        ),
    ),
    Group(
        "slurm",
        "Slurm schedulers for a spec",
        "sub",
        "ACTION",
        (
            Command(
                "generate",
                hpc.slurm_generate,
                "a spec's slurm_schedulers from an HPC profile, one per resource requirement",
                A.slurm_generate_args,
                needs_daemon=False,
            ),
            Command(
                "schedule-nodes",
                workflows.schedule_nodes,
                "submit allocations now (a chain of serialize_allocations at once)",
                A.schedule_nodes_args,
            ),
            Command(
                "sacct",
                hpc.slurm_sacct,
                "what Slurm's accounting says of a workflow's allocations and steps, and their walltime",
                A.workflow_id,
            ),
        ),
    ),
    Command("allocations", workflows.allocations, "list a workflow's Slurm allocations", A.workflow_id),
    Group(
        "workflows",
        "list and manage workflows",
        "sub",
        "ACTION",
        (
            Command("list", workflows.workflows_list, "list workflows"),
            Command("show", workflows.workflows_show, "show one workflow", A.workflow_id, aliases=("get",)),
            Command("status", workflows.workflows_status, "job counts by status", A.workflow_id),
            Command(
                "cancel", workflows.workflows_cancel, "cancel unfinished jobs, killing running ones", A.workflow_id
            ),
            Command("delete", workflows.workflows_delete, "delete a finished workflow", A.workflow_id),
            Command("create", workflows.submit, "create a workflow from a spec; print its id (as `submit`)", A.spec),
            Command(
                "check",
                checks.validate,
                "check a spec without submitting it (as `validate`)",
                A.validate_args,
                needs_daemon=False,
            ),
            Command(
                "reset-status",
                workflows.workflows_reset,
                "put jobs back to run again in a new run",
                A.reset_status_args,
            ),
            Command(
                "reinitialize",
                workflows.workflows_reinitialize,
                "run again only the jobs whose inputs changed since they ran, and what depends on them",
                A.reinitialize_args,
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
            Command("list", jobs.jobs_list, "list a workflow's jobs", A.jobs_list_args),
            Command("show", jobs.jobs_show, "show one job", A.job_id, aliases=("get",)),
            Command("attempts", jobs.jobs_attempts, "list a job's attempts", A.job_id),
            Command("retry", jobs.jobs_retry, "pending_failed -> ready, next attempt", A.classify_args),
            Command("fail", jobs.jobs_fail, "pending_failed -> failed, cancel downstream", A.classify_args),
            Command(
                "spawn",
                spawn.jobs_spawn,
                "add jobs from a running job, each waiting for it (Torc's spawn_jobs)",
                A.spawn_args,
                via_api_url=True,
            ),
            Command(
                "lineage", spawn.jobs_lineage, "a lineage's iterations and state", A.lineage_args, via_api_url=True
            ),
            Command(
                "update-resources",
                limits.update_resources,
                "set a job's memory, runtime or CPUs for its next attempts",
                A.update_resources_args,
            ),
        ),
    ),
    Command("logs", jobs.logs, "print a job attempt's stdout (or stderr)", A.logs_args),
    Command("events", follow.events, "print a workflow's event log", A.events_args, short_format=False),
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
