"""Commands for HPC profiles (Torc's `hpc ...`), `slurm generate` and `slurm sacct`: what
partitions a cluster has, which suits a job, schedulers made for a spec from them, and what the
accounting says a workflow's allocations used."""

from __future__ import annotations

import copy
import os
import sys

import msgspec

from torcctl.api.client import Client
from torcctl.commands import UsageError, read_spec
from torcctl.hpc import catalog
from torcctl.hpc.generate import GenerateError, generate
from torcctl.hpc.profiles import Need, Profile, format_walltime, matching
from torcctl.render import print_json, table
from torcctl.sacct import SacctUnavailable, sacct_report
from torcd.core.resources import parse_memory


def hpc_list(_: Client, args) -> int:
    known = _profiles()
    here = catalog.detect(known)
    rows = [
        (p.name, p.display_name, len(p.partitions), "yes" if here and here.name == p.name else "")
        for p in known.values()
    ]
    if here is not None and here.name == catalog.SLURM:
        rows.append((here.name, here.display_name, len(here.partitions), "yes"))
    if args.json:
        print_json([{"name": n, "display_name": d, "partitions": c, "detected": bool(x)} for n, d, c, x in rows])
    else:
        table(["name", "display name", "partitions", "detected"], rows)
    return 0


def hpc_detect(_: Client, args) -> int:
    found = catalog.detect(_profiles())
    if args.json:
        print_json({"profile": found.name if found else None})
    else:
        print(found.name if found else "no HPC profile matches this machine")
    return 0 if found else 1


def hpc_show(_: Client, args) -> int:
    profile = _find(args.profile)
    if args.json:
        print_json(profile)
        return 0
    print(f"{profile.name}: {profile.display_name or profile.name}")
    for label, value in (
        ("description", profile.description),
        ("detected by", profile.detect_env_var or profile.detect_hostname),
        ("default account", profile.default_account),
    ):
        if value:
            print(f"  {label}: {value}")
    _partitions(profile)
    return 0


def hpc_partitions(_: Client, args) -> int:
    profile = _find(args.profile)
    if args.json:
        print_json(profile.partitions)
    else:
        _partitions(profile)
    return 0


def hpc_match(_: Client, args) -> int:
    profile = _find(args.profile)
    try:
        memory = None if args.memory is None else parse_memory(args.memory)
    except ValueError as e:
        raise UsageError(f"--memory: {e}") from None
    runtime = None if args.walltime is None else _walltime_seconds(args.walltime)
    found = matching(profile, Need(cpus=args.cpus, memory_bytes=memory, runtime_seconds=runtime, gpus=args.gpus))
    if args.json:
        print_json(found)
        return 0 if found else 1
    if not found:
        print(f"no partition of {profile.name} fits", file=sys.stderr)
        return 1
    _partitions(msgspec.structs.replace(profile, partitions=found), title="best first:")
    return 0


def hpc_generate(_: Client, args) -> int:
    try:
        profile = catalog.sinfo_profile(skip_standby=args.skip_stdby)
    except catalog.ProfileError as e:
        raise UsageError(str(e)) from None
    name = args.name or (os.uname().nodename.split(".")[0] or "cluster")
    text = catalog.as_toml(profile, name, args.display_name)
    _write(text, args.output)
    return 0


def slurm_generate(_: Client, args) -> int:
    from torcd.errors import SpecError
    from torcd.spec.parse import load_plain, parse_tree

    text = read_spec(args.spec)
    try:
        tree, loc = load_plain(text, args.spec, args.spec_format)
        written = copy.deepcopy(tree)
        parsed = parse_tree(tree, loc)
    except SpecError as e:
        raise UsageError(e.message) from None
    profile = _find(args.profile)
    account = args.account or profile.default_account
    if not account:
        raise UsageError(f"which Slurm account? give --account (profile {profile.name} has no default_account)")
    try:
        made = generate(written, parsed, profile, account, actions=not args.no_actions, force=args.force)
    except GenerateError as e:
        raise UsageError(str(e)) from None
    from torcctl.spec_builder import WorkflowSpec

    spec = WorkflowSpec.from_dict(made.tree)
    try:
        spec.validate()
    except SpecError as e:  # a profile whose values make no valid scheduler
        raise UsageError(f"the generated spec is invalid: {e.message}") from None
    as_json = (args.output or "").lower().endswith((".json", ".json5"))
    _write(spec.to_json() if as_json else spec.to_yaml(), args.output)
    for scheduler, partition in made.chosen.items():
        print(f"{scheduler}: partition {partition}", file=sys.stderr)
    if made.later:
        print(
            f"{', '.join(made.later)}: no job of theirs can start at once, so no allocation is asked for at the start; "
            "`torcctl watch WF --auto-schedule` asks when they become ready",
            file=sys.stderr,
        )
    return 0


def slurm_sacct(client: Client, args) -> int:
    """Torc's `slurm sacct WF`: a row per allocation and per step, and the walltime in all."""
    ids = [a.slurm_job_id for a in client.allocations(args.workflow_id) if a.slurm_job_id]
    try:
        report = sacct_report(args.workflow_id, ids)
    except SacctUnavailable as e:
        raise UsageError(str(e)) from None
    if args.json:
        print_json(report)
        return 0

    def mib(n: int | None) -> str:
        return "" if n is None else f"{n / 2**20:.1f}"

    def cells(r: dict) -> list[str]:
        elapsed, cpu = str(r["elapsed_seconds"] or 0), f"{r['cpu_seconds'] or 0:g}"
        first = [r["slurm_job_id"], r["step"] or "", r["name"], r["state"], r["exit_code"], elapsed]
        return [*first, mib(r["max_rss_bytes"]), cpu, r["nodes"] or ""]

    headers = ["allocation", "step", "name", "state", "exit", "elapsed s", "max RSS MiB", "CPU s", "nodes"]
    table(headers, (cells(r) for r in report["rows"]))
    print(report["summary"])
    return 0


def _profiles() -> dict[str, Profile]:
    try:
        return catalog.profiles()
    except catalog.ProfileError as e:
        raise UsageError(str(e)) from None


def _find(name: str | None) -> Profile:
    try:
        return catalog.find(name)
    except catalog.ProfileError as e:
        raise UsageError(str(e)) from None


def _partitions(profile: Profile, title: str | None = None) -> None:
    table(
        ["partition", "CPUs/node", "memory/node", "max walltime", "GPUs", "notes"],
        (
            (
                p.name,
                p.cpus_per_node,
                f"{p.memory_mb / 1024:.0f} GiB",
                format_walltime(p.max_walltime_secs),
                f"{p.gpus_per_node} ({p.gpu_type})" if p.gpu_type else (p.gpus_per_node or "-"),
                "; ".join(
                    n
                    for n in (
                        "shared" if p.shared else "",
                        f"min {p.min_nodes} nodes" if p.min_nodes > 1 else "",
                        "by name only" if p.requires_explicit_request else "",
                        p.description,
                    )
                    if n
                ),
            )
            for p in profile.partitions
        ),
        title=title,
    )


def _walltime_seconds(text: str) -> float:
    """HH:MM:SS, or a number with h, m or s (Torc's `hpc match --walltime`)."""
    t = text.strip().lower()
    try:
        if ":" in t:
            return float(catalog.time_limit(t))
        for unit, factor in (("h", 3600), ("m", 60), ("s", 1)):
            if t.endswith(unit):
                value = float(t[:-1]) * factor
                if value > 0:
                    return value
    except ValueError:
        pass
    raise UsageError(f"--walltime {text!r}: give HH:MM:SS, or a number with h, m or s (4h, 30m, 3600s)")


def _write(text: str, path: str | None) -> None:
    if path is None:
        sys.stdout.write(text)
        return
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e.strerror}") from None
