-- SquidMesh schema, version 1. Applied by `squidmesh migrate` with search_path set to
-- the target schema, so every name below lands there. Forward-only: never edit an
-- applied migration; add the next numbered file instead.

-- Raises SQLSTATE SQM01 with the given code as the message when a guard fails, so
-- one pipelined transaction can stop at the first refused condition.
CREATE FUNCTION squidmesh_require(ok boolean, code text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF ok IS NOT TRUE THEN
        RAISE EXCEPTION USING ERRCODE = 'SQM01', MESSAGE = code;
    END IF;
END
$$;

CREATE TABLE squidmesh_runs (
    id              uuid        PRIMARY KEY,
    workflow        text        NOT NULL,
    trigger         text        NOT NULL,
    status          text        NOT NULL CHECK (status IN (
                        'pending', 'running', 'retrying', 'paused', 'failed',
                        'completed', 'cancelling', 'cancelled')),
    version         bigint      NOT NULL CHECK (version > 0),
    payload         jsonb       NOT NULL,
    context         jsonb       NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    last_error      jsonb,
    replayed_from   uuid,
    idempotency_key text,
    CONSTRAINT squidmesh_runs_idempotency UNIQUE (workflow, idempotency_key)
);
-- list_runs: newest first, optionally by workflow and/or status.
CREATE INDEX squidmesh_runs_recent ON squidmesh_runs (created_at DESC, id DESC);
CREATE INDEX squidmesh_runs_by_workflow ON squidmesh_runs (workflow, created_at DESC, id DESC);
CREATE INDEX squidmesh_runs_by_status ON squidmesh_runs (status, created_at DESC, id DESC);
-- pruning finished runs by age.
CREATE INDEX squidmesh_runs_finished ON squidmesh_runs (updated_at)
    WHERE status IN ('failed', 'completed', 'cancelled');

CREATE TABLE squidmesh_step_runs (
    run_id       uuid        NOT NULL REFERENCES squidmesh_runs (id) ON DELETE CASCADE,
    step         text        NOT NULL,
    position     integer     NOT NULL CHECK (position >= 0),
    status       text        NOT NULL CHECK (status IN (
                     'scheduled', 'running', 'retry_scheduled', 'completed', 'failed',
                     'cancelled')),
    scheduled_at timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    input        jsonb,
    output       jsonb,
    error        jsonb,
    PRIMARY KEY (run_id, step),
    CONSTRAINT squidmesh_step_runs_position UNIQUE (run_id, position)
);

CREATE TABLE squidmesh_attempts (
    run_id      uuid        NOT NULL,
    step        text        NOT NULL,
    number      integer     NOT NULL CHECK (number > 0),
    status      text        NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'lost')),
    job_id      text        NOT NULL,
    lease_token text        NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz,
    error       jsonb,
    PRIMARY KEY (run_id, step, number),
    FOREIGN KEY (run_id, step) REFERENCES squidmesh_step_runs (run_id, step) ON DELETE CASCADE,
    CHECK ((status = 'running') = (finished_at IS NULL))
);

-- The outbox and the timers: one row per live job (a scheduled or started attempt).
-- seq keeps the order in which a run's jobs were scheduled; state/started_token mirror the run's view of the job; lease_* belong to the
-- current claim and are rotated by every claim.
CREATE TABLE squidmesh_jobs (
    id               text        PRIMARY KEY,
    seq              bigint      GENERATED ALWAYS AS IDENTITY,
    run_id           uuid        NOT NULL,
    step             text        NOT NULL,
    attempt          integer     NOT NULL CHECK (attempt > 0),
    due_at           timestamptz NOT NULL,
    state            text        NOT NULL DEFAULT 'scheduled'
                                 CHECK (state IN ('scheduled', 'started')),
    started_token    text,
    lease_token      text,
    lease_owner      text,
    lease_expires_at timestamptz,
    FOREIGN KEY (run_id, step) REFERENCES squidmesh_step_runs (run_id, step) ON DELETE CASCADE,
    CONSTRAINT squidmesh_jobs_one_per_attempt UNIQUE (run_id, step, attempt),
    CHECK ((lease_token IS NULL) = (lease_expires_at IS NULL))
);
-- claim_due walks due jobs earliest first.
CREATE INDEX squidmesh_jobs_due ON squidmesh_jobs (due_at, id);
-- next_due_at: the earliest unleased due time and the earliest lease expiry.
CREATE INDEX squidmesh_jobs_unleased ON squidmesh_jobs (due_at) WHERE lease_expires_at IS NULL;
CREATE INDEX squidmesh_jobs_leases ON squidmesh_jobs (lease_expires_at)
    WHERE lease_expires_at IS NOT NULL;
