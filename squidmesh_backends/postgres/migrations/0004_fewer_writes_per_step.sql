-- Version 4: less written per step transition (measured with pg_waldump in
-- docs/performance.md).
--
-- 1. `squidmesh_runs_finished` indexed `updated_at`, which every commit changes,
--    so no update of a run could be HOT: each one wrote a new entry into all of
--    the table's indexes. Pruning finished runs by age now walks
--    `squidmesh_runs_by_status` instead (status, then a filter on updated_at).
-- 2. `squidmesh_jobs_one_per_attempt` repeated the primary key: a job's id is
--    made of its run, step and attempt, so the key already keeps them unique.
-- 3. Rows updated in place keep free room on their page, so the updates can
--    stay HOT (new pages only; existing ones fill up as before).

DROP INDEX squidmesh_runs_finished;
ALTER TABLE squidmesh_jobs DROP CONSTRAINT squidmesh_jobs_one_per_attempt;
ALTER TABLE squidmesh_runs SET (fillfactor = 80);
ALTER TABLE squidmesh_step_runs SET (fillfactor = 80);
ALTER TABLE squidmesh_attempts SET (fillfactor = 80);
ALTER TABLE squidmesh_jobs SET (fillfactor = 80);
