"""The store's side of workflow actions: which are due (`core.actions`), which run, how they ended.

An action is armed, then due (its moment came: marked in the transaction that brought it, or
by the action runner's look at the counts), running, and done or failed. A workflow with a
due or running action is not done: `run` and `watch` wait for its completion actions too.
"""

from __future__ import annotations

import msgspec

from torcd import events as E
from torcd.core.actions import Action, Progress, is_due
from torcd.core.status import FINAL
from torcd.core.status import JobStatus as S
from torcd.store.db import Database, Tx

_FINAL_SQL = ",".join(str(int(s)) for s in FINAL)
_NOT_YET_READY = ",".join(str(int(s)) for s in (S.UNINITIALIZED, S.BLOCKED, S.CANCELED, S.DISABLED))
_PROGRESS = f"count(*), total(j.status NOT IN ({_NOT_YET_READY})), total(j.status IN ({_FINAL_SQL}))"
_decode = msgspec.json.Decoder(Action).decode
INTERRUPTED = "interrupted: the daemon stopped while it ran"
RUN_AGAIN = "interrupted: the daemon stopped while it ran; it runs again from its first command"


class ActionToRun(msgspec.Struct, frozen=True):
    id: int
    workflow_id: int
    run_id: int
    action: Action
    cwd: str
    output_dir: str


def insert_actions(tx: Tx, wf: int, actions: list[tuple[Action, list[str]]], ids: dict[str, int]) -> None:
    for action, jobs in actions:
        aid = tx.run(
            "INSERT INTO actions (workflow_id, idx, spec) VALUES (?, ?, ?)",
            (wf, action.index, msgspec.json.encode(action).decode()),
        )
        tx.many("INSERT INTO action_jobs (action_id, job_id) VALUES (?, ?)", ((aid, ids[name]) for name in jobs))
    _hold(tx, wf)


_START = 'spec LIKE \'%"trigger":"on_workflow_start"%\''


def _hold(tx: Tx, wf: int) -> None:
    """Jobs wait while an on_workflow_start action has not run (setup comes first)."""
    tx.run(
        f"""UPDATE workflows SET held = EXISTS (SELECT 1 FROM actions WHERE workflow_id = ? AND {_START}
               AND state IN ('armed', 'due', 'running')) WHERE id = ?""",
        (wf, wf),
    )


def mark_due(tx: Tx, wf: int, idle: bool) -> bool:
    """Armed actions whose moment came become due; whether any is due or running now.

    `idle`: nothing more runs in the workflow (settle knows), the only moment the counts of all
    its jobs are worth taking for on_workflow_complete. A canceled workflow fires nothing."""
    state = tx.one("SELECT state FROM workflows WHERE id = ?", (wf,))
    if state is None or state[0] == "canceled":
        return False
    for aid, spec in tx.rows("SELECT id, spec FROM actions WHERE workflow_id = ? AND state = 'armed'", (wf,)):
        action = _decode(spec)
        if action.trigger == "on_workflow_start":
            due = True
        elif action.trigger == "on_workflow_complete":
            if not idle:
                continue
            row = tx.one_row(f"SELECT {_PROGRESS} FROM jobs j WHERE j.workflow_id = ?", (wf,))
            due = is_due(action.trigger, Progress(row[0], int(row[1]), int(row[2])))
        else:
            row = tx.one_row(
                f"SELECT {_PROGRESS} FROM action_jobs a JOIN jobs j ON j.id = a.job_id WHERE a.action_id = ?", (aid,)
            )
            due = is_due(action.trigger, Progress(row[0], int(row[1]), int(row[2])))
        if due:
            tx.run("UPDATE actions SET state = 'due' WHERE id = ?", (aid,))
    return busy(tx, wf)


def disarm_due(tx: Tx, wf: int) -> None:
    """A canceled workflow's due actions do not run; they are armed again for a reset."""
    tx.run("UPDATE actions SET state = 'armed' WHERE workflow_id = ? AND state = 'due'", (wf,))


def busy(tx: Tx, wf: int) -> bool:
    return bool(
        tx.one_row(
            "SELECT EXISTS (SELECT 1 FROM actions WHERE workflow_id = ? AND state IN ('due', 'running'))", (wf,)
        )[0]
    )


def rearm(tx: Tx, wf: int) -> None:
    """A reset starts a new run: persistent actions fire again in it."""
    tx.run(
        "UPDATE actions SET state = 'armed', message = NULL WHERE workflow_id = ? AND (state = 'due' OR "
        "(spec LIKE '%\"persistent\":true%' AND state IN ('done', 'failed')))",
        (wf,),
    )
    _hold(tx, wf)


class ActionStore:
    """Workflow actions over the one database."""

    def __init__(self, db: Database, with_actions: set[int]):
        self.db = db
        # Workflows that have actions: the only ones settle looks at. One set, shared with the
        # workflows part (which adds and drops workflows) and settle: changed in place only.
        self.with_actions = with_actions

    async def load_action_workflows(self) -> None:
        self.with_actions.clear()
        self.with_actions.update(r[0] for r in await self.db.rows("SELECT DISTINCT workflow_id FROM actions"))

    async def schedules_by_actions(self, wf: int) -> bool:
        rows = await self.db.rows(
            "SELECT EXISTS (SELECT 1 FROM actions WHERE workflow_id = ? AND "
            'spec LIKE \'%"action_type":"schedule_nodes"%\')',
            (wf,),
        )
        return bool(rows[0][0])

    async def due_actions(self, workflows: list[int]) -> list[ActionToRun]:
        """Mark what came due in these workflows (jobs triggers and on_workflow_start); return
        every due action. Each stays due until its turn comes (`start_action`)."""

        def _body(tx: Tx):
            for wf in workflows:
                mark_due(tx, wf, idle=False)
            return [
                ActionToRun(r["id"], r["workflow_id"], r["run_id"], _decode(r["spec"]), r["cwd"], r["output_dir"])
                for r in tx.rows("""SELECT a.id, a.workflow_id, a.spec, w.run_id, w.cwd, w.output_dir
                                        FROM actions a JOIN workflows w ON w.id = a.workflow_id
                                        WHERE a.state = 'due' AND w.state != 'canceled' ORDER BY a.id""")
            ]

        return await self.db.write(_body)

    async def start_action(self, run: ActionToRun) -> bool:
        """Its turn came (a workflow's actions run one at a time): running, unless it is no longer
        due (its workflow was canceled, reset or deleted meanwhile)."""

        def _body(tx: Tx):
            row = tx.one(
                """SELECT w.run_id FROM actions a JOIN workflows w ON w.id = a.workflow_id
                            WHERE a.id = ? AND a.state = 'due' AND w.state != 'canceled'""",
                (run.id,),
            )
            if row is None or row[0] != run.run_id:
                return False
            tx.run("UPDATE actions SET state = 'running', run_id = ? WHERE id = ?", (run.run_id, run.id))
            tx.emit(
                E.ActionStarted,
                run.workflow_id,
                rule_index=run.action.index,
                run_id=run.run_id,
                action=run.action.action_type,
                message=run.action.trigger,
            )
            return True

        return await self.db.write(_body)

    async def finish_action(self, run: ActionToRun, ok: bool, message: str, return_code: int | None = None) -> None:
        def _body(tx: Tx):
            if tx.one("SELECT 1 FROM actions WHERE id = ? AND state = 'running'", (run.id,)) is not None:
                _finish(tx, run.id, run.workflow_id, run.run_id, run.action, ok, message, return_code)
            # else its workflow was deleted meanwhile

        await self.db.write(_body)

    async def interrupt_actions(self) -> None:
        """At start: actions a stopped daemon was running did not finish. A run_commands action
        runs again from its first command (its leftover processes were stopped; like recovery
        scripts, its commands must be idempotent); a schedule_nodes action, which may have
        submitted some of its allocations, is recorded interrupted."""

        def _body(tx: Tx):
            for aid, wf, spec, run_id in tx.rows(
                "SELECT id, workflow_id, spec, run_id FROM actions WHERE state = 'running'"
            ):
                action = _decode(spec)
                if action.action_type != "run_commands":
                    _finish(tx, aid, wf, run_id, action, False, INTERRUPTED)
                    continue
                tx.run("UPDATE actions SET state = 'due' WHERE id = ?", (aid,))
                tx.emit(
                    E.ActionFinished,
                    wf,
                    rule_index=action.index,
                    run_id=run_id,
                    action=action.action_type,
                    status="interrupted",
                    message=RUN_AGAIN,
                )

        await self.db.write(_body)


def _finish(
    tx: Tx, aid: int, wf: int, run_id: int, action: Action, ok: bool, message: str, return_code: int | None = None
) -> None:
    """A running action ended: its state, what it held back, and the event that says how."""
    status = "done" if ok else "failed"
    tx.run("UPDATE actions SET state = ?, message = ? WHERE id = ?", (status, message, aid))
    _hold(tx, wf)
    tx.emit(
        E.ActionFinished,
        wf,
        rule_index=action.index,
        run_id=run_id,
        action=action.action_type,
        status=status,
        return_code=return_code,
        message=message,
    )
