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
   started it is lost: the attempt is recorded ``lost`` and run again (ADR 0007)
   (``LeaseExpired`` under the old token), and ``Decision.reclaimed`` is set. The
   commit's fence on the new lease is what keeps a forged message from doing it.
   Given a ``Lease``, a retry due at once is started in the same decision under
   it (as in rule 5), so the retry does not queue behind jobs that fell due
   while the lost worker held the job: a lost attempt runs again at the next
   claim after its lease ends, however long the backlog.
4. **A delivery is stale** when the job is not live, or is started under the same
   token (a duplicate message) or under no token.
5. **An outcome may hand the next step to the same worker.** Given a ``Lease``,
   an outcome that makes a job due at once also starts that job's attempt in the
   same decision, one version later than the run it was decided on: its
   ``ScheduleJob`` carries the lease, ``Decision.started`` names the attempt
   (run by the lease's ``owner``, which the attempt records as its worker), and
   the store inserts the job already leased, so the transition costs one commit.
   Other jobs due at once are left to the dispatchers.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from returns.result import Failure, Result

from squidmesh_core.commands import Decision, Lease, combine
from squidmesh_core.decide import decide
from squidmesh_core.definition import WorkflowDefinition
from squidmesh_core.errors import Rejected, StaleDelivery
from squidmesh_core.events import (
    JobDelivered,
    LeaseExpired,
    StepDeferred,
    StepFailed,
    StepSucceeded,
)
from squidmesh_core.ids import JobId, LeaseToken
from squidmesh_core.state import JobStatus, RunState


def decide_delivery(
    definition: WorkflowDefinition,
    state: RunState,
    *,
    job_id: JobId,
    lease_token: LeaseToken,
    now: datetime,
    next_lease: Lease | None = None,
    worker: str | None = None,
) -> Result[Decision, Rejected]:
    """Decide what a claimed job reaching a worker under ``lease_token`` does (rules 1-4).

    ``worker`` names the worker the job reached; a started attempt records it.

    Returns:
        ``Success(Decision)`` that starts the attempt (``started``), reclaims a
        lost one (``reclaimed``, and with ``next_lease`` the retry's start when
        it is due at once) or converges the run; ``Failure(StaleDelivery)`` when
        the delivery changes nothing.
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
            lambda d: replace(_hand_off(definition, d, now, next_lease), reclaimed=True)
        )
    delivered = JobDelivered(job_id=job_id, lease_token=lease_token, worker=worker)
    return decide(definition, state, delivered, now=now)


def decide_outcome(
    definition: WorkflowDefinition,
    state: RunState,
    event: StepSucceeded | StepFailed | StepDeferred,
    *,
    now: datetime,
    next_lease: Lease | None = None,
) -> Result[Decision, Rejected]:
    """Decide an attempt's outcome and, with ``next_lease``, start the next step (rule 5).

    Returns:
        ``Success(Decision)``, whose ``started`` is the handed-off attempt when
        there is one, or the ``Failure`` that ``decide`` gives for the outcome
        (``StaleDelivery`` when the lease is no longer current).
    """
    return decide(definition, state, event, now=now).map(
        lambda first: _hand_off(definition, first, now, next_lease)
    )


def _hand_off(
    definition: WorkflowDefinition, first: Decision, now: datetime, lease: Lease | None
) -> Decision:
    """``first``, plus the start under ``lease`` of the first job it made due now, if any."""
    due = first.due_now(now) if lease is not None else ()
    if lease is None or not due:
        return first
    delivered = JobDelivered(job_id=due[0].id, lease_token=lease.token, worker=lease.owner)
    second = decide(definition, first.state, delivered, now=now)
    if isinstance(second, Failure) or second.unwrap().started is None:
        return first
    return combine(first, second.unwrap(), lease=lease)
