"""The worker's two decisions (delivery, outcome + hand-off) and the job-row interpreter."""

from __future__ import annotations

from datetime import timedelta

from returns.result import Failure

from squidmesh_core.protocol import (
    CancelRequested,
    Decision,
    JobId,
    JobInsert,
    JobMove,
    JobStart,
    JobStatus,
    Lease,
    LeaseToken,
    RunState,
    StaleDelivery,
    StepSucceeded,
    decide,
    decide_delivery,
    decide_outcome,
    job_writes,
)
from squidmesh_core.testing.contracts.run_store import FLOW, T0, new_run

LEASE = Lease(token=LeaseToken("next"), until=T0 + timedelta(seconds=30), owner="w")


def _first_running() -> tuple[RunState, JobId]:
    created = new_run(1).state
    first = JobId(f"{created.id}/first/1")
    started = decide_delivery(
        FLOW, created, job_id=first, lease_token=LeaseToken("t1"), now=T0
    ).unwrap()
    return started.state, first


class TestDelivery:
    def test_a_delivery_names_the_attempt_it_started(self) -> None:
        created = new_run(1).state
        first = JobId(f"{created.id}/first/1")
        decision = decide_delivery(
            FLOW, created, job_id=first, lease_token=LeaseToken("t1"), now=T0
        )
        started = decision.unwrap().started
        assert started is not None
        assert (started.job_id, started.lease_token, started.step, started.attempt) == (
            first,
            "t1",
            "first",
            1,
        )
        assert started.started_at == T0
        assert not decision.unwrap().reclaimed

    def test_the_started_attempt_records_the_worker_it_reached(self) -> None:
        created = new_run(1).state
        first = JobId(f"{created.id}/first/1")
        started = decide_delivery(
            FLOW, created, job_id=first, lease_token=LeaseToken("t1"), now=T0, worker="host:1"
        ).unwrap()
        step = started.state.step_run("first")
        assert step is not None and [a.worker for a in step.attempts] == ["host:1"]

    def test_a_step_handed_on_is_run_by_the_leases_owner(self) -> None:
        state, first = _first_running()
        succeeded = StepSucceeded(job_id=first, lease_token=LeaseToken("t1"), output={})
        both = decide_outcome(FLOW, state, succeeded, now=T0, next_lease=LEASE).unwrap()
        step = both.state.step_run("pause")
        assert step is not None and [a.worker for a in step.attempts] == ["w"]

    def test_the_same_token_again_is_a_duplicate(self) -> None:
        state, first = _first_running()
        again = decide_delivery(FLOW, state, job_id=first, lease_token=LeaseToken("t1"), now=T0)
        assert isinstance(again, Failure)
        assert isinstance(again.failure(), StaleDelivery)

    def test_a_new_token_on_a_started_job_reclaims_the_lost_attempt(self) -> None:
        state, first = _first_running()
        later = T0 + timedelta(minutes=1)
        decision = decide_delivery(
            FLOW, state, job_id=first, lease_token=LeaseToken("t2"), now=later
        ).unwrap()
        assert decision.reclaimed and decision.started is None
        step = decision.state.step_run("first")
        assert step is not None and [a.status.value for a in step.attempts] == ["lost"]
        assert "lease.reclaimed" in [e.topic.value for e in decision.emitted]
        assert job_writes(decision).deletes[:1] == (first,)

    def test_a_delivery_to_a_cancelling_run_converges_and_starts_nothing(self) -> None:
        state, first = _first_running()
        succeeded = StepSucceeded(job_id=first, lease_token=LeaseToken("t1"), output={})
        after = decide(FLOW, state, succeeded, now=T0).unwrap().state
        cancelling = decide(FLOW, after, CancelRequested(), now=T0).unwrap().state
        assert cancelling.status.value == "cancelling"
        pause = JobId(f"{state.id}/pause/1")
        done = decide_delivery(
            FLOW, cancelling, job_id=pause, lease_token=LeaseToken("p"), now=T0
        ).unwrap()
        assert done.started is None and not done.reclaimed
        assert done.state.status.value == "cancelled"
        assert job_writes(done).deletes == (pause,)


class TestHandOff:
    def test_an_outcome_with_a_lease_starts_the_step_due_now_in_the_same_version(self) -> None:
        state, first = _first_running()
        event = StepSucceeded(job_id=first, lease_token=LeaseToken("t1"), output={})
        both = decide_outcome(FLOW, state, event, now=T0, next_lease=LEASE).unwrap()
        assert both.state.version == state.version + 1
        assert both.started is not None and both.started.step == "pause"
        assert both.started.lease_token == "next"
        (insert,) = job_writes(both).inserts
        assert insert.lease == LEASE and insert.job.status is JobStatus.STARTED
        assert both.due_now(T0) == () and not both.wakes_dispatcher(T0)

    def test_without_a_lease_the_next_step_is_left_to_the_dispatchers(self) -> None:
        state, first = _first_running()
        event = StepSucceeded(job_id=first, lease_token=LeaseToken("t1"), output={})
        alone = decide_outcome(FLOW, state, event, now=T0).unwrap()
        assert alone == decide(FLOW, state, event, now=T0).unwrap()
        assert alone.started is None and alone.wakes_dispatcher(T0)
        assert job_writes(alone).wake_others

    def test_nothing_due_now_means_no_hand_off(self) -> None:
        state, first = _first_running()
        succeeded = decide(
            FLOW,
            state,
            StepSucceeded(job_id=first, lease_token=LeaseToken("t1"), output={}),
            now=T0,
        ).unwrap()
        pause = JobId(f"{state.id}/pause/1")
        running = decide_delivery(
            FLOW, succeeded.state, job_id=pause, lease_token=LeaseToken("p"), now=T0
        ).unwrap()
        event = StepSucceeded(job_id=pause, lease_token=LeaseToken("p"), output={})
        after_wait = decide_outcome(FLOW, running.state, event, now=T0, next_lease=LEASE).unwrap()
        assert after_wait.started is None  # "last" is due five minutes from now
        assert all(i.lease is None for i in job_writes(after_wait).inserts)

    def test_a_refused_outcome_is_returned_as_it_is(self) -> None:
        state, first = _first_running()
        forged = StepSucceeded(job_id=first, lease_token=LeaseToken("forged"), output={})
        refused = decide_outcome(FLOW, state, forged, now=T0, next_lease=LEASE)
        assert isinstance(refused, Failure)


class TestJobWrites:
    def test_a_new_run_inserts_its_entry_job_and_wakes_others(self) -> None:
        created = new_run(1)
        writes = job_writes(created)
        assert [i.job.id for i in writes.inserts] == [f"{created.state.id}/first/1"]
        assert writes.wake_others and not writes.moves and not writes.deletes

    def test_a_delivery_marks_the_stored_job_started(self) -> None:
        state, first = _first_running()
        created = new_run(1).state
        started = decide_delivery(FLOW, created, job_id=first, lease_token=LeaseToken("t1"), now=T0)
        writes = job_writes(started.unwrap())
        assert writes.starts == (JobStart(job_id=first, lease_token=LeaseToken("t1")),)
        assert writes.inserts == () and not writes.wake_others
        assert state.job(first) is not None

    def test_a_success_deletes_its_finished_job(self) -> None:
        state, first = _first_running()
        event = StepSucceeded(job_id=first, lease_token=LeaseToken("t1"), output={})
        writes = job_writes(decide(FLOW, state, event, now=T0).unwrap())
        assert writes.deletes == (first,)

    def test_a_cancel_moves_scheduled_jobs_to_now(self) -> None:
        state, first = _first_running()
        event = StepSucceeded(job_id=first, lease_token=LeaseToken("t1"), output={})
        after = decide(FLOW, state, event, now=T0).unwrap().state
        later = T0 - timedelta(seconds=1)
        cancelled = decide(FLOW, after, CancelRequested(), now=later).unwrap()
        writes = job_writes(cancelled)
        pause = JobId(f"{state.id}/pause/1")
        assert writes.moves == (JobMove(job_id=pause, due_at=later),)
        assert writes.wake_others

    def test_a_job_inserted_and_ended_by_one_decision_is_not_written(self) -> None:
        created = new_run(1)
        job = created.state.jobs[0]
        from squidmesh_core.protocol import CancelJob, ScheduleJob

        both = Decision(
            state=created.state,
            commands=(ScheduleJob(job=job), CancelJob(job_id=job.id)),
        )
        writes = job_writes(both)
        assert writes.inserts == () and writes.deletes == ()
        assert writes.touched == frozenset()
        assert JobInsert(job=job) not in writes.inserts

    def test_a_job_inserted_and_moved_by_one_decision_is_inserted_at_its_final_time(
        self,
    ) -> None:
        created = new_run(1)
        job = created.state.jobs[0]
        later = T0 + timedelta(hours=1)
        from dataclasses import replace

        from squidmesh_core.protocol import RescheduleJob, ScheduleJob

        moved = replace(created.state, jobs=(replace(job, due_at=later),))
        both = Decision(
            state=moved, commands=(ScheduleJob(job=job), RescheduleJob(job_id=job.id, due_at=later))
        )
        writes = job_writes(both)
        assert [i.job.due_at for i in writes.inserts] == [later]
        assert writes.moves == ()
