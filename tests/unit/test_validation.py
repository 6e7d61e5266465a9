from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import pytest
from pydantic import BaseModel, ConfigDict
from returns.result import Failure, Success

from squidmesh_core import (
    COMPLETE,
    Exponential,
    Fixed,
    InvalidWorkflowError,
    Linear,
    Now,
    Retry,
    Today,
    build_workflow,
    chain,
    cron,
    error,
    log,
    manual,
    ok,
    step,
    wait,
    workflow,
)
from squidmesh_core.definition import LogLevel, Outcome, StepSpec, TransitionSpec, TriggerSpec
from squidmesh_core.dsl import backoff_from_options, retry_from_options
from squidmesh_core.protocol import WorkflowMode


def handler(data: object, ctx: object) -> dict[str, object]:
    return {}


def codes(result: object) -> list[str]:
    assert isinstance(result, Failure)
    return [p.code for p in result.failure().problems]


def messages(result: object) -> list[str]:
    assert isinstance(result, Failure)
    return [p.message for p in result.failure().problems]


def build(
    *,
    triggers: list[TriggerSpec] | None = None,
    steps: list[StepSpec] | None = None,
    transitions: list[TransitionSpec] | tuple[TransitionSpec, ...] | None = None,
    name: str = "billing.recovery",
) -> object:
    return build_workflow(
        name,
        triggers=[manual()] if triggers is None else triggers,
        steps=[step("a", handler)] if steps is None else steps,
        transitions=chain("a", COMPLETE) if transitions is None else transitions,
    )


class TestValidWorkflows:
    def test_transition_workflow_records_its_single_entry_step(self) -> None:
        result = build(
            steps=[step("b", handler), step("a", handler)], transitions=chain("a", "b", COMPLETE)
        )
        assert isinstance(result, Success)
        assert result.unwrap().entry_steps == ("a",)
        assert result.unwrap().mode is WorkflowMode.TRANSITIONS

    def test_dependency_workflow_records_every_root(self) -> None:
        result = build(
            steps=[step("a", handler), step("b", handler), step("c", handler, after=["a", "b"])],
            transitions=(),
        )
        definition = result.unwrap()  # type: ignore[attr-defined]
        assert definition.mode is WorkflowMode.DEPENDENCIES
        assert definition.entry_steps == ("a", "b")

    def test_after_duplicates_are_collapsed(self) -> None:
        spec = step("c", handler, after=["a", "a", "b"])
        assert spec.after == ("a", "b")

    def test_workflow_accepts_groups_and_single_transitions(self) -> None:
        definition = workflow(
            "w",
            triggers=[manual()],
            steps=[step("a", handler), step("b", handler)],
            transitions=[chain("a", "b"), ok("b", COMPLETE), error("a", COMPLETE)],
        )
        assert definition.target("a", Outcome.ERROR) == COMPLETE

    def test_default_trigger_is_the_first_declared(self) -> None:
        definition = build(triggers=[manual("first"), manual("second")]).unwrap()  # type: ignore[attr-defined]
        assert definition.default_trigger.name == "first"


class TestEveryProblemAtOnce:
    def test_friendly_constructor_raises_one_error_listing_everything(self) -> None:
        with pytest.raises(InvalidWorkflowError) as raised:
            workflow(
                "billing.recovery",
                triggers=[],
                steps=[step("a", handler), wait("pause", timedelta(0))],
                transitions=[ok("a", "missing")],
            )
        text = str(raised.value)
        assert text.startswith("workflow 'billing.recovery' is invalid:\n- ")
        assert "at least one trigger is required" in text
        assert "built-in step 'pause' requires a positive duration" in text
        assert "transition from 'a' targets unknown step: 'missing'" in text
        assert len(raised.value.problems) >= 3

    def test_invalid_workflow_error_is_a_value_error(self) -> None:
        with pytest.raises(ValueError, match="at least one step is required"):
            workflow("w", triggers=[manual()], steps=[])


class TestNames:
    @pytest.mark.parametrize("name", ["", "9lives", "has space", "x" * 201])
    def test_workflow_name_must_be_well_formed(self, name: str) -> None:
        assert codes(build(name=name)) == ["workflow_name"]

    def test_step_name_cannot_be_complete(self) -> None:
        result = build(steps=[step(COMPLETE, handler)], transitions=[])
        assert "step_name" in codes(result)

    @pytest.mark.parametrize("name", ["", "a-b", "a/b", "x" * 101])
    def test_step_name_must_be_an_identifier(self, name: str) -> None:
        result = build(steps=[step(name, handler)], transitions=chain(name, COMPLETE))
        assert "step_name" in codes(result)

    def test_trigger_name_must_be_an_identifier(self) -> None:
        assert codes(build(triggers=[manual("not valid")])) == ["trigger_name"]


class TestTriggers:
    def test_at_least_one_trigger(self) -> None:
        assert messages(build(triggers=[])) == ["at least one trigger is required"]

    def test_duplicate_trigger_names(self) -> None:
        assert messages(build(triggers=[manual("go"), manual("go")])) == [
            "duplicate trigger names: 'go'"
        ]

    @pytest.mark.parametrize(
        ("expression", "zone", "message"),
        [
            ("", "UTC", "needs a cron expression"),
            (" ", " ", "needs a cron expression"),
            ("0 * * * *", "", "needs an IANA time zone such as 'Europe/Riga' or 'Etc/UTC'"),
            ("61 * * * *", "Etc/UTC", "has an invalid cron expression '61 * * * *': Bad minute"),
            ("* * *", "Etc/UTC", "has an invalid cron expression '* * *': Wrong number of fields"),
            ("@fortnightly", "Etc/UTC", "has an unknown cron alias '@fortnightly' (known: "),
            ("0 3 * * *", "Mars/Olympus_Mons", "has an unknown time zone 'Mars/Olympus_Mons'"),
            ("0 3 * * *", "../../etc/passwd", "has an unknown time zone '../../etc/passwd'"),
        ],
    )
    def test_cron_expressions_and_zones_are_checked_naming_the_trigger(
        self, expression: str, zone: str, message: str
    ) -> None:
        (found,) = messages(build(triggers=[cron("nightly", expression, timezone=zone)]))
        assert found.startswith(f"trigger 'nightly' {message}")

    @pytest.mark.parametrize("expression", ["@hourly", "@DAILY", "*/15 9-17 * * 1-5", "0 0 L * *"])
    def test_valid_cron_triggers_pass(self, expression: str) -> None:
        built = build(triggers=[cron("nightly", expression, timezone="Europe/Riga")])
        assert isinstance(built, Success), built

    def test_payload_must_be_a_pydantic_model(self) -> None:
        result = build(triggers=[manual(payload=dict)])
        assert codes(result) == ["payload"]
        assert "must be a pydantic BaseModel subclass" in messages(result)[0]


class TestPayloadFields:
    def test_unknown_field_types_are_rejected(self) -> None:
        class Odd(BaseModel):
            tags: set[str]
            blob: bytes
            anything: object

        result = build(triggers=[manual("go", payload=Odd)])
        assert codes(result) == ["payload", "payload", "payload"]
        assert "trigger 'go': payload field 'tags' has an unsupported type" in messages(result)[0]

    def test_supported_types_are_accepted(self) -> None:
        from datetime import date, datetime
        from enum import StrEnum
        from typing import Literal

        class Colour(StrEnum):
            RED = "red"

        class Inner(BaseModel):
            model_config = ConfigDict(extra="forbid")
            n: int

        class Rich(BaseModel):
            s: str
            i: int
            f: float
            b: bool
            d: date
            t: datetime
            items: list[int]
            table: dict[str, list[str]]
            choice: Literal["x", "y"]
            colour: Colour
            inner: Inner
            maybe: int | None = None
            raw: dict = {}  # type: ignore[type-arg]

        assert isinstance(build(triggers=[manual(payload=Rich)]), Success)

    def test_dict_keys_must_be_strings(self) -> None:
        class Keys(BaseModel):
            table: dict[int, str]

        assert "dict keys must be str" in messages(build(triggers=[manual(payload=Keys)]))[0]

    def test_default_must_fit_the_type(self) -> None:
        class Bad(BaseModel):
            count: int = "three"  # type: ignore[assignment]

        assert messages(build(triggers=[manual("go", payload=Bad)])) == [
            "trigger 'go': payload field 'count' has an invalid default for type int: "
            "Input should be a valid integer"
        ]

    def test_dynamic_defaults_only_on_strings(self) -> None:
        class Bad(BaseModel):
            day: Annotated[int, Today()]
            moment: Annotated[int, Now()]

        assert codes(build(triggers=[manual(payload=Bad)])) == ["payload", "payload"]

    def test_default_factory_is_refused(self) -> None:
        from pydantic import Field

        class Bad(BaseModel):
            items: list[int] = Field(default_factory=list)

        assert "default_factory" in messages(build(triggers=[manual(payload=Bad)]))[0]

    def test_conflicting_types_across_triggers(self) -> None:
        class One(BaseModel):
            amount: int

        class Two(BaseModel):
            amount: str

        result = build(triggers=[manual("one", payload=One), manual("two", payload=Two)])
        assert messages(result) == [
            "payload field 'amount' has conflicting types across triggers: int, str"
        ]

    def test_payload_fields_are_the_union_of_all_triggers(self) -> None:
        class One(BaseModel):
            a: int

        class Two(BaseModel):
            a: int
            b: str

        definition = build(
            triggers=[manual("one", payload=One), manual("two", payload=Two)]
        ).unwrap()  # type: ignore[attr-defined]
        assert [f.name for f in definition.payload_fields] == ["a", "b"]


class TestSteps:
    def test_at_least_one_step(self) -> None:
        assert messages(build(steps=[], transitions=[])) == ["at least one step is required"]

    def test_duplicate_step_names(self) -> None:
        result = build(steps=[step("a", handler), step("a", handler)])
        assert "duplicate step names: 'a'" in messages(result)

    def test_handler_must_be_callable(self) -> None:
        result = build(steps=[step("a", "not callable")])  # type: ignore[arg-type]
        assert messages(result) == ["step 'a' needs a callable handler"]

    @pytest.mark.parametrize("duration", [timedelta(0), timedelta(seconds=-1), 5])
    def test_wait_needs_a_positive_duration(self, duration: object) -> None:
        result = build(steps=[wait("w", duration)], transitions=chain("w", COMPLETE))  # type: ignore[arg-type]
        assert messages(result) == ["built-in step 'w' requires a positive duration"]

    def test_wait_is_bounded(self) -> None:
        result = build(steps=[wait("w", timedelta(days=999_999))], transitions=chain("w", COMPLETE))
        assert messages(result) == ["built-in step 'w' waits longer than 366 days"]

    def test_log_needs_a_message(self) -> None:
        result = build(steps=[log("l", "  ")], transitions=chain("l", COMPLETE))
        assert messages(result) == ["built-in step 'l' requires a non-empty message"]

    def test_log_level_must_be_known(self) -> None:
        result = build(steps=[log("l", "hi", level="loud")], transitions=chain("l", COMPLETE))
        assert codes(result) == ["log_level"]

    @pytest.mark.parametrize("level", list(LogLevel))
    def test_every_log_level_is_accepted(self, level: str) -> None:
        assert isinstance(
            build(steps=[log("l", "hi", level=level)], transitions=chain("l", COMPLETE)), Success
        )

    def test_builtin_steps_cannot_retry(self) -> None:
        spec = StepSpec(
            name="w",
            kind=wait("w", timedelta(1)).kind,
            duration=timedelta(1),
            retry=Retry(max_attempts=2),
        )
        assert codes(build(steps=[spec], transitions=chain("w", COMPLETE))) == ["builtin_retry"]

    @pytest.mark.parametrize("keys", [(), ("",), ("a", "a")])
    def test_input_mapping_must_be_non_empty_unique_keys(self, keys: tuple[str, ...]) -> None:
        result = build(steps=[step("a", handler, input=keys)])
        assert messages(result) == ["step 'a' defines an invalid input mapping"]

    def test_input_given_as_a_string_is_reported(self) -> None:
        assert "step_option" in codes(build(steps=[step("a", handler, input="key")]))

    def test_output_mapping_must_be_non_empty(self) -> None:
        assert messages(build(steps=[step("a", handler, output="")])) == [
            "step 'a' defines an invalid output mapping"
        ]


class TestRetry:
    @pytest.mark.parametrize("attempts", [0, -1])
    def test_max_attempts_must_be_positive(self, attempts: int) -> None:
        result = build(steps=[step("a", handler, retry=Retry(max_attempts=attempts))])
        assert messages(result) == ["retry for 'a' must define a positive max_attempts"]

    def test_max_attempts_is_bounded(self) -> None:
        assert codes(build(steps=[step("a", handler, retry=Retry(max_attempts=10_000))])) == [
            "retry"
        ]

    @pytest.mark.parametrize(
        ("backoff", "why"),
        [
            (Exponential(min=timedelta(seconds=5), max=timedelta(seconds=1)), "max must be >= min"),
            (Exponential(min=timedelta(0), max=timedelta(seconds=1)), "min must be a positive"),
            (
                Exponential(min=timedelta(seconds=1), max=timedelta(seconds=2), factor=0.5),
                "factor must be a number >= 1",
            ),
            (
                Fixed(delay=timedelta(seconds=1), jitter=2.0),
                "jitter must be a number between 0 and 1",
            ),
            (Fixed(delay=timedelta(days=400)), "at most 366 days"),
            (
                Linear(
                    min=timedelta(seconds=1), step=timedelta(seconds=-1), max=timedelta(seconds=3)
                ),
                "step must be >= 0",
            ),
        ],
    )
    def test_invalid_backoff_names_the_reason(self, backoff: object, why: str) -> None:
        result = build(steps=[step("a", handler, retry=Retry(max_attempts=3, backoff=backoff))])  # type: ignore[arg-type]
        assert codes(result) == ["backoff"]
        assert why in messages(result)[0]
        assert messages(result)[0].startswith("retry for 'a' defines an invalid backoff")

    def test_backoff_options_are_order_independent(self) -> None:
        forward = backoff_from_options({"type": "exponential", "min": 1, "max": 30})
        backward = backoff_from_options({"max": 30, "min": 1, "type": "exponential"})
        assert (
            forward
            == backward
            == Success(Exponential(min=timedelta(seconds=1), max=timedelta(seconds=30)))
        )

    def test_retry_mapping_builds_a_policy(self) -> None:
        spec = step(
            "a", handler, retry={"backoff": {"delay": 2, "type": "fixed"}, "max_attempts": 4}
        )
        assert spec.retry == Retry(max_attempts=4, backoff=Fixed(delay=timedelta(seconds=2)))

    @pytest.mark.parametrize(
        ("options", "why"),
        [
            ({"max_attempts": "3"}, "max_attempts must be an integer"),
            ({"max_attempts": 3, "extra": 1}, "unknown retry options: extra"),
            ({"max_attempts": 3, "backoff": 5}, "backoff must be a mapping"),
            ({"max_attempts": 3, "backoff": {"type": "random"}}, "backoff type must be"),
            ({"max_attempts": 3, "backoff": {"type": "fixed", "min": 1}}, "unknown fixed backoff"),
            ({"max_attempts": 3, "backoff": {"type": "fixed", "delay": "soon"}}, "delay must be"),
            (
                {"max_attempts": 3, "backoff": {"type": "linear", "min": 1, "max": True}},
                "max must be",
            ),
            (
                {
                    "max_attempts": 3,
                    "backoff": {"type": "exponential", "min": 1, "max": 2, "factor": "x"},
                },
                "factor must be a number",
            ),
        ],
    )
    def test_bad_retry_mappings_are_reported(self, options: dict[str, object], why: str) -> None:
        result = retry_from_options(options)
        assert isinstance(result, Failure)
        assert why in result.failure()
        assert "step_option" in codes(build(steps=[step("a", handler, retry=options)]))

    def test_linear_mapping(self) -> None:
        assert retry_from_options(
            {"max_attempts": 2, "backoff": {"type": "linear", "min": 1, "step": 2, "max": 9}}
        ) == Success(
            Retry(
                max_attempts=2,
                backoff=Linear(
                    min=timedelta(seconds=1), step=timedelta(seconds=2), max=timedelta(seconds=9)
                ),
            )
        )

    def test_non_retry_value_is_reported(self) -> None:
        assert codes(build(steps=[step("a", handler, retry=3)])) == ["retry"]  # type: ignore[arg-type]


class TestTransitions:
    def test_duplicate_from_and_outcome(self) -> None:
        result = build(
            steps=[step("a", handler), step("b", handler)],
            transitions=[ok("a", "b"), ok("a", COMPLETE), ok("b", COMPLETE)],
        )
        assert "duplicate transition declared from 'a' on outcome ok" in messages(result)

    def test_unknown_source(self) -> None:
        result = build(transitions=[ok("a", COMPLETE), ok("ghost", COMPLETE)])
        assert messages(result) == ["transition references unknown step: 'ghost'"]

    def test_unknown_target(self) -> None:
        result = build(transitions=[ok("a", "ghost")])
        assert "transition from 'a' targets unknown step: 'ghost'" in messages(result)

    def test_unsupported_outcome(self) -> None:
        bad = TransitionSpec(from_step="a", on="maybe", to=COMPLETE)  # type: ignore[arg-type]
        result = build(transitions=[ok("a", COMPLETE), bad])
        assert "transition from 'a' defines unsupported outcome 'maybe'" in messages(result)

    def test_exactly_one_entry_step(self) -> None:
        result = build(
            steps=[step("a", handler), step("b", handler)],
            transitions=[ok("a", COMPLETE), ok("b", COMPLETE)],
        )
        assert messages(result) == ["workflow must define exactly one entry step (found: 'a', 'b')"]

    def test_cycle_through_every_step_leaves_no_entry(self) -> None:
        result = build(
            steps=[step("a", handler), step("b", handler)], transitions=[ok("a", "b"), ok("b", "a")]
        )
        assert "workflow must define exactly one entry step (found: none)" in messages(result)
        assert "transition_cycle" in codes(result)

    def test_cycle_with_one_entry_is_rejected(self) -> None:
        result = build(
            steps=[step("a", handler), step("b", handler), step("c", handler)],
            transitions=[ok("a", "b"), ok("b", "c"), error("c", "b"), ok("c", COMPLETE)],
        )
        assert codes(result) == ["transition_cycle"]
        assert messages(result) == [
            "transition cycle: a step is reachable from itself: 'b' -> 'c' -> 'b'"
        ]

    def test_step_without_ok_route_is_reported(self) -> None:
        result = build(
            steps=[step("a", handler), step("b", handler)],
            transitions=[error("a", "b"), ok("b", COMPLETE)],
        )
        assert messages(result) == [
            "step 'a' has no ok transition, so its success could never complete the run"
        ]


class TestDependencies:
    def test_unknown_dependency(self) -> None:
        result = build(
            steps=[step("a", handler), step("b", handler, after=["ghost"])], transitions=()
        )
        assert messages(result) == ["step 'b' depends on unknown step 'ghost'"]

    def test_self_dependency_is_also_a_cycle(self) -> None:
        result = build(steps=[step("a", handler), step("b", handler, after=["b"])], transitions=())
        assert codes(result) == ["self_dependency", "dependency_cycle"]

    def test_dependency_cycle(self) -> None:
        result = build(
            steps=[
                step("root", handler),
                step("a", handler, after=["root", "b"]),
                step("b", handler, after=["a"]),
            ],
            transitions=(),
        )
        assert codes(result) == ["dependency_cycle"]

    def test_no_root(self) -> None:
        result = build(
            steps=[step("a", handler, after=["b"]), step("b", handler, after=["a"])], transitions=()
        )
        assert "dependency-based workflow must define at least one root step" in messages(result)

    def test_transitions_not_allowed(self) -> None:
        result = build(
            steps=[step("a", handler), step("b", handler, after=["a"])],
            transitions=[ok("a", COMPLETE)],
        )
        assert messages(result) == ["dependency-based workflows cannot declare transitions"]

    def test_after_as_string_is_reported(self) -> None:
        result = build(
            steps=[step("a", handler), step("b", handler, after="a")],
            transitions=chain("a", "b", COMPLETE),
        )
        assert "step_option" in codes(result)

    def test_after_with_non_strings_is_reported(self) -> None:
        bad = StepSpec(name="b", kind=step("b", handler).kind, handler=handler, after=("a", 3))  # type: ignore[arg-type]
        result = build(steps=[step("a", handler), bad], transitions=())
        assert "after_list" in codes(result)

    def test_ancestors_are_transitive_in_declaration_order(self) -> None:
        definition = build(
            steps=[
                step("a", handler),
                step("b", handler),
                step("c", handler, after=["b"]),
                step("d", handler, after=["c", "a"]),
            ],
            transitions=(),
        ).unwrap()  # type: ignore[attr-defined]
        assert definition.ancestors("d") == ("a", "b", "c")
        assert definition.ancestors("a") == ()


def test_every_error_value_describes_itself_in_a_sentence() -> None:
    import dataclasses
    import inspect

    from squidmesh_core import errors

    values = [
        c
        for _, c in inspect.getmembers(errors, inspect.isclass)
        if isinstance(getattr(c, "code", None), str) and dataclasses.is_dataclass(c)
    ]
    assert len(values) > 20
    assert [c.__name__ for c in values if not callable(getattr(c, "describe", None))] == []
