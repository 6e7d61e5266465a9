"""Cron tick arithmetic: aliases, time zones, daylight-saving days, misfires."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Annotated

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel
from returns.result import Failure, Success

from squidmesh_core.cron import (
    CRON_KEY_PREFIX,
    CronSchedule,
    cron_key_prefix,
    cron_payload,
    parse_cron,
    plan_ticks,
    schedule_id,
    tick_of_key,
)
from squidmesh_core.definition import COMPLETE, TriggerSpec, WorkflowDefinition
from squidmesh_core.dsl import chain, cron, step, workflow
from squidmesh_core.errors import InvalidPayload
from squidmesh_core.jsonvalue import DEFAULT_LIMITS, JsonLimits
from squidmesh_core.payload import Now, Today, validate_payload


def schedule(expression: str, zone: str = "Etc/UTC") -> CronSchedule:
    return parse_cron(expression, zone).unwrap()


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def test_aliases_expand_to_five_fields() -> None:
    assert schedule("@hourly").fields == "0 * * * *"
    assert schedule("@Daily").fields == "0 0 * * *"
    assert schedule("@weekly").upcoming(utc(2026, 11, 26, 12, 0), 2) == (
        utc(2026, 11, 29, 0, 0),
        utc(2026, 12, 6, 0, 0),
    )


def test_ticks_are_read_in_the_schedules_time_zone() -> None:
    riga = schedule("30 9 * * *", "Europe/Riga")  # UTC+2 in winter
    assert riga.after(utc(2026, 11, 26, 0, 0)) == utc(2026, 11, 26, 7, 30)


def test_spring_forward_runs_a_skipped_time_when_the_clock_jumps() -> None:
    # Riga, 2026-03-29: 03:00 local does not exist (clocks go 03:00 -> 04:00).
    nightly = schedule("30 3 * * *", "Europe/Riga")
    ticks = nightly.upcoming(utc(2026, 3, 28, 0, 0), 3)
    local = [t.astimezone(nightly.zone).isoformat() for t in ticks]
    assert local == [
        "2026-03-28T03:30:00+02:00",
        "2026-03-29T04:00:00+03:00",
        "2026-03-30T03:30:00+03:00",
    ]


def test_fall_back_runs_a_repeated_time_once() -> None:
    # Riga, 2026-10-25: 03:00-04:00 local happens twice.
    nightly = schedule("30 3 * * *", "Europe/Riga")
    ticks = nightly.upcoming(utc(2026, 10, 24, 0, 0), 3)
    local = [t.astimezone(nightly.zone).isoformat() for t in ticks]
    assert local == [
        "2026-10-24T03:30:00+03:00",
        "2026-10-25T03:30:00+03:00",
        "2026-10-26T03:30:00+02:00",
    ]


def test_hourly_schedules_follow_the_clock_through_spring_forward() -> None:
    hourly = schedule("0 * * * *", "Europe/Riga")
    ticks = hourly.between(utc(2026, 3, 28, 22, 30), utc(2026, 3, 29, 2, 30))
    assert [t.astimezone(hourly.zone).hour for t in ticks] == [1, 2, 4, 5]


def test_between_is_half_open_and_oldest_first() -> None:
    minutely = schedule("* * * * *")
    assert minutely.between(utc(2026, 1, 1, 0, 0), utc(2026, 1, 1, 0, 3)) == (
        utc(2026, 1, 1, 0, 1),
        utc(2026, 1, 1, 0, 2),
        utc(2026, 1, 1, 0, 3),
    )
    late = utc(2026, 1, 1, 0, 3) + timedelta(seconds=30)
    assert minutely.latest(late, horizon=timedelta(minutes=5)) == utc(2026, 1, 1, 0, 3)


@given(
    start=st.datetimes(
        min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
    ),
    minutes=st.integers(0, 600),
    expression=st.sampled_from(["*/7 * * * *", "0 * * * *", "15 3,15 * * 1-5", "@daily"]),
    zone=st.sampled_from(["Etc/UTC", "Europe/Riga", "America/New_York", "Asia/Kolkata"]),
)
def test_between_agrees_with_stepping_tick_by_tick(
    start: datetime, minutes: int, expression: str, zone: str
) -> None:
    sched = schedule(expression, zone)
    end = start + timedelta(minutes=minutes)
    stepped = []
    cursor = sched.after(start)
    while cursor <= end:
        stepped.append(cursor)
        cursor = sched.after(cursor)
    assert list(sched.between(start, end)) == stepped
    assert all(a < b for a, b in itertools.pairwise(stepped))


class TestMisfires:
    hourly = parse_cron("0 * * * *", "Etc/UTC").unwrap()
    now = utc(2026, 5, 1, 12, 30)

    def test_nothing_is_due_between_ticks(self) -> None:
        plan = plan_ticks(
            self.hourly,
            last_tick=utc(2026, 5, 1, 12, 0),
            now=self.now,
            misfire_window=None,
            first_seen=utc(2026, 1, 1),
        )
        assert (plan.start, plan.skipped) == ((), 0)

    def test_by_default_only_the_newest_missed_tick_runs(self) -> None:
        plan = plan_ticks(
            self.hourly,
            last_tick=utc(2026, 5, 1, 7, 0),
            now=self.now,
            misfire_window=None,
            first_seen=utc(2026, 1, 1),
        )
        assert plan.start == (utc(2026, 5, 1, 12, 0),)
        assert plan.skipped == 4  # 08:00 .. 11:00

    def test_a_window_catches_up_every_tick_inside_it(self) -> None:
        plan = plan_ticks(
            self.hourly,
            last_tick=utc(2026, 5, 1, 7, 0),
            now=self.now,
            misfire_window=timedelta(hours=2),
            first_seen=utc(2026, 1, 1),
        )
        assert plan.start == (utc(2026, 5, 1, 11, 0), utc(2026, 5, 1, 12, 0))
        assert plan.skipped == 3

    def test_a_new_schedule_starts_from_its_activation(self) -> None:
        plan = plan_ticks(
            self.hourly,
            last_tick=None,
            now=self.now,
            misfire_window=None,
            first_seen=utc(2026, 5, 1, 12, 10),
        )
        assert (plan.start, plan.skipped) == ((), 0)


def test_schedule_ids_are_stable_and_in_utc() -> None:
    tick = datetime(2026, 3, 29, 4, 0, tzinfo=schedule("@hourly", "Europe/Riga").zone)
    assert schedule_id("nightly", tick) == "cron:nightly:2026-03-29T01:00:00Z"


@pytest.mark.parametrize("bad", [None, 5, "", "@never"])
def test_parse_refuses_bad_expressions(bad: object) -> None:
    assert isinstance(parse_cron(bad, "Etc/UTC"), Failure)


@pytest.mark.parametrize("zone", ["localtime", "Factory", "posixrules"])
def test_host_dependent_zones_are_refused(zone: str) -> None:
    problem = parse_cron("0 3 * * *", zone)
    assert isinstance(problem, Failure)
    assert "host-dependent" in problem.failure()


def test_a_window_shorter_than_the_gap_still_starts_the_newest_tick() -> None:
    hourly = schedule("0 * * * *")
    plan = plan_ticks(
        hourly,
        last_tick=utc(2026, 5, 1, 10, 0),
        now=utc(2026, 5, 1, 12, 30),
        misfire_window=timedelta(seconds=1),
        first_seen=utc(2026, 1, 1),
    )
    assert (plan.start, plan.skipped) == ((utc(2026, 5, 1, 12, 0),), 1)


def test_tick_keys_parse_only_in_their_exact_form() -> None:
    assert tick_of_key("cron:n:2026-03-29T01:00:00Z", "n") == utc(2026, 3, 29, 1, 0)
    for key in [
        "cron:n:backfill",
        "cron:nightly:2026-03-29T01:00:00Z",
        "x",
        None,
        "cron:n:2026-03-29T01:00:00Z1",
    ]:
        assert tick_of_key(key, "n") is None


class Region(BaseModel):
    region: str = "eu"
    day: Annotated[str, Today()]
    at: Annotated[str, Now()]


class Account(BaseModel):
    account: str


def _flow(*triggers: TriggerSpec, limits: JsonLimits = DEFAULT_LIMITS) -> WorkflowDefinition:
    return workflow(
        "cron.unit",
        triggers=list(triggers),
        steps=[step("s", lambda data, ctx: {})],
        transitions=chain("s", COMPLETE),
        limits=limits,
    )


def test_tick_keys_share_one_prefix() -> None:
    tick = utc(2026, 3, 29, 1, 0)
    assert cron_key_prefix("nightly") == "cron:nightly:"
    assert cron_key_prefix("nightly").startswith(CRON_KEY_PREFIX)
    assert schedule_id("nightly", tick).startswith(cron_key_prefix("nightly"))
    assert not schedule_id("nightly", tick).startswith(cron_key_prefix("night"))


@given(
    st.from_regex(r"[a-z_][a-z0-9_]{0,20}", fullmatch=True),
    st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
    ),
)
def test_a_schedule_id_names_its_tick(trigger: str, moment: datetime) -> None:
    tick = moment.replace(second=0, microsecond=0)
    assert tick_of_key(schedule_id(trigger, tick), trigger) == tick


def test_a_cron_payload_is_its_contract_resolved_from_defaults_at_the_tick() -> None:
    flow = _flow(cron("nightly", "0 3 * * *", payload=Region))
    tick = utc(2026, 3, 29, 1, 0)
    assert cron_payload(flow, "nightly", at=tick) == Success(
        {"region": "eu", "day": "2026-03-29", "at": tick.isoformat()}
    )
    assert cron_payload(flow, "nightly", at=tick) == validate_payload(
        flow.contract("nightly"), {}, workflow=flow.name, trigger="nightly", now=tick
    )


def test_a_cron_payload_without_a_contract_is_empty() -> None:
    flow = _flow(cron("nightly", "0 3 * * *"))
    assert cron_payload(flow, "nightly", at=utc(2026, 1, 1)) == Success({})


def test_a_field_without_a_default_fails_the_cron_payload() -> None:
    flow = _flow(cron("nightly", "0 3 * * *", payload=Account))
    problem = cron_payload(flow, "nightly", at=utc(2026, 1, 1)).failure()
    assert isinstance(problem, InvalidPayload)
    assert (problem.workflow, problem.trigger, problem.missing) == (
        "cron.unit",
        "nightly",
        ("account",),
    )


def test_a_cron_payload_is_bounded_by_the_workflows_limits() -> None:
    flow = _flow(cron("nightly", "0 3 * * *", payload=Region), limits=JsonLimits(max_bytes=40))
    problem = cron_payload(flow, "nightly", at=utc(2026, 1, 1)).failure()
    assert "size limit" in str(problem.reason)
