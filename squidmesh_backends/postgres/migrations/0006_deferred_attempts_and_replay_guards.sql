-- Version 6: when things go wrong.
--
-- 1. An attempt may end `deferred` (the step said "not yet, look again later":
--    a re-check that uses no retry).
-- 2. An attempt of a step with a timeout records when it times out.
-- 3. A completed step records the replay guard it completed under
--    (`irreversible` or `not_compensatable`), so a later replay is checked against
--    what the step was when it ran, not against today's definition.

ALTER TABLE squidmesh_attempts DROP CONSTRAINT squidmesh_attempts_status_check;
ALTER TABLE squidmesh_attempts ADD CONSTRAINT squidmesh_attempts_status_check
    CHECK (status IN ('running', 'succeeded', 'failed', 'lost', 'deferred'));
ALTER TABLE squidmesh_step_runs ADD COLUMN replay_guard text
    CHECK (replay_guard IN ('irreversible', 'not_compensatable'));
ALTER TABLE squidmesh_attempts ADD COLUMN timeout_at timestamptz;
