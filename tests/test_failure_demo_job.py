"""examples/scripts/failure_demo_job.sh: the tutorial's `--fail-rate 0.7` fails about 70% of
first attempts with a fixed seed, a percentage means the same, and a bad rate stops loudly."""

from __future__ import annotations

import os
import subprocess

import pytest
from conftest import REPO

SCRIPT = REPO / "examples" / "scripts" / "failure_demo_job.sh"


def outcomes(rate: str, jobs: int = 100, attempt: int = 1) -> list[int]:
    """Exit codes of `jobs` differently named jobs, seed 11."""
    codes = []
    for i in range(jobs):
        env = {**os.environ, "TORC_JOB_NAME": f"job{i}", "TORC_ATTEMPT_ID": str(attempt)}
        r = subprocess.run(
            ["bash", str(SCRIPT), "--fail-rate", rate, "--work-time", "0", "--seed", "11"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        codes.append(r.returncode)
    return codes


@pytest.mark.parametrize(
    "rate,low,high",
    [("0.7", 58, 82), ("70", 58, 82), ("0.25", 13, 37), ("0", 0, 0), ("1.0", 100, 100), ("100", 100, 100)],
)
def test_fail_rate_as_a_fraction_or_a_percentage(rate, low, high):
    codes = outcomes(rate)
    failed = sum(c != 0 for c in codes)
    assert low <= failed <= high, failed
    assert set(codes) <= {0, 10, 11, 12, 1}


def test_same_seed_same_outcomes_and_a_fraction_equals_its_percentage():
    assert outcomes("0.7", jobs=40) == outcomes("70", jobs=40) == outcomes("0.70", jobs=40)


def test_later_attempts_fail_less():
    assert sum(c != 0 for c in outcomes("0.7", attempt=3)) < sum(c != 0 for c in outcomes("0.7"))


@pytest.mark.parametrize("rate", ["abc", "1.5", "150", "-1", "0.7.1", "", "70%"])
def test_a_bad_rate_stops_with_a_message(rate):
    r = subprocess.run(
        ["bash", str(SCRIPT), "--fail-rate", rate, "--work-time", "0"], capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 2 and r.stdout == ""
    assert (
        f"--fail-rate must be a fraction from 0 to 1 (0.7) or a percentage from 0 to 100 (70), not '{rate}'" in r.stderr
    )
