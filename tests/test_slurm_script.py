"""The batch script of an allocation: nothing a spec or a client sends can add a line to it,
and writing it never follows a symlink nor trusts a directory someone else can change."""

from __future__ import annotations

import os
import stat

import pytest

from torcd.slurm import SlurmError, render_script, write_script
from torcd.spec.parse import SlurmSchedulerSpec


def script(scheduler: SlurmSchedulerSpec, account: str | None = None, log_dir: str = "/out/slurm") -> str:
    return render_script(
        workflow_id=1,
        allocation_id=2,
        scheduler=scheduler,
        cpus=4,
        account=account,
        url="http://h:1",
        token_file="/t",
        log_dir=log_dir,
    )


@pytest.mark.parametrize(
    "fields,account,words",
    [
        ({"account": "acct\n#SBATCH --wrap=id"}, None, "account 'acct\\n#SBATCH --wrap=id' contains a control"),
        ({}, "acct\nid", "account 'acct\\nid' contains a control character"),  # --account over RPC
        ({}, "two words", "account 'two words' is not one word"),
        ({"partition": "debug\rid"}, None, "partition"),
        ({"mem": "4G\nid"}, None, "mem"),
        ({"walltime": "01:00:00\nid"}, None, "walltime"),
        ({"extra": ["--qos=high", "--x\nid"]}, None, "extra '--x\\nid'"),
    ],
)
def test_render_refuses_what_would_start_a_new_line(fields, account, words):
    with pytest.raises(SlurmError, match="refusing to write a batch script") as info:
        script(SlurmSchedulerSpec(name="s", **fields), account)
    assert words in str(info.value)


def test_render_refuses_a_log_dir_with_a_newline():
    with pytest.raises(SlurmError, match="log_dir"):
        script(SlurmSchedulerSpec(name="s"), log_dir="/out\nid/slurm")


def test_render_keeps_every_value_on_its_line():
    text = script(
        SlurmSchedulerSpec(name="s", account="a1", partition="gpu", mem="240g", extra=["--qos=high"]),
        account="from_cli",
    )
    sbatch = [line for line in text.splitlines() if line.startswith("#SBATCH")]
    assert "#SBATCH --account=from_cli" in sbatch and "#SBATCH --mem=240g" in sbatch
    assert [line for line in text.splitlines() if line and not line.startswith("#")] == [text.splitlines()[-1]]


def test_a_symlink_planted_at_the_script_path_is_replaced_not_followed(tmp_path):
    private = tmp_path / "private.txt"
    private.write_text("secret\n")
    private.chmod(0o600)
    log_dir = tmp_path / "output" / "slurm"
    log_dir.mkdir(parents=True, mode=0o700)
    path = log_dir / "alloc_wf1_a2.sh"
    path.symlink_to(private)
    write_script(str(path), "#!/bin/bash\necho hi\n")
    assert private.read_text() == "secret\n" and stat.S_IMODE(private.stat().st_mode) == 0o600
    assert not path.is_symlink() and path.read_text() == "#!/bin/bash\necho hi\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    assert sorted(p.name for p in log_dir.iterdir()) == ["alloc_wf1_a2.sh"]  # no temporary left


def test_an_existing_script_is_replaced_and_a_new_dir_is_private(tmp_path):
    path = tmp_path / "output" / "slurm" / "a.sh"
    write_script(str(path), "one\n")
    write_script(str(path), "two\n")
    assert path.read_text() == "two\n"
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_a_log_dir_others_can_write_is_refused(tmp_path):
    log_dir = tmp_path / "slurm"
    log_dir.mkdir()
    log_dir.chmod(0o777)
    with pytest.raises(SlurmError, match=f"the Slurm log directory {log_dir} can be written by other users"):
        write_script(str(log_dir / "a.sh"), "x\n")
    assert list(log_dir.iterdir()) == []


def test_a_log_dir_that_is_a_symlink_is_refused(tmp_path):
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    (tmp_path / "slurm").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(SlurmError, match="is a symbolic link"):
        write_script(str(tmp_path / "slurm" / "a.sh"), "x\n")
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_a_log_dir_another_user_owns_is_refused(tmp_path):
    if os.getuid() == 0:  # root can give one away; anyone else finds one owned by root
        log_dir = tmp_path / "slurm"
        log_dir.mkdir(mode=0o755)
        os.chown(log_dir, 65534, 65534)
    else:
        log_dir = tmp_path.anchor
    with pytest.raises(SlurmError, match=r"belongs to .*not to you"):
        write_script(os.path.join(log_dir, "a.sh"), "x\n")


def _sbatch(text: str) -> list[str]:
    return [line[len("#SBATCH ") :] for line in text.splitlines() if line.startswith("#SBATCH")]


def test_whole_nodes_by_default_a_shared_allocation_when_sized():
    whole = script(SlurmSchedulerSpec(name="s", nodes=1))
    assert "--exclusive" in _sbatch(whole) and not any(o.startswith("--cpus-per-task") for o in _sbatch(whole))
    assert "--cpus " not in whole.splitlines()[-2]  # the worker uses what its node has
    shared = script(SlurmSchedulerSpec(name="s", cpus=4))
    assert "--cpus-per-task=4" in _sbatch(shared) and "--exclusive" not in _sbatch(shared)
    assert "--exclusive" in _sbatch(script(SlurmSchedulerSpec(name="s", cpus=4, shared=False)))


def test_a_multi_node_allocation_starts_a_worker_on_each_node():
    text = script(SlurmSchedulerSpec(name="s", nodes=3))
    last = [line for line in text.splitlines() if line][-1]
    assert last.startswith("exec srun --nodes=3 --ntasks=3 --ntasks-per-node=1")
    assert '--cpus-per-task="$SLURM_CPUS_ON_NODE"' in last and "torcctl worker" in last
    assert [line for line in script(SlurmSchedulerSpec(name="s")).splitlines() if line][-1].startswith("exec /")


def test_torcs_scheduler_fields_and_slurm_defaults_reach_sbatch():
    from torcd.spec.parse import parse_spec

    spec = parse_spec(
        """name: s
slurm_defaults: {account: proj, mail-type: "END,FAIL", mail_user: me@example.org, requeue: true, qos: low}
slurm_schedulers:
  - {name: gpu, gres: "gpu:a100:2", qos: high, tmp: 100G, ntasks_per_node: 2, extra: "--constraint=ib --signal=B:USR1@60"}
jobs:
  - {name: a, command: "true"}
""",  # noqa: E501 a spec line as a user writes it
        "s.yaml",
    )
    (sched,) = spec.schedulers
    assert (sched.account, sched.qos, sched.gres_gpus()) == ("proj", "high", 2)  # the scheduler's own qos wins
    options = _sbatch(script(sched))
    for expected in (
        "--account=proj",
        "--gres=gpu:a100:2",
        "--qos=high",
        "--tmp=100G",
        "--ntasks-per-node=2",
        "--mail-type=END,FAIL",
        "--mail-user=me@example.org",
        "--requeue",
        "--constraint=ib",
        "--signal=B:USR1@60",
    ):
        assert expected in options, (expected, options)
    assert options.index("--requeue") < options.index("--constraint=ib")  # the scheduler's extra comes last


@pytest.mark.parametrize(
    "yaml, line, field, message",
    [
        ("slurm_defaults: {time: '01:00:00'}", 2, "$.slurm_defaults.time", "may not set --time"),
        ("slurm_defaults: {job-name: x}", 2, "$.slurm_defaults.job-name", "may not set --job-name"),
        ("slurm_defaults: {'bad key': 1}", 2, "$.slurm_defaults.bad key", "not an sbatch long option"),
        ("slurm_defaults: {account: 'two words'}", 2, "$.slurm_defaults.account", "one word"),
        ('slurm_defaults: {mail-user: "a\\nb"}', 2, "$.slurm_defaults.mail-user", "one line of printable text"),
        ("slurm_schedulers:\n  - {name: s, gres: 'gpu 2'}", 3, "$.slurm_schedulers[0].gres", "one word"),
        ("slurm_schedulers:\n  - {name: s, tmp: lots}", 3, "$.slurm_schedulers[0].tmp", "must be a number"),
        ("slurm_schedulers:\n  - {name: s, extra: 'oops'}", 3, "$.slurm_schedulers[0].extra", "one sbatch option"),
        (
            'slurm_schedulers:\n  - {name: s, extra: "--a \'unclosed"}',
            3,
            "$.slurm_schedulers[0].extra",
            "not a list of options",
        ),
        (
            "slurm_schedulers:\n  - {name: s, node_memory: 12q}",
            3,
            "$.slurm_schedulers[0].node_memory",
            "must be a number",
        ),
        ("slurm_schedulers:\n  - {name: s, node_gpus: -1}", 3, "$.slurm_schedulers[0].node_gpus", ">= 0"),
    ],
)
def test_bad_slurm_fields_name_their_line_and_field(yaml, line, field, message):
    from torcd.errors import SpecError
    from torcd.spec.parse import parse_spec

    with pytest.raises(SpecError) as e:
        parse_spec(f"name: s\n{yaml}\njobs:\n  - {{name: a, command: 'true'}}\n", "s.yaml")
    assert (e.value.line, e.value.field) == (line, field) and message in e.value.message, e.value
