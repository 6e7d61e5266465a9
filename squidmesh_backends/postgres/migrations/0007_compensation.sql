-- Version 7: saga compensation.
--
-- 1. A run may be `compensating` (undoing the steps it completed, one
--    compensation job at a time) and may end `compensation_failed` (a
--    compensation gave up; a finished run).
-- 2. A run keeps its compensation record (why it compensates, what it ends as,
--    the plan, when it finished) as JSON, NULL for a run that never compensated.
-- 3. A failed step keeps the marked error route it took (`recovery=` on the
--    route: `compensation` or `undo`, and the target), NULL otherwise.
--
-- Compensations are step rows of their own, named `<step>:compensate`; no step
-- name may contain a colon, so they never meet a declared step.

ALTER TABLE squidmesh_runs DROP CONSTRAINT squidmesh_runs_status_check;
ALTER TABLE squidmesh_runs ADD CONSTRAINT squidmesh_runs_status_check CHECK (status IN (
    'pending', 'running', 'retrying', 'paused', 'failed', 'completed', 'cancelling',
    'cancelled', 'compensating', 'compensation_failed'));
ALTER TABLE squidmesh_runs ADD COLUMN compensation json;
ALTER TABLE squidmesh_step_runs ADD COLUMN recovery json;
