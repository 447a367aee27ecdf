"""Pure tests: the fast wire encoder agrees with the client's, hashes survive the round trip."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.api_core.datetime_helpers import DatetimeWithNanoseconds
from google.cloud.firestore_v1 import _helpers

from crm_pipeline.firestore.documents import (
    content_hash,
    firestore_content_hash,
    format_timestamp,
    segment_document_id,
)
from crm_pipeline.firestore.mirror import encode_value

SAMPLE = {
    "name": "Ada Lövelace",
    "none": None,
    "flag": True,
    "count": 3,
    "score": 0.25,
    "money": "12.50",
    "at": datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
    "local": datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2))),
    "tags": ["a", "b"],
    "nested": {"list": [{"x": 1}, None], "empty": {}, "empty_list": []},
}


def test_encoder_matches_the_client_library() -> None:
    for key, value in SAMPLE.items():
        ours = encode_value(value)
        theirs = _helpers.encode_value(value)._pb
        assert ours == theirs, key


def test_encoder_refuses_naive_datetimes_and_unknown_types() -> None:
    with pytest.raises(TypeError):
        encode_value(datetime(2025, 1, 1))
    with pytest.raises(TypeError):
        encode_value({1, 2})


def test_hash_is_the_same_after_a_firestore_round_trip() -> None:
    text = {"at": "2025-01-02T03:04:05.678901Z", "n": 1}
    read_back = {
        "at": DatetimeWithNanoseconds(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
        "n": 1,
        "content_hash": "ignored",
        "mirrored_at": datetime.now(UTC),
    }
    subs = {"orders": {"o1": {"created_at": "2025-01-01T00:00:00.000000Z"}}}
    subs_read = {"orders": {"o1": {"created_at": datetime(2025, 1, 1, tzinfo=UTC)}}}
    assert content_hash(text, subs) == firestore_content_hash(read_back, subs_read)
    assert content_hash(text, subs) != content_hash({**text, "n": 2}, subs)


def test_timestamp_text_matches_sql_mirror_ts() -> None:
    value = datetime(2025, 1, 2, 5, 4, 5, 7, tzinfo=timezone(timedelta(hours=2)))
    assert format_timestamp(value) == "2025-01-02T03:04:05.000007Z"


def test_segment_document_ids_are_firestore_safe() -> None:
    assert segment_document_id("newsletter/fans") == "newsletter%2Ffans"
    assert segment_document_id("") == "_"
