-- Version 8: operator commands (status, doctor, prune, bulk actions).
--
-- 1. An attempt records the worker that ran it (`RuntimeSettings.owner`), NULL
--    for attempts started before this version. Adding a nullable column without
--    a default rewrites nothing.
-- 2. Workers report themselves in `squidmesh_workers`: a row written when one
--    starts, on every heartbeat while it runs and when it stops. Rows not seen
--    for 7 days are deleted by the next report.

ALTER TABLE squidmesh_attempts ADD COLUMN worker text;

CREATE TABLE squidmesh_workers (
    name       text        PRIMARY KEY,
    first_seen timestamptz NOT NULL,
    last_seen  timestamptz NOT NULL,
    stopped_at timestamptz,
    details    jsonb       NOT NULL DEFAULT '{}'
);
-- status: workers seen lately, newest first; reports: forget the old ones.
CREATE INDEX squidmesh_workers_seen ON squidmesh_workers (last_seen);
