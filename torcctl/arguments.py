"""Each `torcctl` command's arguments: one function per command (or shared by several), given
the command's argparse parser. `cli` pairs them with the commands."""

from __future__ import annotations

import argparse
import os

from torcctl import limits
from torcd.protocol import SPEC_FORMATS


def size(text: str) -> int:
    from torcd.core.resources import parse_memory

    try:
        return parse_memory(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def count(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}")
    return int(text)


def workflow_id(p: argparse.ArgumentParser) -> None:
    p.add_argument("workflow_id", type=int)


def spec(p: argparse.ArgumentParser, metavar: str = "SPEC") -> None:
    p.add_argument("spec", metavar=metavar, help="the spec's file; - reads it from standard input")
    p.add_argument(
        "--spec-format",
        choices=SPEC_FORMATS,
        help="the spec's format (default: from its extension; .json5, .kdl, else YAML, which reads JSON)",
    )


def run_args(p: argparse.ArgumentParser) -> None:
    spec(p, "SPEC|WORKFLOW_ID")
    p.add_argument("-q", "--quiet", action="store_true", help="only print the summary")
    p.add_argument(
        "--label",
        help="run the workflow's jobs with this label (Torc's): they run only while a `run --label` follows",
    )


def exec_args(p: argparse.ArgumentParser) -> None:
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


def run_function_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--call", nargs=2, metavar=("DIR", "N"), help="an Executor call: the folder of its files, its number"
    )


def validate_args(p: argparse.ArgumentParser) -> None:
    spec(p)
    p.add_argument("--print-yaml", action="store_true", help="print the spec as YAML (any format in, YAML out)")
    p.add_argument("--strict", action="store_true", help="exit 1 when there are warnings")


def explain_args(p: argparse.ArgumentParser) -> None:
    spec(p)
    p.add_argument("--job", required=True, help="the job's name (as expanded, e.g. work_3)")
    p.add_argument("--exit-codes", required=True, metavar="RC,RC,...", help="exit code of each attempt in turn")


def submit_slurm_args(p: argparse.ArgumentParser) -> None:
    spec(p)
    p.add_argument("--account", help="Slurm account for the allocations")
    p.add_argument("--allocations", type=int, help="how many allocations (default: sized to the ready jobs)")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the allocations it would submit and which jobs go on which node; submit nothing",
    )


def watch_args(p: argparse.ArgumentParser) -> None:
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


def recover_args(p: argparse.ArgumentParser) -> None:
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


def plot_resources_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("workflow_id", type=int)
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="directory to write into (made if missing)")
    p.add_argument("--png", action="store_true", help="also PNGs, rendered by a headless Chromium ($TORC_CHROMIUM)")


def check_resource_utilization_args(p: argparse.ArgumentParser) -> None:
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


def user_data_get_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name")
    p.add_argument("-w", "--workflow-id", type=int, help="default: $TORC_WORKFLOW_ID")


def user_data_set_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name")
    p.add_argument("data", nargs="?", metavar="JSON", help="the value, like '{\"rows\": 10}' or '\"text\"'")
    p.add_argument("--data", dest="data_flag", metavar="JSON", help="the value, as Torc's `user-data update` takes it")
    p.add_argument("--data-file", metavar="FILE", help="read the value from FILE (- for stdin)")
    p.add_argument("-w", "--workflow-id", type=int, help="default: $TORC_WORKFLOW_ID")


def user_data_list_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("workflow", nargs="?", type=int, metavar="WORKFLOW_ID", help="as in Torc (or -w)")
    p.add_argument("-w", "--workflow-id", type=int, help="default: $TORC_WORKFLOW_ID")


def worker_args(p: argparse.ArgumentParser) -> None:
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
        type=size,
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


def reset_status_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("workflow_id", type=int)
    p.add_argument(
        "--failed-only",
        action="store_true",
        help="only failed, canceled, terminated and pending_failed jobs (and what they block)",
    )


def reinitialize_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("workflow_id", type=int)
    p.add_argument("--dry-run", action="store_true", help="say which jobs would run again, and why; change nothing")


def jobs_list_args(p: argparse.ArgumentParser) -> None:
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


def job_id(p: argparse.ArgumentParser) -> None:
    p.add_argument("job_id", type=int)


def classify_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("job_ids", type=int, nargs="+", metavar="JOB")
    p.add_argument("--reason", default="", help="why (stored and shown)")


def update_resources_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("job_id", type=int, metavar="JOB")
    p.add_argument("--memory", metavar="SIZE", help="like 8g or 512m")
    p.add_argument("--runtime", metavar="DURATION", help="ISO-8601, like PT2H or PT90M")
    p.add_argument("--num-cpus", type=int, metavar="N")
    p.add_argument("--reason", required=True, help="why (kept with each change)")


def datasets_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("workflow_id", type=int)
    p.add_argument(
        "--hash", action="store_true", help="each dataset's hash, as its hash_mode says (content reads every file)"
    )


def ro_crate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("workflow_id", type=int)
    p.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="write it here (a directory: its ro-crate-metadata.json); file paths are relative to its "
        "directory (default: standard output, paths relative to the workflow's directory)",
    )
    p.add_argument("--license", help="the data's license, a URL or a sentence (default: the spec's metadata.license)")
    p.add_argument("--no-hash", action="store_true", help="leave out each file's SHA-256 (no file is read)")


def logs_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("job_id", type=int)
    p.add_argument("--attempt", type=int, help="attempt number (default: the latest)")
    p.add_argument("--run", type=int, help="run number (default: the latest)")
    p.add_argument("--stderr", action="store_true")
    p.add_argument("--recovery", action="store_true", help="the recovery script's output instead")
    p.add_argument("--tail", type=count, metavar="N", help="only the last N lines")


def dashboard_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (default 0: any free one)")
    p.add_argument("--no-browser", action="store_true", help="only print the URL")


def events_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("workflow_id", type=int)
    p.add_argument("--after", type=int, default=0, help="only events after this sequence number")
    p.add_argument("-f", "--follow", action="store_true", help="keep following new events")


def spawn_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("jobs", nargs="?", metavar="JOBS", help="a JSON list of jobs to add (a file, or - for stdin)")
    p.add_argument("--converge", action="store_true", help="add nothing: the lineage is done (--state is its last)")
    p.add_argument("--job-id", type=int, help="the running job adding them (default: $TORC_JOB_ID)")
    p.add_argument("--lineage", help="default: $TORC_ORCHESTRATOR_LINEAGE_ID")
    p.add_argument("--state", metavar="JSON", help="kept as the lineage's state for this iteration")


def lineage_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("lineage", nargs="?", help="default: $TORC_ORCHESTRATOR_LINEAGE_ID")
    p.add_argument("-w", "--workflow-id", type=int, help="default: $TORC_WORKFLOW_ID")


def hpc_profile_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("profile", nargs="?", help="a profile's name, or `slurm` for this cluster (default: detected)")


def hpc_match_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cpus", type=int, default=1, help="CPUs a job needs (default 1)")
    p.add_argument("--memory", help="memory a job needs: 64g, 512m")
    p.add_argument("--walltime", help="runtime a job needs: HH:MM:SS, 4h, 30m")
    p.add_argument("--gpus", type=int, default=0)
    p.add_argument("--profile", help="default: the one this machine is on")


def hpc_generate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", help="the profile's name (default: this host's first name)")
    p.add_argument("--display-name")
    p.add_argument("-o", "--output", help="write the TOML here (default: standard output)")
    p.add_argument("--skip-stdby", action="store_true", help="leave out partitions named *-stdby")


def slurm_generate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--account", help="the Slurm account (default: the profile's default_account)")
    p.add_argument("--profile", help="an HPC profile, or `slurm` for this cluster (default: detected)")
    p.add_argument("-o", "--output", help="write the spec here (.json: as JSON; default: YAML on standard output)")
    p.add_argument("--no-actions", action="store_true", help="no schedule_nodes actions")
    p.add_argument("--force", action="store_true", help="replace the spec's slurm_schedulers")
    p.add_argument("--spec-format", choices=["yaml", "json", "json5", "kdl"], help="default: by the extension")


def schedule_nodes_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("workflow_id", type=int, metavar="WORKFLOW_ID")
    p.add_argument("-n", "--num-allocations", type=int, default=1, help="allocations per scheduler (default 1)")
    p.add_argument("-s", "--scheduler", help="only this scheduler (default: each of the workflow's)")
