"""The commit planner: which statements apply a decision, and how to send them. No I/O.

:func:`plan_commit` turns a decision (with its fence and the stored state it
replaces, when the store knows it) into a :class:`Plan`: the writes in lock
order (run, fence, step and attempt rows, jobs) and the ``NOTIFY``. The job-row
writes are :func:`squidmesh_core.jobwrites.job_writes`' (the interpreter every
store shares); this module only chooses their statements:

* the run row is inserted for a new run, else updated under its version guard,
  setting the JSON columns only when they differ from ``base``;
* a fence whose job the decision ends is one fenced ``DELETE`` (no row lock); a
  renewing fence whose job the decision starts is one ``UPDATE``
  (``fence_renewing_start``); any other fence locks the job row;
* with ``base`` only the step and attempt rows that differ are written, by plain
  ``INSERT``/``UPDATE``; without it every row is upserted;
* all inserted jobs go in one ``INSERT`` in the order they were scheduled (their
  ``seq``), without ``ON CONFLICT`` when ``base`` shows none of them existed;
* ``NOTIFY`` exactly when ``wake_others``.

A plan is sent as one statement (every write a data-modifying CTE) unless two
writes touch the same job row: a statement sees none of its own writes, so such
a plan goes as a pipeline of statements in one transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import psycopg

from squidmesh_backends.postgres._rows import (
    as_json,
    as_json_list,
    changed_rows,
    encoded_json,
    job_row,
    run_row,
)
from squidmesh_backends.postgres._sql import Statements
from squidmesh_backends.postgres.edge import translate
from squidmesh_core.codec import encode_audit, encode_compensation, encode_signals
from squidmesh_core.commands import Decision
from squidmesh_core.errors import CommitError, StaleLease, VersionConflict
from squidmesh_core.ids import JobId
from squidmesh_core.jobwrites import JobStart, job_writes
from squidmesh_core.ports import Fence
from squidmesh_core.state import JobStatus, RunState


@dataclass(slots=True)
class Write:
    """One write of a commit: a statement and its rows of parameters."""

    sql: str
    rows: list[Sequence[object]]
    values: str | None
    """The ``{values}`` group of an INSERT (its rows go in one statement)."""
    guard: str | None
    """Refusal code raised (SQLSTATE SQM01) when the write returns no row."""


@dataclass(slots=True)
class Plan:
    """The writes that apply one decision, and how to send them."""

    writes: list[Write] = field(default_factory=list)
    notify: str | None = None
    """The channel to NOTIFY when the commit made work for other dispatchers."""
    _jobs: set[str] = field(default_factory=set)
    single: bool = True
    """False when two writes touch the same job row: then they go as a pipeline."""
    ended_jobs: int = 0
    """Job rows the plan deletes (dead rows for the jobs vacuum)."""

    def add(
        self,
        sql: str,
        rows: list[Sequence[object]],
        *,
        values: str | None = None,
        guard: str | None = None,
        jobs: tuple[str, ...] = (),
    ) -> None:
        """Append a write; ``jobs`` are the job rows it touches."""
        for job in jobs:
            if job in self._jobs:
                self.single = False
            self._jobs.add(job)
        self.writes.append(Write(sql, rows, values, guard))

    @property
    def statements(self) -> int:
        """Statements the pipelined form sends (an INSERT's rows count once)."""
        return sum(1 if w.values else len(w.rows) for w in self.writes) + bool(self.notify)

    @property
    def sent(self) -> int:
        """Statements this plan sends as planned: one, or the pipeline's."""
        return 1 if self.single else self.statements

    def statement(self, schema: str) -> tuple[str, list[object]]:
        """Everything as one statement: writes as CTEs, guards and NOTIFY in the SELECT."""
        ctes: list[str] = []
        params: list[object] = []
        checks: list[str] = []
        for write in self.writes:
            if write.values is not None:
                groups = ", ".join([write.values] * len(write.rows))
                bodies = [(write.sql.replace("{values}", groups), write.rows)]
            else:
                bodies = [(write.sql, [row]) for row in write.rows]
            for sql, rows in bodies:
                name = f"w{len(ctes)}"
                ctes.append(f"{name} AS ({sql})")
                for row in rows:
                    params.extend(row)
                if write.guard is not None:
                    checks.append(
                        f"{schema}.squidmesh_require(EXISTS (SELECT 1 FROM {name}),"
                        f" '{write.guard}')"
                    )
        if self.notify is not None:
            checks.append("pg_notify(%s, '')")
            params.append(self.notify)
        select = "SELECT " + (", ".join(checks) if checks else "1")
        return ("WITH " + ", ".join(ctes) + " " + select if ctes else select), params

    def pipeline(self, schema: str) -> list[tuple[str, list[Sequence[object]]]]:
        """Each write as a statement of its own (for ``executemany``), guards included."""
        out: list[tuple[str, list[Sequence[object]]]] = []
        for write in self.writes:
            sql = write.sql.replace("{values}", write.values or "")
            if write.guard is not None:
                sql = (
                    f"WITH w AS ({sql}) SELECT {schema}.squidmesh_require("
                    f"EXISTS (SELECT 1 FROM w), '{write.guard}')"
                )
            out.append((sql, write.rows))
        if self.notify is not None:
            out.append(("SELECT pg_notify(%s, '')", [(self.notify,)]))
        return out

    def summary(self) -> list[str]:
        """A line per write: how the benchmark lists a commit's statements."""
        lines = [summary_line(w.sql.replace("{values}", "(...)"), w.rows) for w in self.writes]
        if self.notify is not None:
            lines.append("SELECT pg_notify(%s, '')")
        return lines


def summary_line(sql: str, rows: list[Sequence[object]]) -> str:
    """``sql`` on one line, cut at 110 characters, with its row count."""
    words = " ".join(sql.split())
    head = words[:110] + ("..." if len(words) > 110 else "")
    return f"{head} x{len(rows)}"


def _run_changes(state: RunState, base: RunState | None, commit_id: str) -> dict[str, object]:
    """The run row's columns to set: the JSON ones only when they differ from ``base``."""
    changes: dict[str, object] = {
        "last_commit": commit_id,
        "status": state.status.value,
        "version": state.version,
        "updated_at": state.updated_at,
    }
    if base is None or base.context != state.context:
        changes["context"] = as_json(state.context)
    if base is None or base.payload != state.payload:
        changes["payload"] = as_json(state.payload)
    if base is None or base.last_error != state.last_error:
        changes["last_error"] = as_json(state.last_error)
    if base is None or base.audit != state.audit:
        changes["audit"] = as_json_list(encode_audit(state.audit))
    if base is None or base.signals != state.signals:
        changes["signals"] = as_json_list(encode_signals(state.signals))
    if base is None or base.compensation != state.compensation:
        changes["compensation"] = encoded_json(encode_compensation(state.compensation))
    return changes


def plan_commit(
    sql: Statements,
    decision: Decision,
    *,
    fence: Fence | None,
    base: RunState | None,
    commit_id: str,
    lease_end: Callable[[datetime], object],
    channel: str,
) -> Plan:
    """The writes that apply ``decision``, in lock order: run, fence, rows, jobs.

    Args:
        sql: the statements of the store's schema and clock.
        decision: what to commit.
        fence: the lease the commit is valid under, if any.
        base: the stored state the decision replaces, when known (ignored
            unless it is version ``decision.expected_version`` of the same run).
        commit_id: recorded in the run row, to recognise this commit later.
        lease_end: a lease's end as the statements take it (see
            ``Statements.lease_end``).
        channel: the NOTIFY channel.
    """
    state = decision.state
    if base is not None and (base.id != state.id or base.version != decision.expected_version):
        base = None
    plan = Plan()
    if decision.expected_version == 0:
        plan.add(sql.insert_run, [(*run_row(state), commit_id)], values=sql.run_values)
    else:
        changes = _run_changes(state, base, commit_id)
        plan.add(
            sql.update_run(tuple(changes)),
            [(*changes.values(), state.id, decision.expected_version)],
            guard="version_conflict",
        )
    writes = job_writes(decision)
    deletes = list(writes.deletes)
    starts = list(writes.starts)
    if fence is not None:
        _add_fence(plan, sql, fence, deletes=deletes, starts=starts, lease_end=lease_end)
    _add_step_rows(plan, sql, state, base)
    for move in writes.moves:
        plan.add(sql.reschedule, [(move.due_at, move.job_id)], jobs=(move.job_id,))
    for job_id in deletes:
        plan.add(sql.delete_job, [(job_id,)], jobs=(job_id,))
    if writes.inserts:
        inserts: list[Sequence[object]] = [
            (*job_row(i.job), None, None, None)
            if i.lease is None
            else (*job_row(i.job), i.lease.token, i.lease.owner, lease_end(i.lease.until))
            for i in writes.inserts
        ]
        known = None if base is None else {job.id for job in base.jobs}
        fresh = known is not None and not any(i.job.id in known for i in writes.inserts)
        # One insert for all of them, so ``seq`` follows the order they were scheduled.
        plan.add(
            sql.insert_new_job if fresh else sql.insert_job,
            inserts,
            values=sql.job_values,
            jobs=tuple(i.job.id for i in writes.inserts),
        )
    for start in starts:
        plan.add(
            sql.start_job,
            [(JobStatus.STARTED.value, start.lease_token, start.job_id)],
            jobs=(start.job_id,),
        )
    if writes.wake_others:
        plan.notify = channel
    plan.ended_jobs = len(writes.deletes)
    return plan


def _add_fence(
    plan: Plan,
    sql: Statements,
    fence: Fence,
    *,
    deletes: list[JobId],
    starts: list[JobStart],
    lease_end: Callable[[datetime], object],
) -> None:
    """The fence's write; takes over the delete or start of its job when it can."""
    if fence.renew_until is None and fence.job_id in deletes:
        # The fence and the end of its job in one write, no row lock.
        deletes.remove(fence.job_id)
        plan.add(
            sql.fenced_delete,
            [(fence.job_id, fence.lease_token)],
            guard="stale_lease",
            jobs=(fence.job_id,),
        )
    elif fence.renew_until is None:
        # A row locked and written by one statement would be skipped by the
        # lock; listing the job sends such a plan as a pipeline instead.
        plan.add(
            sql.fence,
            [(fence.job_id, fence.lease_token)],
            guard="stale_lease",
            jobs=(fence.job_id,),
        )
    else:
        until = lease_end(fence.renew_until)
        start = next((s for s in starts if s.job_id == fence.job_id), None)
        if start is None:
            plan.add(
                sql.fence_renewing,
                [(until, fence.job_id, fence.lease_token)],
                guard="stale_lease",
                jobs=(fence.job_id,),
            )
        else:  # the delivery starts the attempt of the job it renews: one write
            starts.remove(start)
            plan.add(
                sql.fence_renewing_start,
                [
                    (
                        until,
                        JobStatus.STARTED.value,
                        start.lease_token,
                        fence.job_id,
                        fence.lease_token,
                    )
                ],
                guard="stale_lease",
                jobs=(fence.job_id,),
            )


def _add_step_rows(plan: Plan, sql: Statements, state: RunState, base: RunState | None) -> None:
    rows = changed_rows(state, base)
    if base is None:  # which rows exist is unknown: insert or update each
        if rows.new_steps or rows.changed_steps:
            plan.add(sql.upsert_step, rows.new_steps + rows.changed_steps, values=sql.step_values)
        if rows.new_attempts or rows.changed_attempts:
            plan.add(
                sql.upsert_attempt,
                rows.new_attempts + rows.changed_attempts,
                values=sql.attempt_values,
            )
        return
    # Plain inserts and updates: no speculative insertion, no row locks.
    for r in rows.changed_steps:
        plan.add(sql.update_step, [(*r[3:], *r[:2])])
    if rows.new_steps:
        plan.add(sql.insert_step, rows.new_steps, values=sql.step_values)
    for r in rows.changed_attempts:
        plan.add(sql.update_attempt, [(*r[3:], *r[:3])])
    if rows.new_attempts:
        plan.add(sql.insert_attempt, rows.new_attempts, values=sql.attempt_values)


GUARD_STATE = "SQM01"
"""The SQLSTATE a plan's guards raise (their message names the refusal)."""


def guard_error(exc: psycopg.Error, decision: Decision, fence: Fence | None) -> CommitError:
    """The refusal a guard of ``decision``'s plan raised (anything else is a fault)."""
    code = exc.diag.message_primary
    if code == "stale_lease" and fence is not None:
        return StaleLease(job_id=fence.job_id)
    if code == "version_conflict":
        return VersionConflict(run_id=decision.state.id, expected=decision.expected_version)
    raise translate(exc, "committing a decision") from exc
