-- Version 3: an index that serves "the greatest idempotency key of a workflow
-- with a given prefix" (the newest cron tick started) as a short backward range
-- scan. Keys are compared byte-wise ("C" collation), so the prefix range and
-- the order do not depend on the database's locale.

CREATE INDEX squidmesh_runs_keys_bytewise
    ON squidmesh_runs (workflow, (idempotency_key COLLATE "C"))
    WHERE idempotency_key IS NOT NULL;
