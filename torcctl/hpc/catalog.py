"""Where HPC profiles come from: the ones shipped (`torcctl/hpc/data/*.toml`), the custom ones in
Torc's config file (`$TORC_CONFIG`, else `~/.config/torc/config.toml`: `[client.hpc.custom_profiles.NAME]`
and `[client.hpc.profile_overrides.NAME]`), and `slurm`: the cluster this machine is on, read
from `sinfo`."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import tomllib
from importlib import resources
from typing import Any

import msgspec

from torcctl.hpc.profiles import Partition, Profile, detected, profile_of

SLURM = "slurm"  # the profile read from this cluster's sinfo
_SINFO_FORMAT = "%R|%c|%m|%l|%G|%h"  # partition, CPUs, memory (MB), time limit, GRES, oversubscribe
_GPUS = re.compile(r"gpu(?::([^:(,]+))?:(\d+)")
_TIME_LIMIT = re.compile(r"(\d+-)?\d+(:\d+){0,2}")
INFINITE_SECONDS = 365 * 86400  # a partition without a time limit


class ProfileError(Exception):
    """A profile cannot be read or found (a sentence naming the file or the profile)."""


def builtin() -> dict[str, Profile]:
    out = {}
    for entry in sorted(resources.files("torcctl.hpc").joinpath("data").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            name = entry.name.removesuffix(".toml")
            out[name] = profile_of(name, tomllib.loads(entry.read_text()))
    return out


def config_path() -> str:
    return os.environ.get("TORC_CONFIG") or os.path.join(
        os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config"), "torc", "config.toml"
    )


def profiles() -> dict[str, Profile]:
    """Every profile by name: the shipped ones, with the config file's overrides, then its own."""
    out = builtin()
    path = config_path()
    try:
        with open(path, "rb") as f:
            config = tomllib.load(f)
    except FileNotFoundError:
        return out
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ProfileError(f"cannot read {path}: {e}") from None
    hpc = config.get("client", {}).get("hpc", {})
    for name, override in (hpc.get("profile_overrides") or {}).items():
        if name in out and isinstance(override, dict) and isinstance(override.get("default_account"), str):
            out[name] = msgspec.structs.replace(out[name], default_account=override["default_account"])
    for name, table in (hpc.get("custom_profiles") or {}).items():
        try:
            out[name] = profile_of(name, table if isinstance(table, dict) else {})
        except msgspec.ValidationError as e:
            raise ProfileError(f"{path}: custom profile {name!r}: {e}") from None
    return out


def from_sinfo(text: str, name: str = SLURM, skip_standby: bool = False) -> Profile:
    """A profile from `sinfo --noheader --format=%R|%c|%m|%l|%G|%h` (a partition's lines: the
    smallest node it has)."""
    parts: dict[str, Partition] = {}
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 6 or not fields[0]:
            continue
        part, cpus, memory, limit, gres, share = fields
        if skip_standby and part.endswith("-stdby"):
            continue
        gpus = _GPUS.search(gres)
        try:
            p = msgspec.convert(
                dict(
                    name=part,
                    cpus_per_node=int(cpus.rstrip("+")),
                    memory_mb=int(memory.rstrip("+")),
                    max_walltime_secs=time_limit(limit),
                    gpus_per_node=int(gpus[2]) if gpus else 0,
                    gpu_type=gpus[1] if gpus and gpus[1] else None,
                    shared=share.upper().startswith(("YES", "FORCE")),
                ),
                Partition,
            )
        except (ValueError, msgspec.ValidationError):
            continue  # a line this cannot read (a partition without nodes) says nothing usable
        if part in parts:
            old = parts[part]
            p = msgspec.structs.replace(
                p,
                cpus_per_node=min(p.cpus_per_node, old.cpus_per_node),
                memory_mb=min(p.memory_mb, old.memory_mb),
                gpus_per_node=min(p.gpus_per_node, old.gpus_per_node),
            )
        parts[part] = p
    if not parts:
        raise ProfileError("sinfo lists no partition this can read")
    return Profile(name, list(parts.values()), display_name=f"{name} (from sinfo)")


def time_limit(text: str) -> int:
    """Seconds of a Slurm time limit (`infinite`, `MM`, `MM:SS`, `HH:MM:SS`, `D-HH[:MM[:SS]]`)."""
    text = text.strip().lower()
    if text in ("infinite", "unlimited", "n/a"):
        return INFINITE_SECONDS
    if not _TIME_LIMIT.fullmatch(text):
        raise ValueError(f"time limit {text!r}")
    days, _, rest = text.rpartition("-")
    parts = [int(x) for x in rest.split(":")]
    if len(parts) > 3:
        raise ValueError(f"time limit {text!r}")
    if days or len(parts) == 3:  # D-HH[:MM[:SS]] or HH:MM:SS
        h, m, s = [*parts, 0, 0][:3]
    else:  # MM[:SS]
        h, (m, s) = 0, [*parts, 0][:2]
    total = int(days or 0) * 86400 + h * 3600 + m * 60 + s
    if total <= 0:
        raise ValueError(f"time limit {text!r}")
    return total


def sinfo_profile(skip_standby: bool = False) -> Profile:
    try:
        done = subprocess.run(
            ["sinfo", "--noheader", f"--format={_SINFO_FORMAT}"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ProfileError(f"cannot run sinfo: {e}") from None
    if done.returncode != 0:
        raise ProfileError(f"sinfo failed: {done.stderr.strip() or done.returncode}")
    return from_sinfo(done.stdout, skip_standby=skip_standby)


def find(name: str | None) -> Profile:
    """The profile named (`slurm`: this cluster, from sinfo), or the one this machine is on."""
    known = profiles()
    if name == SLURM:
        return sinfo_profile()
    if name is not None:
        if name not in known:
            raise ProfileError(f"no HPC profile named {name!r} (known: {', '.join(sorted(known))}, {SLURM})")
        return known[name]
    found = detect(known)
    if found is None:
        raise ProfileError(
            f"this machine matches no HPC profile ({', '.join(sorted(known))}) "
            "and sinfo does not answer: give --profile"
        )
    return found


def detect(known: dict[str, Profile] | None = None) -> Profile | None:
    """The profile this machine is on: a known one whose variable or host name matches, else the
    cluster sinfo describes, else None."""
    for profile in (known if known is not None else profiles()).values():
        if detected(profile, os.environ, socket.getfqdn()) or detected(profile, os.environ, socket.gethostname()):
            return profile
    try:
        return sinfo_profile()
    except ProfileError:
        return None


def as_toml(profile: Profile, name: str, display_name: str | None = None) -> str:
    """The profile as a custom profile of Torc's config file."""
    head = f"client.hpc.custom_profiles.{name}"
    lines = [f"[{head}]", f"display_name = {_string(display_name or name.capitalize())}"]
    host = socket.getfqdn()
    domain = host.partition(".")[2]
    pattern = f".*\\.{re.escape(domain)}" if domain else re.escape(host)
    lines.append(f"detect_hostname = {_string(pattern)}")
    for p in profile.partitions:
        lines += ["", f"[[{head}.partitions]]", f"name = {_string(p.name)}"]
        as_dict: dict[str, Any] = msgspec.to_builtins(p)
        for key, value in as_dict.items():
            if key != "name":
                lines.append(f"{key} = {_string(value) if isinstance(value, str) else str(value).lower()}")
    return "\n".join(lines) + "\n"


def _string(text: str) -> str:
    # A TOML basic string takes JSON's escapes.
    return msgspec.json.encode(text).decode()
