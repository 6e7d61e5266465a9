"""The PostgreSQL commit planner and row codec, without a database.

The planner is pure: a decision, its fence and the stored state it replaces go
in, statements come out. These tests pin which statements, how they are sent
(one statement or a pipeline) and with which parameters; the JSON the reads
rebuild is checked against the core codec's field names.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from squidmesh_backends.postgres._plan import Plan, plan_commit, summary_line
from squidmesh_backends.postgres._rows import RUN_FIELDS, decode_run_row, job_row
from squidmesh_backends.postgres._sql import ATTEMPT_JSON, JOB_JSON, STEP_JSON, Statements
from squidmesh_core.codec import encode_failure, encode_run
from squidmesh_core.commands import Decision, Lease, RescheduleJob
from squidmesh_core.decide import decide
from squidmesh_core.events import CancelRequested, JobDelivered, StepSucceeded
from squidmesh_core.handoff import decide_outcome
from squidmesh_core.ids import JobId, LeaseToken
from squidmesh_core.ports import Fence
from squidmesh_core.state import JobStatus, RunState, StepFailure
from squidmesh_core.testing.contracts.run_store import FLOW, LEASE, T0, new_run

SQL = Statements('"s"', "caller")
TOKEN = LeaseToken("t1")
NEXT = Lease(token=LeaseToken("next"), until=T0 + LEASE, owner="w")


def lease_end(until: datetime) -> object:
    return ("lease-end", until)


def plan(decision: Decision, *, fence: Fence | None = None, base: RunState | None = None) -> Plan:
    return plan_commit(
        SQL, decision, fence=fence, base=base, commit_id="c1", lease_end=lease_end, channel="ch"
    )


def kinds(p: Plan) -> list[str]:
    return [line.split(" ")[0] for line in p.summary()]


def sqls(p: Plan) -> list[str]:
    return [w.sql for w in p.writes]


def created() -> Decision:
    return new_run(1)


def first_job(state: RunState) -> JobId:
    return JobId(f"{state.id}/first/1")


def delivered() -> Decision:
    state = created().state
    return decide(
        FLOW, state, JobDelivered(job_id=first_job(state), lease_token=TOKEN), now=T0
    ).unwrap()


def succeeded() -> Decision:
    state = delivered().state
    event = StepSucceeded(job_id=first_job(state), lease_token=TOKEN, output={"a": 1})
    return decide(FLOW, state, event, now=T0).unwrap()


def handed_over() -> Decision:
    state = delivered().state
    event = StepSucceeded(job_id=first_job(state), lease_token=TOKEN, output={"a": 1})
    return decide_outcome(FLOW, state, event, now=T0, next_lease=NEXT).unwrap()


# ---------------------------------------------------------------- the JSON shape


def _keys(fragment: str) -> list[str]:
    return re.findall(r"'(\w+)', ", fragment)


def test_the_read_json_uses_the_codec_field_names() -> None:
    encoded = encode_run(delivered().state)
    steps = encoded["steps"]
    jobs = encoded["jobs"]
    assert isinstance(steps, list) and isinstance(steps[0], dict)
    assert isinstance(jobs, list) and isinstance(jobs[0], dict)
    attempts = steps[0]["attempts"]
    assert isinstance(attempts, list) and isinstance(attempts[0], dict)
    assert _keys(ATTEMPT_JSON) == list(attempts[0])
    step_keys = _keys(STEP_JSON)
    assert step_keys[: len(steps[0])] == list(steps[0])  # the attempts' keys follow
    assert _keys(JOB_JSON) == list(jobs[0])
    assert list(RUN_FIELDS) == list(encoded)


def test_a_row_shaped_like_the_read_decodes_to_the_run() -> None:
    state = replace(
        succeeded().state,
        last_error=StepFailure(kind="k", message="m", retryable=False),
        idempotency_key=None,
    )
    encoded = encode_run(state)
    row = (
        state.id, state.workflow, state.trigger, state.status.value, state.version,
        dict(state.payload), dict(state.context), state.created_at, state.updated_at,
        encode_failure(state.last_error), state.replayed_from, state.idempotency_key,
        encoded["audit"] or None, encoded["signals"] or None, encoded["compensation"],
        encoded["steps"], encoded["jobs"],
    )  # fmt: skip
    assert decode_run_row(row) == state


# ---------------------------------------------------------------- the run row


def test_a_new_run_is_one_statement_of_upserts_and_a_wake_up() -> None:
    p = plan(created())
    assert p.single and p.sent == 1
    assert kinds(p) == ["INSERT", "INSERT", "INSERT", "SELECT"]
    assert sqls(p)[0] == SQL.insert_run
    assert sqls(p)[1] == SQL.upsert_step
    assert sqls(p)[2] == SQL.insert_job  # no base: the job row may exist
    assert p.notify == "ch"
    assert p.writes[0].rows[0][-1] == "c1"  # the commit id, for recovery


def test_an_update_sets_only_the_json_columns_that_changed_from_the_base() -> None:
    decision = delivered()
    with_base = plan(decision, base=created().state)
    assert "payload" not in sqls(with_base)[0] and "context" not in sqls(with_base)[0]
    without = plan(decision)
    assert "payload = %s" in sqls(without)[0] and "context = %s" in sqls(without)[0]
    row = with_base.writes[0].rows[0]
    assert row[0] == "c1" and row[-2:] == (decision.state.id, 1)  # guarded by version 1
    assert with_base.writes[0].guard == "version_conflict"


def test_a_base_of_another_version_is_ignored() -> None:
    decision = succeeded()
    stale_base = created().state  # version 1, the decision replaces version 2
    assert plan(decision, base=stale_base).summary() == plan(decision).summary()


# ---------------------------------------------------------------- fences


def test_a_fence_whose_job_ends_is_one_fenced_delete() -> None:
    decision = succeeded()
    job = first_job(decision.state)
    p = plan(decision, fence=Fence(job_id=job, lease_token=TOKEN), base=delivered().state)
    assert p.single and p.sent == 1
    assert kinds(p) == ["UPDATE", "DELETE", "UPDATE", "INSERT", "UPDATE", "INSERT", "SELECT"]
    assert sqls(p)[1] == SQL.fenced_delete
    assert p.writes[1].rows == [(job, TOKEN)]
    assert SQL.delete_job not in sqls(p)
    assert sqls(p)[5] == SQL.insert_new_job  # the base shows the new job is new
    assert not any("ON CONFLICT" in s for s in sqls(p))
    assert p.ended_jobs == 1


def test_a_renewing_fence_that_starts_its_job_is_one_write() -> None:
    decision = delivered()
    job = first_job(decision.state)
    fence = Fence(job_id=job, lease_token=TOKEN, renew_until=T0 + LEASE)
    p = plan(decision, fence=fence, base=created().state)
    assert p.single
    assert sqls(p)[1] == SQL.fence_renewing_start
    assert p.writes[1].rows == [(lease_end(T0 + LEASE), JobStatus.STARTED.value, TOKEN, job, TOKEN)]
    assert SQL.start_job not in sqls(p)
    assert p.notify is None  # nothing new for other dispatchers


def test_a_renewing_fence_that_starts_nothing_only_renews() -> None:
    state = delivered().state
    job = first_job(state)
    cancel = decide(FLOW, state, CancelRequested(), now=T0).unwrap()
    fence = Fence(job_id=job, lease_token=TOKEN, renew_until=T0 + LEASE)
    p = plan(cancel, fence=fence, base=state)
    assert sqls(p)[1] == SQL.fence_renewing
    assert p.writes[1].rows == [(lease_end(T0 + LEASE), job, TOKEN)]


def test_a_plain_fence_and_a_start_of_its_job_go_as_a_pipeline() -> None:
    decision = delivered()
    job = first_job(decision.state)
    p = plan(decision, fence=Fence(job_id=job, lease_token=TOKEN), base=created().state)
    assert not p.single
    assert sqls(p)[1] == SQL.fence
    assert sqls(p)[-1] == SQL.start_job
    assert p.writes[-1].rows == [(JobStatus.STARTED.value, TOKEN, job)]
    assert p.sent == p.statements == len(p.writes)  # no NOTIFY
    assert len(p.pipeline('"s"')) == len(p.writes)


# ---------------------------------------------------------------- jobs


def test_a_handed_over_job_is_inserted_leased_and_wakes_nobody() -> None:
    decision = handed_over()
    job = first_job(decision.state)
    p = plan(decision, fence=Fence(job_id=job, lease_token=TOKEN), base=delivered().state)
    assert p.single and p.notify is None
    [insert] = [w for w in p.writes if w.sql == SQL.insert_new_job]
    [pause] = [j for j in decision.state.jobs if j.step == "pause"]
    assert pause.status is JobStatus.STARTED
    assert insert.rows == [(*job_row(pause), "next", "w", lease_end(T0 + LEASE))]
    assert SQL.start_job not in sqls(p)


def test_an_unleased_insert_has_no_lease_and_without_a_base_is_an_upsert() -> None:
    decision = succeeded()
    p = plan(decision, fence=Fence(job_id=first_job(decision.state), lease_token=TOKEN))
    [insert] = [w for w in p.writes if w.values == SQL.job_values]
    assert insert.sql == SQL.insert_job
    assert insert.rows[0][-3:] == (None, None, None)
    assert sqls(p)[2:4] == [SQL.upsert_step, SQL.upsert_attempt]
    assert p.notify == "ch"


def test_a_job_started_and_moved_is_two_writes_so_a_pipeline() -> None:
    started = delivered()
    job = first_job(started.state)
    later = T0 + timedelta(hours=1)
    moved = replace(
        started,
        state=replace(
            started.state, jobs=tuple(replace(j, due_at=later) for j in started.state.jobs)
        ),
        commands=(*started.commands, RescheduleJob(job_id=job, due_at=later)),
    )
    p = plan(moved, base=created().state)
    assert not p.single
    assert [w.sql for w in p.writes if w.sql in (SQL.reschedule, SQL.start_job)] == [
        SQL.reschedule,
        SQL.start_job,
    ]
    assert p.notify == "ch"  # a moved job wakes the others
    assert p.sent == p.statements == len(p.writes) + 1


def test_a_cancel_deletes_the_scheduled_job_and_wakes_nobody() -> None:
    state = created().state
    cancel = decide(FLOW, state, CancelRequested(), now=T0).unwrap()
    p = plan(cancel, base=state)
    assert [w.sql for w in p.writes if w.sql == SQL.delete_job] == [SQL.delete_job]
    assert p.notify is None
    assert p.ended_jobs == 1


# ---------------------------------------------------------------- the sent forms


@pytest.mark.parametrize("clock", ["caller", "database"])
def test_the_single_statement_has_one_parameter_per_placeholder(clock: str) -> None:
    sql = Statements('"s"', clock)
    decision = handed_over()
    p = plan_commit(
        sql,
        decision,
        fence=Fence(job_id=first_job(decision.state), lease_token=TOKEN),
        base=delivered().state,
        commit_id="c1",
        lease_end=lease_end,
        channel="ch",
    )
    text, params = p.statement('"s"')
    assert text.startswith("WITH w0 AS (UPDATE")
    assert text.count("%s") == len(params)
    assert text.count("squidmesh_require") == 2  # the version and the lease


def test_a_summary_line_per_write_with_its_row_count() -> None:
    p = plan(created())
    lines = p.summary()
    assert len(lines) == len(p.writes) + 1
    assert lines[-1] == "SELECT pg_notify(%s, '')"
    assert lines[0].startswith('INSERT INTO "s".squidmesh_runs')
    assert lines[0].endswith("... x1")
    assert summary_line("SELECT\n  1", [(), ()]) == "SELECT 1 x2"
