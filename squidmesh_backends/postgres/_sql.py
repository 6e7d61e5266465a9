"""Every statement ``PostgresRunStore`` sends, with the schema filled in once.

Reads rebuild a run in one statement: the run row plus its steps (each with its
attempts) and its jobs as JSON arrays in the shape :mod:`squidmesh_core.codec`
decodes. The ``json_build_object`` calls are generated from the field maps of
:mod:`squidmesh_backends.postgres._rows`, the one place that shape is named.

Writes are single statements with positional parameters that also work as
data-modifying CTEs, so the planner (:mod:`squidmesh_backends.postgres._plan`)
can send a whole commit as one statement; ``{values}`` stands for one or more
row groups of an INSERT.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from squidmesh_backends.postgres._rows import (
    ATTEMPT_FIELDS,
    JOB_FIELDS,
    STEP_ATTEMPTS,
    STEP_FIELDS,
)


def _json_object(fields: Iterable[tuple[str, str]]) -> str:
    """``json_build_object('field', column, ...)`` for the codec's ``fields``."""
    return "json_build_object(" + ", ".join(f"'{name}', {column}" for name, column in fields) + ")"


ATTEMPT_JSON = _json_object(ATTEMPT_FIELDS)
"""An attempt row (``a``) as the codec's attempt object."""
STEP_JSON = _json_object(
    (
        *STEP_FIELDS,
        (
            STEP_ATTEMPTS,
            f"""COALESCE((
        SELECT json_agg({ATTEMPT_JSON} ORDER BY a.number)
        FROM {{s}}.squidmesh_attempts a WHERE a.run_id = s.run_id AND a.step = s.step
    ), '[]'::json)""",
        ),
    )
)
"""A step row (``s``) with its attempts as the codec's step object (``{s}``: the schema)."""
JOB_JSON = _json_object(JOB_FIELDS)
"""A job row (``j``) as the codec's job object."""


class Statements:
    """Every statement the store sends, with the schema name filled in once."""

    def __init__(self, s: str, clock: str) -> None:
        self.s = s
        now = "now()" if clock == "database" else "%(now)s"
        run_select = f"""
            SELECT r.id, r.workflow, r.trigger, r.status, r.version, r.payload, r.context,
                   r.created_at, r.updated_at, r.last_error, r.replayed_from, r.idempotency_key,
                   r.audit, r.signals, r.compensation,
                   COALESCE((SELECT json_agg({STEP_JSON} ORDER BY s.position)
                             FROM {s}.squidmesh_step_runs s WHERE s.run_id = r.id), '[]'::json),
                   COALESCE((SELECT json_agg({JOB_JSON} ORDER BY j.seq)
                             FROM {s}.squidmesh_jobs j WHERE j.run_id = r.id), '[]'::json)
            FROM {s}.squidmesh_runs r"""
        run_select = run_select.replace("{s}", s)
        self.run_select = run_select
        """Every column of a run as the codec reads it (add the ``WHERE`` and order)."""
        self.load = f"{run_select} WHERE r.id = %s"
        self.by_key = f"{run_select} WHERE r.workflow = %s AND r.idempotency_key = %s"
        self.latest_key = (
            f"SELECT idempotency_key FROM {s}.squidmesh_runs WHERE workflow = %(workflow)s"
            ' AND idempotency_key IS NOT NULL AND (idempotency_key COLLATE "C") >= %(prefix)s'
            ' AND (idempotency_key COLLATE "C") < %(prefix)s || chr(1114111)'
            ' ORDER BY (idempotency_key COLLATE "C") DESC LIMIT 1'
        )
        self.leases = (
            f"SELECT id, lease_owner, lease_expires_at FROM {s}.squidmesh_jobs WHERE run_id = %s"
        )
        self.key_owner = (
            f"SELECT id FROM {s}.squidmesh_runs WHERE workflow = %s AND idempotency_key = %s"
        )
        # The writes of a commit. Each is one statement with positional
        # parameters that also works as a data-modifying CTE (see ``_plan.Plan``);
        # ``{values}`` stands for one or more row groups.
        self.run_values = "(" + ", ".join(["%s"] * 16) + ")"
        self.insert_run = (
            f"INSERT INTO {s}.squidmesh_runs (id, workflow, trigger, status, version, payload,"
            " context, created_at, updated_at, last_error, replayed_from, idempotency_key,"
            " audit, signals, compensation, last_commit) VALUES {values}"
        )
        self.last_commit = f"SELECT version, last_commit FROM {s}.squidmesh_runs WHERE id = %s"
        self.fence = (
            f"SELECT 1 FROM {s}.squidmesh_jobs WHERE id = %s AND lease_token = %s FOR UPDATE"
        )
        # Where a lease ends (the store's ``lease_end`` gives its parameter).
        lease_end = "now() + %s::interval" if clock == "database" else "%s::timestamptz"
        renew = f"UPDATE {s}.squidmesh_jobs SET lease_expires_at = {lease_end}"
        held = " WHERE id = %s AND lease_token = %s RETURNING 1"
        self.fence_renewing = renew + held  # also the heartbeat
        self.fence_renewing_start = renew + ", state = %s, started_token = %s" + held
        self.fenced_delete = (
            f"DELETE FROM {s}.squidmesh_jobs WHERE id = %s AND lease_token = %s RETURNING 1"
        )
        self.step_values = "(" + ", ".join(["%s"] * 12) + ")"
        self.insert_step = (
            f"INSERT INTO {s}.squidmesh_step_runs (run_id, step, position, status, scheduled_at,"
            " updated_at, input, output, error, parked, replay_guard, recovery) VALUES {values}"
        )
        self.update_step = (
            f"UPDATE {s}.squidmesh_step_runs SET status = %s, scheduled_at = %s,"
            " updated_at = %s, input = %s, output = %s, error = %s, parked = %s,"
            " replay_guard = %s, recovery = %s WHERE run_id = %s AND step = %s"
        )
        self.upsert_step = (
            self.insert_step + " ON CONFLICT (run_id, step) DO UPDATE SET status = excluded.status,"
            " scheduled_at = excluded.scheduled_at, updated_at = excluded.updated_at,"
            " input = excluded.input, output = excluded.output, error = excluded.error,"
            " parked = excluded.parked, replay_guard = excluded.replay_guard,"
            " recovery = excluded.recovery"
        )
        self.attempt_values = "(" + ", ".join(["%s"] * 11) + ")"
        self.insert_attempt = (
            f"INSERT INTO {s}.squidmesh_attempts (run_id, step, number, status, job_id,"
            " lease_token, started_at, finished_at, error, timeout_at, worker) VALUES {values}"
        )
        self.update_attempt = (
            f"UPDATE {s}.squidmesh_attempts SET status = %s, job_id = %s, lease_token = %s,"
            " started_at = %s, finished_at = %s, error = %s, timeout_at = %s, worker = %s"
            " WHERE run_id = %s AND step = %s AND number = %s"
        )
        self.upsert_attempt = (
            self.insert_attempt + " ON CONFLICT (run_id, step, number) DO UPDATE SET"
            " status = excluded.status, job_id = excluded.job_id,"
            " lease_token = excluded.lease_token, started_at = excluded.started_at,"
            " finished_at = excluded.finished_at, error = excluded.error,"
            " timeout_at = excluded.timeout_at, worker = excluded.worker"
        )
        # The lease columns are NULL but for a job inserted with a lease (its
        # ``ScheduleJob`` carries one: the committing worker runs it next, at once).
        self.job_values = "(" + ", ".join(["%s"] * 9) + f", {lease_end})"
        self.insert_new_job = (
            f"INSERT INTO {s}.squidmesh_jobs (id, run_id, step, attempt, due_at, state,"
            " started_token, lease_token, lease_owner, lease_expires_at) VALUES {values}"
        )
        self.insert_job = (
            self.insert_new_job + " ON CONFLICT (id) DO UPDATE SET due_at = excluded.due_at,"
            " state = excluded.state, started_token = excluded.started_token,"
            " lease_token = excluded.lease_token, lease_owner = excluded.lease_owner,"
            " lease_expires_at = excluded.lease_expires_at"
        )
        self.vacuum_jobs = f"VACUUM (SKIP_LOCKED) {s}.squidmesh_jobs"
        self.reschedule = f"UPDATE {s}.squidmesh_jobs SET due_at = %s WHERE id = %s"
        self.delete_job = f"DELETE FROM {s}.squidmesh_jobs WHERE id = %s"
        self.start_job = (
            f"UPDATE {s}.squidmesh_jobs SET state = %s, started_token = %s WHERE id = %s"
        )
        # Reclaims first (expired leases, by expiry), then unleased jobs by due
        # time: the RunStore claim order. Each part walks its own partial index.
        self.claim = f"""
            WITH reclaim AS (
                SELECT id, lease_expires_at AS at FROM {s}.squidmesh_jobs
                 WHERE lease_expires_at <= {now} AND due_at <= {now}
                 ORDER BY lease_expires_at, id LIMIT %(limit)s
                   FOR UPDATE SKIP LOCKED
            ), fresh AS (
                SELECT id, due_at AS at FROM {s}.squidmesh_jobs
                 WHERE lease_expires_at IS NULL AND due_at <= {now}
                 ORDER BY due_at, id LIMIT (%(limit)s - (SELECT count(*) FROM reclaim))
                   FOR UPDATE SKIP LOCKED
            ), due AS (
                SELECT id, row_number() OVER (ORDER BY first, at, id) AS n
                FROM (SELECT id, 0 AS first, at FROM reclaim
                      UNION ALL SELECT id, 1, at FROM fresh) picked
            )
            UPDATE {s}.squidmesh_jobs j
               SET lease_token = (%(tokens)s::text[])[due.n], lease_owner = %(owner)s,
                   lease_expires_at = {now} + %(lease)s::interval
              FROM due WHERE j.id = due.id
            RETURNING j.id, j.run_id, j.lease_token, j.lease_expires_at, due.n"""
        self.claim_one = f"""
            UPDATE {s}.squidmesh_jobs
               SET lease_token = %(token)s, lease_owner = %(owner)s,
                   lease_expires_at = {now} + %(lease)s::interval
             WHERE id = (SELECT id FROM {s}.squidmesh_jobs
                         WHERE id = %(id)s AND due_at <= {now}
                           AND (lease_expires_at IS NULL OR lease_expires_at <= {now})
                         FOR UPDATE SKIP LOCKED)
            RETURNING run_id, lease_expires_at"""
        self.release = (
            f"WITH freed AS (UPDATE {s}.squidmesh_jobs SET lease_token = NULL,"
            " lease_owner = NULL, lease_expires_at = NULL WHERE id = %s AND lease_token = %s"
            " RETURNING 1) SELECT pg_notify(%s, '') FROM freed"
        )
        earliest = (
            f"LEAST((SELECT min(due_at) FROM {s}.squidmesh_jobs WHERE lease_expires_at IS NULL),"
            f" (SELECT min(lease_expires_at) FROM {s}.squidmesh_jobs"
            " WHERE lease_expires_at IS NOT NULL))"
        )
        self.next_due = (
            f"SELECT {earliest} - now()" if clock == "database" else f"SELECT {earliest}"
        )

    def update_run(self, columns: Iterable[str]) -> str:
        """The guarded update of a run row setting ``columns`` (then id and version)."""
        sets = ", ".join(f"{c} = %s" for c in columns)
        return (
            f"UPDATE {self.s}.squidmesh_runs SET {sets} WHERE id = %s AND version = %s RETURNING 1"
        )


def notify_channel(schema: str) -> str:
    """The NOTIFY channel of ``schema`` (at most 63 bytes, as PostgreSQL requires)."""
    if schema == "public":
        return "squidmesh_jobs"
    name = f"squidmesh_jobs_{schema}"
    if len(name) <= 63:
        return name
    return f"squidmesh_jobs_{hashlib.sha256(schema.encode()).hexdigest()[:32]}"
