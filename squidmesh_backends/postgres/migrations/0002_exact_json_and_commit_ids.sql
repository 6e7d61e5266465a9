-- Version 2.
--
-- 1. JSON columns become `json` (the text as written) instead of `jsonb`: jsonb
--    turns numbers into `numeric`, so a float such as 1e23 came back as a
--    different integer. The store validates JSON before writing, and nothing
--    queries inside these columns, so the binary form bought nothing.
-- 2. `last_commit` holds the id of the decision that wrote the row, so a commit
--    retried after its reply was lost can recognise its own earlier success.

ALTER TABLE squidmesh_runs
    ALTER COLUMN payload TYPE json USING payload::json,
    ALTER COLUMN context TYPE json USING context::json,
    ALTER COLUMN last_error TYPE json USING last_error::json,
    ADD COLUMN last_commit text;

ALTER TABLE squidmesh_step_runs
    ALTER COLUMN input TYPE json USING input::json,
    ALTER COLUMN output TYPE json USING output::json,
    ALTER COLUMN error TYPE json USING error::json;

ALTER TABLE squidmesh_attempts
    ALTER COLUMN error TYPE json USING error::json;
