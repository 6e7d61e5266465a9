"""What can be done about a run: each next action with its API call and CLI command."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class NextAction:
    """Something that can be done about the run: the API call and the CLI command."""

    action: str
    """A stable name, e.g. ``approve_run`` or ``wait_for_retry``."""
    description: str
    call: str | None = None
    """The API call, e.g. ``approve_run(run_id, actor=...)`` (``None``: nothing to call)."""
    command: str | None = None
    """The CLI command, e.g. ``squidmesh run approve <id> --actor NAME``."""


def actions_for(run_id: str, *names: str, signal: str | None = None) -> tuple[NextAction, ...]:
    """The named actions for ``run_id`` (``signal``: the awaited signal's name)."""
    name = "NAME" if signal is None else signal
    catalogue = {
        "replay_run": NextAction(
            action="replay_run",
            description="start a new run from this run's payload",
            call=f"replay_run({run_id!r})",
            command=f"squidmesh run replay {run_id}",
        ),
        "replay_run_allowing_irreversible": NextAction(
            action="replay_run",
            description="replay, running again steps that cannot be undone (check them first)",
            call=f"replay_run({run_id!r}, allow_irreversible=True)",
            command=f"squidmesh run replay {run_id} --allow-irreversible",
        ),
        "cancel_run": NextAction(
            action="cancel_run",
            description="cancel the run",
            call=f"cancel_run({run_id!r}, actor=...)",
            command=f"squidmesh run cancel {run_id} --actor NAME",
        ),
        "approve_run": NextAction(
            action="approve_run",
            description="approve: the run follows the step's ok route",
            call=f"approve_run({run_id!r}, actor=..., note=...)",
            command=f"squidmesh run approve {run_id} --actor NAME --note TEXT",
        ),
        "reject_run": NextAction(
            action="reject_run",
            description="reject: the run follows the step's error route, or fails",
            call=f"reject_run({run_id!r}, actor=..., note=...)",
            command=f"squidmesh run reject {run_id} --actor NAME --note TEXT",
        ),
        "unblock_run": NextAction(
            action="unblock_run",
            description="let the run go on along the step's ok route",
            call=f"unblock_run({run_id!r}, actor=...)",
            command=f"squidmesh run unblock {run_id} --actor NAME",
        ),
        "send_signal": NextAction(
            action="send_signal",
            description="send the signal the run waits for",
            call=f"send_signal({run_id!r}, {name!r}, payload)",
            command=f"squidmesh run signal {run_id} {name} --payload JSON",
        ),
        "wait_for_step": NextAction(action="wait_for_step", description="wait: a step is running"),
        "wait_for_worker": NextAction(
            action="wait_for_worker", description="wait for a worker to claim the due job"
        ),
        "wait_for_timer": NextAction(action="wait_for_timer", description="wait for the due time"),
        "wait_for_retry": NextAction(action="wait_for_retry", description="wait for the retry"),
        "wait_for_reclaim": NextAction(
            action="wait_for_reclaim",
            description="wait: the next claim by any worker takes over the lost attempt",
        ),
        "wait_for_dependencies": NextAction(
            action="wait_for_dependencies", description="wait for the steps it depends on"
        ),
        "register_workflow": NextAction(
            action="register_workflow",
            description="register the run's workflow in this process to act on the run",
        ),
        "wait_for_cancellation": NextAction(
            action="wait_for_cancellation",
            description="wait: the running attempt ends, then the run is cancelled",
        ),
        "wait_for_compensation": NextAction(
            action="wait_for_compensation",
            description="wait: the compensations run one at a time, then the run ends",
        ),
        "repair_by_hand": NextAction(
            action="repair_by_hand",
            description="undo by hand what the failed compensations left (see last_error)",
        ),
    }
    return tuple(catalogue[n] for n in names)
