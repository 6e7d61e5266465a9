from __future__ import annotations

from datetime import timedelta

from returns.result import Failure

from squidmesh_backends.cli._core_smoke import check_smoke, run_core_smoke
from squidmesh_backends.examples.payment_recovery import payment_recovery
from squidmesh_core import COMPLETE, StepFailure, chain, manual, step, workflow


def test_example_run_passes_its_checks() -> None:
    run, lines = run_core_smoke(payment_recovery, {"account_id": "a", "invoice_id": "i"})
    assert check_smoke(run) == []
    assert run.context["notification"] == {"channel": "email", "to": "a"}
    assert lines[-1] == "run finished completed after 6.06s simulated"


def test_checks_report_a_failed_run() -> None:
    def broken(data: object, ctx: object) -> None:
        raise RuntimeError("no gateway")

    wf = workflow(
        "w",
        triggers=[manual()],
        steps=[step("check_gateway", broken)],
        transitions=chain("check_gateway", COMPLETE),
    )
    run, _ = run_core_smoke(wf, {})
    problems = check_smoke(run)
    assert "run is failed, expected completed" in problems
    assert run.last_error is not None and run.last_error.message == "no gateway"
    assert run.last_error.details == {"type": "builtins.RuntimeError"}


def test_failures_of_other_types_are_wrapped() -> None:
    def odd(data: object, ctx: object) -> object:
        return Failure("plain text")

    def typed(data: object, ctx: object) -> object:
        return Failure(StepFailure(kind="x", message="typed", retryable=False))

    for handler, message in ((odd, "plain text"), (typed, "typed")):
        wf = workflow(
            "w", triggers=[manual()], steps=[step("a", handler)], transitions=chain("a", COMPLETE)
        )
        run, _ = run_core_smoke(wf, {})
        assert run.last_error is not None and run.last_error.message == message


def test_async_handlers_are_refused_by_the_core_smoke() -> None:
    async def later(data: object, ctx: object) -> dict[str, object]:
        return {}

    wf = workflow(
        "w", triggers=[manual()], steps=[step("a", later)], transitions=chain("a", COMPLETE)
    )
    run, _ = run_core_smoke(wf, {})
    assert run.last_error is not None
    assert "plain callables" in run.last_error.message
    assert timedelta(0) <= run.updated_at - run.created_at
