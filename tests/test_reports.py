"""`torcctl reports ...`, `torcctl results list` and the recovery hook's argument, through the CLI
against a real daemon."""

from __future__ import annotations

import json

import pytest

SPEC = """\
name: usage
resource_requirements:
  - {name: roomy, memory: 500m, runtime: PT1M}
  - {name: tight, memory: 100m}
jobs:
  - {name: light, command: "true", resource_requirements: roomy}
  - {name: big, command: "(head -c 250m /dev/zero; sleep 1) | tail >/dev/null", resource_requirements: tight}
  - {name: broken, command: "exit 5"}
"""


def test_check_resource_utilization_flags_over_and_under_use_as_a_table_and_as_json(daemon):
    wf = daemon.submit(SPEC)
    daemon.wait(wf)
    code, out, err = daemon.ctl("reports", "check-resource-utilization", str(wf))
    assert code == 0, err
    lines = {line.split()[1]: line for line in out.splitlines()[1:] if line.split()}
    assert "runtime: used under a fifth of its limit" in lines["light"]
    assert "memory: over its limit" in lines["big"]
    code, out, err = daemon.ctl("reports", "check-resource-utilization", str(wf), "--json")
    rows = {r["job_name"]: r for r in json.loads(out)}
    assert set(rows) == {"light", "big", "broken"}
    assert rows["big"]["memory_limit"] == 100 << 20 and rows["big"]["notes"] == ["memory: over its limit"]
    code, out, err = daemon.ctl("-f", "json", "reports", "check-resource-utilization", str(wf), "--exclude-failed")
    assert [r["job_name"] for r in json.loads(out)] == ["light"]


def test_reports_summary_groups_failures_by_cause(daemon):
    wf = daemon.submit(SPEC)
    daemon.wait(wf)
    code, out, err = daemon.ctl("reports", "summary", str(wf), "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["failures_by_cause"] == {"oom": 1, "exit 5": 1} and summary["attempts"] == 3
    code, out, err = daemon.ctl("reports", "summary", str(wf))
    assert code == 0 and f"workflow {wf} usage: done" in out and "1 exit 5, 1 oom" in out


def test_reports_results_and_results_list_print_what_results_does(daemon):
    wf = daemon.submit(SPEC)
    daemon.wait(wf)
    outputs = [
        daemon.ctl(*words, str(wf), "--failed", "--json")
        for words in (("results",), ("results", "list"), ("reports", "results"))
    ]
    assert all(code == 0 for code, _, _ in outputs), outputs
    assert outputs[0][1] == outputs[1][1] == outputs[2][1]
    assert sorted(a["job_name"] for a in json.loads(outputs[0][1])) == ["big", "broken"]
    with pytest.raises(SystemExit) as refused:
        daemon.ctl("results", "show", str(wf))
    assert refused.value.code == 2


def test_a_recovery_hook_gets_the_workflow_id_as_its_first_argument(daemon, tmp_path):
    (tmp_path / "fix.sh").write_text('echo "$1" > hook_arg\n')
    wf = daemon.submit("name: hook\njobs:\n  - {name: bug, command: '[ -e hook_arg ] || exit 3'}\n")
    daemon.wait(wf)
    code, out, err = daemon.ctl("recover", str(wf), "--recovery-hook", "sh fix.sh")
    assert code == 0, err
    assert (tmp_path / "hook_arg").read_text() == f"{wf}\n"
    assert daemon.wait(wf).counts == {"completed": 1}
