from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from returns.result import Failure, Success

from squidmesh_core import InvalidRunId, JsonLimits
from squidmesh_core.ids import JobKey, RunId
from squidmesh_core.jsonvalue import (
    JsonProblem,
    JsonValue,
    _encoded_size,
    check_json_object,
    dump_json,
)
from squidmesh_core.protocol import (
    InvalidJobId,
    InvalidLeaseToken,
    JobId,
    JobMessage,
    LeaseToken,
    check_json,
    job_id_for,
    parse_job_id,
    parse_job_message,
    parse_lease_token,
    parse_run_id,
)
from squidmesh_core.testing.strategies import json_values

GOOD = "0b0e6c1e-2f2e-4c1a-9d55-7b1d2f0e9a10"


class TestRunIds:
    def test_canonical_uuid_is_accepted(self) -> None:
        assert parse_run_id(GOOD) == Success(GOOD)

    @pytest.mark.parametrize(
        "value",
        [GOOD.upper(), GOOD[:-1], f"{GOOD}\n", "", None, 42, GOOD.replace("-", ""), "x" * 200],
    )
    def test_anything_else_is_invalid(self, value: object) -> None:
        result = parse_run_id(value)
        assert isinstance(result, Failure)
        assert result.failure().code == "invalid_run_id"
        assert len(result.failure().value) <= 80

    def test_long_values_are_shortened_in_the_error(self) -> None:
        assert parse_run_id("y" * 500) == Failure(InvalidRunId(value="y" * 77 + "..."))


class TestJobIds:
    def test_round_trip(self) -> None:
        job_id = job_id_for(RunId(GOOD), "charge", 3)
        assert parse_job_id(job_id) == Success(JobKey(run_id=RunId(GOOD), step="charge", attempt=3))

    @pytest.mark.parametrize(
        "value",
        [
            f"{GOOD}/charge",
            f"{GOOD}/charge/0",
            f"{GOOD}/charge/01",
            f"{GOOD}/charge/-1",
            f"{GOOD}/charge/1/2",
            f"{GOOD}/char ge/1",
            f"{GOOD}/charge/١",
            f"{GOOD}/charge/9999999",
            "nope/charge/1",
            "",
            None,
            b"bytes",
        ],
    )
    def test_malformed_job_ids_are_rejected(self, value: object) -> None:
        result = parse_job_id(value)
        assert isinstance(result, Failure)
        assert isinstance(result.failure(), InvalidJobId)


class TestJson:
    def test_tuples_become_lists(self) -> None:
        assert check_json({"a": (1, 2)}) == Success({"a": [1, 2]})

    @pytest.mark.parametrize(
        ("value", "problem"),
        [
            ({"a": {1, 2}}, JsonProblem(path="$.a", reason="is a set, which is not JSON")),
            ([float("-inf")], JsonProblem(path="$[0]", reason="is not a finite number")),
            ({"\x00": 1}, JsonProblem(path="$", reason="has a key that contains a NUL character")),
            (
                {"\udc00": 1},
                JsonProblem(path="$", reason="has a key that contains a lone surrogate"),
            ),
        ],
    )
    def test_problems_name_their_path(self, value: object, problem: JsonProblem) -> None:
        assert check_json(value) == Failure(problem)

    @pytest.mark.parametrize(
        "value",
        [
            "x" * 100,
            [1] * 100,
            {"k" * 100: 1},
            {"k": None, "l": True, "m": 1.5, "n": 10**50},
        ],
    )
    def test_size_limit_applies_to_every_kind(self, value: object) -> None:
        assert isinstance(check_json(value, limits=JsonLimits(max_bytes=20)), Failure)

    def test_object_check_refuses_non_objects(self) -> None:
        assert check_json_object([1]) == Failure(
            JsonProblem(path="$", reason="is a list, expected an object")
        )

    def test_values_within_limits_pass(self) -> None:
        value = {"k": None, "l": True, "m": 1.5, "n": [1, "two"]}
        assert check_json(value, limits=JsonLimits(max_bytes=100)) == Success(value)


class TestLeaseTokens:
    @pytest.mark.parametrize("value", ["lease-1", "9f86d081884c7d659a2feaa0c55ad015", "a" * 128])
    def test_tokens_an_id_source_mints_are_accepted(self, value: str) -> None:
        assert parse_lease_token(value) == Success(value)

    @pytest.mark.parametrize(
        "value",
        ["", "a\x00b", "\ud800", "a" * 129, "with space", "é", "tok\n", None, 7, b"tok", ["t"]],
    )
    def test_forged_tokens_are_refused_before_any_store_sees_them(self, value: object) -> None:
        result = parse_lease_token(value)
        assert isinstance(result, Failure)
        assert result.failure().code == "invalid_lease_token"
        shown = result.failure().value
        assert len(shown) <= 80
        assert shown.isprintable()

    def test_a_message_is_checked_job_id_first(self) -> None:
        job = f"{GOOD}/charge/1"
        assert parse_job_message(job, "t-1") == Success(
            JobMessage(
                job_id=JobId(job),
                key=JobKey(run_id=RunId(GOOD), step="charge", attempt=1),
                lease_token=LeaseToken("t-1"),
            )
        )
        assert isinstance(parse_job_message("nope", "\x00").failure(), InvalidJobId)
        assert isinstance(parse_job_message(job, "\x00").failure(), InvalidLeaseToken)

    def test_previews_of_huge_values_stay_bounded(self) -> None:
        assert len(parse_job_id("\x00" * 8_000_000).failure().value) <= 80
        assert len(parse_job_id(list(range(1_000_000))).failure().value) <= 80


class TestStoredSize:
    """Regression: the limit counted raw UTF-8 bytes, so 1 MiB of control
    characters passed and was stored as 6.3 MB of ``\\u00XX`` escapes."""

    def test_control_characters_count_as_the_escapes_stored(self) -> None:
        value = {"blob": "\x01" * (1024 * 1024 // 2)}
        assert len(dump_json(value)) > 1024 * 1024
        result = check_json(value)
        assert isinstance(result, Failure)
        assert "size limit" in result.failure().reason

    @pytest.mark.parametrize(
        "text",
        ["plain", 'quo"te', "back\\slash", "\n\t\b\f\r", "\x01\x1f\x7f", "é", "😀", "ß\x02😀"],
    )
    def test_string_sizes_are_exact(self, text: str) -> None:
        assert _encoded_size(text) == len(dump_json(text))

    @given(st.text())
    def test_the_size_of_any_string_is_what_the_stores_write(self, text: str) -> None:
        assert _encoded_size(text) == len(dump_json(text).encode())

    @given(json_values)
    def test_accepted_values_fit_the_limit_as_stored(self, value: JsonValue) -> None:
        limit = JsonLimits(max_bytes=400)
        if isinstance(check_json(value, limits=limit), Success):
            assert len(dump_json(value).encode()) <= limit.max_bytes
