"""Wire helpers: counting a JSON body's strings before it is parsed."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.codecs.wire import check_json_strings, count_json_strings, parse_json
from service.errors import InvalidInput

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def _strings(value: object) -> int:
    if isinstance(value, str):
        return 1
    if isinstance(value, list):
        return sum(_strings(item) for item in value)
    if isinstance(value, dict):
        return len(value) + sum(_strings(item) for item in value.values())
    return 0


@given(json_values)
def test_the_count_is_never_above_the_true_one_and_at_least_half_of_it(value: object) -> None:
    true = _strings(value)
    for raw in (orjson.dumps(value), json.dumps(value).encode()):
        assert true // 2 <= count_json_strings(raw, len(raw)) <= true


def test_escaped_quotes_are_not_counted_and_only_the_text_before_end_is() -> None:
    raw = orjson.dumps({"a": ['say "hi"', "b"]})
    assert count_json_strings(raw, len(raw)) == 3
    body = raw + b'"""""""""'  # a binary tail after the JSON header
    assert count_json_strings(body, len(raw)) == 3


def test_a_body_over_the_limit_is_refused_before_parsing() -> None:
    at_limit = orjson.dumps(["x"] * 8)
    assert parse_json(at_limit, max_strings=8) == ["x"] * 8
    over = orjson.dumps(["x"] * 9)
    with pytest.raises(InvalidInput, match="holds 9 JSON strings; the limit is 8"):
        parse_json(over, max_strings=8)
    with pytest.raises(InvalidInput, match="JSON strings"):
        check_json_strings(over + b"not json at all", 8, len(over))
    check_json_strings(over, 8, len(orjson.dumps(["x"] * 8)))
