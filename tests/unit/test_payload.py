from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated

import pytest
from pydantic import BaseModel, ConfigDict
from returns.result import Failure, Success

from squidmesh_core import FieldProblem, InvalidPayload, JsonLimits, Now, Today
from squidmesh_core.payload import EMPTY_CONTRACT, describe_contract, validate_payload

NOW = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


class Invoice(BaseModel):
    account_id: str
    amount: int
    currency: str = "EUR"
    ratio: float = 1.0
    due: date | None = None
    digest_date: Annotated[str, Today()]
    received_at: Annotated[str, Now()]


def check(raw: object, *, limits: JsonLimits | None = None) -> object:
    contract = describe_contract(Invoice).unwrap()
    return validate_payload(
        contract, raw, workflow="w", trigger="t", now=NOW, limits=limits or JsonLimits()
    )


def test_defaults_are_resolved_and_types_normalised() -> None:
    assert check({"account_id": "acc", "amount": 5, "due": "2026-04-01"}) == Success(
        {
            "account_id": "acc",
            "amount": 5,
            "currency": "EUR",
            "ratio": 1.0,
            "due": "2026-04-01",
            "digest_date": "2026-03-04",
            "received_at": "2026-03-04T05:06:07+00:00",
        }
    )


def test_given_values_win_over_dynamic_defaults() -> None:
    result = check({"account_id": "a", "amount": 1, "digest_date": "2020-01-01"})
    assert result.unwrap()["digest_date"] == "2020-01-01"  # type: ignore[attr-defined]


def test_int_is_accepted_for_float() -> None:
    assert check({"account_id": "a", "amount": 1, "ratio": 2}).unwrap()["ratio"] == 2.0  # type: ignore[attr-defined]


def test_every_problem_is_reported_at_once() -> None:
    result = check({"amount": "5", "zeta": 1, "alpha": 2, "due": "soon"})
    assert isinstance(result, Failure)
    problem = result.failure()
    assert problem.missing == ("account_id",)
    assert problem.unknown == ("alpha", "zeta")
    assert [p.field for p in problem.invalid] == ["amount", "due"]
    assert problem.invalid[0] == FieldProblem(
        field="amount", expected="int", message="Input should be a valid integer"
    )
    assert problem.code == "invalid_payload"
    assert "missing fields: account_id" in problem.describe()
    assert "unknown fields: alpha, zeta" in problem.describe()


def test_present_null_is_not_defaulted() -> None:
    result = check({"account_id": "a", "amount": 1, "currency": None})
    assert isinstance(result, Failure)
    assert [p.field for p in result.failure().invalid] == ["currency"]


def test_unknown_fields_alone_are_rejected() -> None:
    result = check({"account_id": "a", "amount": 1, "extra": True})
    assert result == Failure(InvalidPayload(workflow="w", trigger="t", unknown=("extra",)))


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (["not", "a", "map"], "payload is a list, expected an object"),
        ("text", "payload is a str, expected an object"),
        ({"account_id": "a\x00b", "amount": 1}, "payload.account_id contains a NUL character"),
        ({"account_id": "\ud800", "amount": 1}, "payload.account_id contains a lone surrogate"),
        ({"account_id": float("inf"), "amount": 1}, "payload.account_id is not a finite number"),
        ({1: "a"}, "payload has a non-string key 1"),
        ({"account_id": b"x", "amount": 1}, "payload.account_id is a bytes, which is not JSON"),
    ],
)
def test_unstorable_payloads_get_a_reason(raw: object, reason: str) -> None:
    result = check(raw)
    assert isinstance(result, Failure)
    assert result.failure().reason == reason


def test_oversized_payload_is_rejected() -> None:
    result = check({"account_id": "x" * 2000, "amount": 1}, limits=JsonLimits(max_bytes=1000))
    assert isinstance(result, Failure)
    assert "exceeds the size limit of 1000 bytes" in (result.failure().reason or "")


def test_deeply_nested_payload_is_rejected() -> None:
    nested: object = 1
    for _ in range(10):
        nested = {"x": nested}
    result = check({"account_id": "a", "amount": 1, "deep": nested}, limits=JsonLimits(max_depth=5))
    assert isinstance(result, Failure)
    assert "nested deeper than 5 levels" in (result.failure().reason or "")


def test_empty_contract_accepts_only_the_empty_object() -> None:
    assert validate_payload(EMPTY_CONTRACT, {}, workflow="w", trigger="t", now=NOW) == Success({})
    result = validate_payload(EMPTY_CONTRACT, {"x": 1}, workflow="w", trigger="t", now=NOW)
    assert result == Failure(InvalidPayload(workflow="w", trigger="t", unknown=("x",)))


def test_nested_models_are_validated() -> None:
    class Line(BaseModel):
        model_config = ConfigDict(extra="forbid")
        sku: str
        qty: int

    class Order(BaseModel):
        lines: list[Line]

    contract = describe_contract(Order).unwrap()
    good = validate_payload(
        contract, {"lines": [{"sku": "a", "qty": 2}]}, workflow="w", trigger="t", now=NOW
    )
    assert good == Success({"lines": [{"sku": "a", "qty": 2}]})
    bad = validate_payload(contract, {"lines": [{"sku": "a"}]}, workflow="w", trigger="t", now=NOW)
    assert isinstance(bad, Failure)
    assert [p.field for p in bad.failure().invalid] == ["lines.0.qty"]


def test_string_is_not_coerced_to_int() -> None:
    class Count(BaseModel):
        n: int

    contract = describe_contract(Count).unwrap()
    result = validate_payload(contract, {"n": "1"}, workflow="w", trigger="t", now=NOW)
    assert isinstance(result, Failure)


class TestFieldTypes:
    def test_literal_of_floats_is_refused(self) -> None:
        from typing import Literal

        class Odd(BaseModel):
            ratio: Literal[0.5, 1.5]  # type: ignore[valid-type]  # the invalid type is the point

        result = describe_contract(Odd)
        assert isinstance(result, Failure)
        assert "are not JSON scalars" in result.failure()[0]

    def test_union_with_an_unsupported_member_is_refused(self) -> None:
        class Odd(BaseModel):
            tags: set[str] | None = None

        assert isinstance(describe_contract(Odd), Failure)

    def test_enum_with_non_json_values_is_refused(self) -> None:
        from enum import Enum

        class Weight(Enum):
            LIGHT = 0.5

        class Odd(BaseModel):
            weight: Weight

        result = describe_contract(Odd)
        assert isinstance(result, Failure)
        assert "enum Weight has non-JSON values" in result.failure()[0]

    def test_self_referencing_models_are_accepted(self) -> None:
        class Node(BaseModel):
            model_config = ConfigDict(extra="forbid")
            name: str
            children: list[Node] = []

        Node.model_rebuild()

        class Tree(BaseModel):
            root: Node

        assert isinstance(describe_contract(Tree), Success)

    def test_nested_unsupported_type_names_its_path(self) -> None:
        class Inner(BaseModel):
            model_config = ConfigDict(extra="forbid")
            blob: bytes

        class Outer(BaseModel):
            inner: Inner

        result = describe_contract(Outer)
        assert isinstance(result, Failure)
        assert "Inner.blob" in result.failure()[0]

    def test_non_finite_default_is_refused(self) -> None:
        class Odd(BaseModel):
            ratio: float = float("nan")

        result = describe_contract(Odd)
        assert isinstance(result, Failure)
        assert "the default is not JSON" in result.failure()[0]

    def test_resolved_payload_over_the_limit_is_refused(self) -> None:
        class Big(BaseModel):
            note: str = "x" * 5000

        contract = describe_contract(Big).unwrap()
        result = validate_payload(
            contract, {}, workflow="w", trigger="t", now=NOW, limits=JsonLimits(max_bytes=1000)
        )
        assert isinstance(result, Failure)
        assert "resolved payload exceeds the size limit" in (result.failure().reason or "")


def test_describe_lists_every_kind_of_problem() -> None:
    problem = InvalidPayload(
        workflow="w",
        trigger="t",
        reason="payload is a list, expected an object",
        invalid=(FieldProblem(field="n", expected="int", message="bad"),),
    )
    assert problem.describe() == (
        "invalid payload for w/t: payload is a list, expected an object; invalid fields: n (bad)"
    )


def test_nested_unknown_fields_are_rejected() -> None:
    class Line(BaseModel):
        model_config = ConfigDict(extra="forbid")
        sku: str

    class Order(BaseModel):
        line: Line

    contract = describe_contract(Order).unwrap()
    result = validate_payload(
        contract, {"line": {"sku": "a", "zzz": 1}}, workflow="w", trigger="t", now=NOW
    )
    assert isinstance(result, Failure)
    assert [p.field for p in result.failure().invalid] == ["line.zzz"]


def test_nested_models_that_ignore_extras_are_refused() -> None:
    class Loose(BaseModel):
        sku: str

    class Order(BaseModel):
        line: Loose

    result = describe_contract(Order)
    assert isinstance(result, Failure)
    assert "nested model Loose must set model_config" in result.failure()[0]


def test_aliases_are_refused() -> None:
    from pydantic import Field

    class Aliased(BaseModel):
        x: int = Field(alias="X")

    result = describe_contract(Aliased)
    assert isinstance(result, Failure)
    assert "aliases are not supported" in result.failure()[0]


def test_nested_model_defaults_are_accepted() -> None:
    class Line(BaseModel):
        model_config = ConfigDict(extra="forbid")
        sku: str = "none"

    class Order(BaseModel):
        line: Line = Line()

    contract = describe_contract(Order).unwrap()
    assert validate_payload(contract, {}, workflow="w", trigger="t", now=NOW) == Success(
        {"line": {"sku": "none"}}
    )


def test_huge_integers_are_refused() -> None:
    result = check({"account_id": "a", "amount": 10**5000})
    assert isinstance(result, Failure)
    assert result.failure().reason == "payload.amount is an integer too large to store"
