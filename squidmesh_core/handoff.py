"""Delivery and hand-off: what a worker's claim or outcome does, decided in one call.

A worker meets a run twice per attempt: when a claimed job reaches it, and when
the step it ran reports an outcome. Both are decided here, so the shell never
inspects a run to choose an event, filter its jobs or combine decisions.

Rules:

1. **A delivery of a live, unstarted job starts its attempt** (``JobDelivered``):
   ``Decision.started`` names it. A delivery that converges a cancelling run, or
   fails a run whose step is no longer declared, starts nothing.
2. **A delivery of a job started under another token is a reclaim.** The store
   leases a started job again only after its lease expired, so the worker that
   started it is lost: the attempt is recorded ``lost`` and retried per policy
   (``LeaseExpired`` under the old token), and ``Decision.reclaimed`` is set. The
   commit's fence on the new lease is what keeps a forged message from doing it.
3. **A delivery is stale** when the job is not live, or is started under the same
   token (a duplicate message) or under no token.
4. **An outcome may hand the next step to the same worker.** Given a ``Lease``,
   an outcome that makes a job due at once also starts that job's attempt in the
   same decision, one version later than the run it was decided on: its
   ``ScheduleJob`` carries the lease, ``Decision.started`` names the attempt, and
   the store inserts the job already leased, so the transition costs one commit.
   Other jobs due at once are left to the dispatchers.
"""

from __future__ import annotations

from datetime import datetime

from returns.result import Failure, Result, Success

from squidmesh_core.commands import Decision, Lease, combine
from squidmesh_core.decide import decide
from squidmesh_core.definition import WorkflowDefinition
from squidmesh_core.errors import Rejected, StaleDelivery
from squidmesh_core.events import JobDelivered, LeaseExpired, StepFailed, StepSucceeded
from squidmesh_core.ids import JobId, LeaseToken
from squidmesh_core.state import JobStatus, RunState


def decide_delivery(
    definition: WorkflowDefinition,
    state: RunState,
    *,
    job_id: JobId,
    lease_token: LeaseToken,
    now: datetime,
) -> Result[Decision, Rejected]:
    """Decide what a claimed job reaching a worker under ``lease_token`` does (rules 1-3).

    Returns:
        ``Success(Decision)`` that starts the attempt (``started``), reclaims a
        lost one (``reclaimed``) or converges the run; ``Failure(StaleDelivery)``
        when the delivery changes nothing.
    """
    job = state.job(job_id)
    if job is not None and job.status is JobStatus.STARTED:
        if job.lease_token is None or job.lease_token == lease_token:
            return Failure(
                StaleDelivery(
                    job_id=job_id, reason="duplicate delivery: the attempt is already running"
                )
            )
        lost = decide(
            definition, state, LeaseExpired(job_id=job_id, lease_token=job.lease_token), now=now
        )
        return lost.map(
            lambda d: Decision(state=d.state, commands=d.commands, started=None, reclaimed=True)
        )
    return decide(definition, state, JobDelivered(job_id=job_id, lease_token=lease_token), now=now)


def decide_outcome(
    definition: WorkflowDefinition,
    state: RunState,
    event: StepSucceeded | StepFailed,
    *,
    now: datetime,
    next_lease: Lease | None = None,
) -> Result[Decision, Rejected]:
    """Decide an attempt's outcome and, with ``next_lease``, start the next step (rule 4).

    Returns:
        ``Success(Decision)``, whose ``started`` is the handed-off attempt when
        there is one, or the ``Failure`` that ``decide`` gives for the outcome
        (``StaleDelivery`` when the lease is no longer current).
    """
    decided = decide(definition, state, event, now=now)
    if next_lease is None or isinstance(decided, Failure):
        return decided
    first = decided.unwrap()
    due = first.due_now(now)
    if not due:
        return decided
    second = decide(
        definition,
        first.state,
        JobDelivered(job_id=due[0].id, lease_token=next_lease.token),
        now=now,
    )
    if isinstance(second, Failure) or second.unwrap().started is None:
        return decided
    return Success(combine(first, second.unwrap(), lease=next_lease))
