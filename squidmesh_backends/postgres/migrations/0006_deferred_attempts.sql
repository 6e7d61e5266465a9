-- Version 6: an attempt may end `deferred` (the step said "not yet, look again
-- later": a re-check that uses no retry).

ALTER TABLE squidmesh_attempts DROP CONSTRAINT squidmesh_attempts_status_check;
ALTER TABLE squidmesh_attempts ADD CONSTRAINT squidmesh_attempts_status_check
    CHECK (status IN ('running', 'succeeded', 'failed', 'lost', 'deferred'));
