"""Storable text: the one check (no NUL, no lone surrogate) and the one repair."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from returns.result import Failure

from squidmesh_core.jsonvalue import (
    JsonProblem,
    check_json,
    make_storable_text,
    storable_text_problem,
)


def _codec_repair(text: str) -> str:
    """The repair ``decide`` used before ``make_storable_text`` existed."""
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


class TestStorableText:
    @pytest.mark.parametrize(
        ("text", "problem"),
        [
            ("plain", None),
            ("", None),
            ("emoji \U0001f600 and \ufffd", None),
            ("a\x00b", "contains a NUL character"),
            ("\ud800", "contains a lone surrogate"),
            ("\udfff tail", "contains a lone surrogate"),
            ("\ud83d\ude00", "contains a lone surrogate"),  # a pair, but two code points
            ("\ud800\x00", "contains a NUL character"),  # NUL is reported first
        ],
    )
    def test_the_problem_is_named(self, text: str, problem: str | None) -> None:
        assert storable_text_problem(text) == problem

    def test_json_strings_and_keys_use_the_same_check(self) -> None:
        assert check_json("a\x00") == Failure(
            JsonProblem(path="$", reason=str(storable_text_problem("a\x00")))
        )
        assert check_json({"k": "\ud800"}) == Failure(
            JsonProblem(path="$.k", reason="contains a lone surrogate")
        )

    def test_repair_escapes_by_default(self) -> None:
        assert make_storable_text("nul\x00 and \ud800 end") == "nul\\x00 and \\ud800 end"

    def test_repair_can_substitute(self) -> None:
        assert make_storable_text("a\x00b\udc80c", replacement="\ufffd") == "a\ufffdb\ufffdc"
        assert make_storable_text("a\x00b", replacement="") == "ab"

    def test_storable_text_is_returned_unchanged(self) -> None:
        text = "already fine \U0001f600"
        assert make_storable_text(text) is text

    def test_non_strings_are_described_by_their_repr(self) -> None:
        assert make_storable_text(42) == "42"
        assert make_storable_text(["a\x00"]) == "['a\\x00']"

    @pytest.mark.parametrize(
        ("limit", "expected"),
        [(None, "abcdefgh"), (8, "abcdefgh"), (7, "abcd..."), (3, "..."), (2, ".."), (0, "")],
    )
    def test_limit_cuts_and_marks_the_cut(self, limit: int | None, expected: str) -> None:
        assert make_storable_text("abcdefgh", limit=limit) == expected

    def test_the_limit_applies_after_the_repair(self) -> None:
        assert make_storable_text("\x00\x00", limit=6) == "\\x0..."

    def test_bad_arguments_are_refused(self) -> None:
        with pytest.raises(ValueError, match="negative"):
            make_storable_text("x", limit=-1)
        with pytest.raises(ValueError, match="not storable"):
            make_storable_text("x", replacement="\x00")

    @given(st.text(alphabet=st.characters(), max_size=50))
    def test_repair_always_yields_storable_text(self, text: str) -> None:
        assert storable_text_problem(make_storable_text(text)) is None
        assert storable_text_problem(make_storable_text(text, replacement="?")) is None
        assert (make_storable_text(text) == text) == (storable_text_problem(text) is None)

    @given(st.text(alphabet=st.characters(), max_size=50), st.integers(0, 60))
    def test_escaping_matches_the_backslashreplace_codec(self, text: str, limit: int) -> None:
        repaired = _codec_repair(text)
        assert make_storable_text(text) == repaired
        cut = make_storable_text(text, limit=limit)
        assert len(cut) <= limit
        if limit >= 3:
            expected = repaired if len(repaired) <= limit else repaired[: limit - 3] + "..."
            assert cut == expected
