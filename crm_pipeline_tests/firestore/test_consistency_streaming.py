"""The mirror consistency check streams both id sets in order and diffs them as a merge.

Neither PostgreSQL's live ids nor Firestore's document ids are ever held whole: the diff reads
each stream one id ahead (proved with generators that record how far they were read), and the
streams it reads come in the order the merge needs (checked against the real emulator).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from google.cloud import firestore
from hypothesis import given, settings
from hypothesis import strategies as st

import crm_pipeline.firestore.verify as verify
from crm_pipeline.firestore.documents import CUSTOMERS
from crm_pipeline.firestore.mirror import MirrorSettings, sync_mirror
from crm_pipeline.firestore.verify import check_mirror_consistency, diff_sorted_ids
from crm_pipeline_tests.firestore.seed import customer_id, seed_customers

FAST = MirrorSettings(batch_size=10, threads=2, backoff_seconds=0.01)


class Tracked:
    """An ascending id stream that records how many ids were read from it."""

    def __init__(self, numbers: Iterator[int]) -> None:
        self.numbers = numbers
        self.read = 0

    def __iter__(self) -> Iterator[str]:
        for n in self.numbers:
            self.read += 1
            yield f"{n:08d}"


def test_the_diff_reads_each_stream_only_one_id_ahead_of_its_output() -> None:
    size = 200_000
    expected = Tracked(n for n in range(size) if n % 7)  # Firestore lacks every 7th
    actual = Tracked(n for n in range(size) if n % 11)  # and has every 11th we lack
    outputs = 0
    for kind, cid in diff_sorted_ids(expected, actual):
        outputs += 1
        n = int(cid)
        assert kind == ("extra" if n % 7 == 0 else "missing")
        # what was read so far reaches barely past the id just reported: nothing materialised
        assert expected.read <= n - n // 7 + 2, (kind, cid, expected.read)
        assert actual.read <= n - n // 11 + 2, (kind, cid, actual.read)
    both = size // 77 + 1  # multiples of 77 are in neither stream
    assert outputs == (size // 7 + 1 - both) + (size // 11 + 1 - both)


@settings(max_examples=200, deadline=None)
@given(
    expected=st.sets(st.text("0123456789abcdef-", min_size=1, max_size=6)),
    actual=st.sets(st.text("0123456789abcdef-", min_size=1, max_size=6)),
)
def test_the_diff_equals_the_set_differences(expected: set[str], actual: set[str]) -> None:
    out = list(diff_sorted_ids(iter(sorted(expected)), iter(sorted(actual))))
    assert [cid for kind, cid in out if kind == "missing"] == sorted(expected - actual)
    assert [cid for kind, cid in out if kind == "extra"] == sorted(actual - expected)


def test_a_stream_out_of_order_is_refused_not_misdiffed() -> None:
    with pytest.raises(ValueError, match="not ascending"):
        list(diff_sorted_ids(iter(["a", "c", "b"]), iter(["a"])))


def test_missing_and_extra_documents_are_found_from_the_streams(
    clean_db: sa.Engine, firestore_client: firestore.Client, monkeypatch
) -> None:
    size = 30
    seed_customers(clean_db, size)
    sync_mirror(clean_db, firestore_client, FAST)
    customers = firestore_client.collection(CUSTOMERS)
    # both id streams come in the order the merge needs, PostgreSQL's and the emulator's
    ids = list(verify._live_ids_in_order(clean_db))
    assert ids == sorted(ids) and customer_id(1) in ids and len(ids) == size
    assert list(verify._firestore_ids_in_order(firestore_client)) == ids

    gone = [ids[0], ids[17], ids[-1]]
    for cid in gone:
        firestore_client.recursive_delete(customers.document(cid))
    strays = ["0-stray", "5-stray", "a-stray", "zz-stray"]  # counts differ: the diff runs
    for stray in strays:
        customers.document(stray).set({"name": "stray"})
    monkeypatch.setattr(verify, "_ID_PAGE", 4)  # several cursor fetches
    monkeypatch.setattr(verify, "_GROUP_PAGE", 4)  # and several pages of Firestore ids

    report = check_mirror_consistency(clean_db, firestore_client, sample=5)
    assert report.sampled and not report.ok
    assert report.missing == sorted(gone) and report.extra == strays

    monkeypatch.setattr(verify, "DRIFT_LIST_LIMIT", 1)  # the report's lists stay bounded too
    capped = check_mirror_consistency(clean_db, firestore_client, sample=5)
    assert capped.extra == strays[:1] and capped.extra_total == 4
    assert capped.as_metadata()["extra"] == 4 and capped.as_metadata()["missing"] == 3
