-- Version 5: people and signals in the loop.
--
-- 1. A step may be `parked` (a pause, an approval or a signal wait); how it
--    resumes is written with it, in `parked`, when it parks.
-- 2. A run keeps its audit trail (accepted operator commands) and its signal
--    inbox as JSON arrays. Both stay NULL (no bytes) until the first command or
--    signal, so a run nobody touches writes nothing more per step.

ALTER TABLE squidmesh_step_runs ADD COLUMN parked jsonb;
ALTER TABLE squidmesh_step_runs DROP CONSTRAINT squidmesh_step_runs_status_check;
ALTER TABLE squidmesh_step_runs ADD CONSTRAINT squidmesh_step_runs_status_check CHECK (status IN (
    'scheduled', 'running', 'retry_scheduled', 'parked', 'completed', 'failed', 'cancelled'));
ALTER TABLE squidmesh_runs ADD COLUMN audit jsonb, ADD COLUMN signals jsonb;
