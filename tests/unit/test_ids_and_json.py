from __future__ import annotations

import pytest
from returns.result import Failure, Success

from squidmesh_core import InvalidRunId, JsonLimits
from squidmesh_core.ids import JobKey, RunId
from squidmesh_core.jsonvalue import JsonProblem, check_json_object
from squidmesh_core.protocol import InvalidJobId, check_json, job_id_for, parse_job_id, parse_run_id

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
