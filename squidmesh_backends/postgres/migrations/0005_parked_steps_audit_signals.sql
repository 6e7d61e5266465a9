-- Version 5: people and signals in the loop.
--
-- 1. A step may be `parked` (a pause, an approval or a signal wait); how it
--    resumes is written with it, in `parked`, when it parks.
-- 2. A run keeps its audit trail (accepted operator commands) and its signal
--    inbox as JSON arrays. Both stay NULL (no bytes) until the first command or
--    signal, so a run nobody touches writes nothing more per step.
--
-- The columns are `json`, like every JSON column since version 2: kept as
-- written, so a signal's numbers read back exactly. Replacing the status check
-- reads every step row under the table's exclusive lock (migrations run in one
-- transaction); it is a cheap check per row, but on a very large table run the
-- migration when writes can wait a moment.

ALTER TABLE squidmesh_step_runs ADD COLUMN parked json;
ALTER TABLE squidmesh_step_runs DROP CONSTRAINT squidmesh_step_runs_status_check;
ALTER TABLE squidmesh_step_runs ADD CONSTRAINT squidmesh_step_runs_status_check CHECK (status IN (
    'scheduled', 'running', 'retry_scheduled', 'parked', 'completed', 'failed', 'cancelled'));
ALTER TABLE squidmesh_runs ADD COLUMN audit json, ADD COLUMN signals json;
