"""The list-page query catalogue: indexed, documented, and answered by the emulator as by SQL.

A generated store is mirrored; every catalogue query runs in the emulator through the Python
client exactly as docs/firestore-mirror.md writes it, and the same question is asked of
PostgreSQL with SQL written here from the tables (not from the mirror's document query).
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter
from hypothesis import given
from hypothesis import strategies as st

from crm_pipeline.firestore.documents import CUSTOMERS
from crm_pipeline.firestore.emulator import clear_emulator
from crm_pipeline.firestore.mirror import MirrorSettings, sync_mirror
from crm_pipeline.firestore.queries import (
    CATALOGUE,
    FILTERS,
    PAGE_SIZE,
    ListQuery,
    catalogue_markdown,
    indexes_document,
    indexes_json,
)
from crm_pipeline.firestore.queryable import MAX_TOKEN_LENGTH, search_tokens
from crm_pipeline_tests.firestore.seed import seed_customers
from crm_pipeline_tests.fixtures.firestore import TEST_PROJECT
from crm_pipeline_tests.fixtures.postgres import truncate_all

ROOT = Path(__file__).resolve().parents[2]
CUSTOMERS_IN_STORE = 300

# Parameter values per filter: each matches some customers, some match many (paging matters).
VALUES: dict[str, tuple[str, ...]] = {
    "status": ("active", "vip", "inactive"),
    "segment": ("at_risk", "newsletter/fans"),
    "source": ("klaviyo", "shopify"),
    "tag": ("tag1", "vip-list"),
    "country": ("CA", "US"),
    "search": ("gr", "customer1", "surname12", "ada surname1"),
}

# The same questions in SQL, from the tables.
_LIVE = "c.deleted_at IS NULL AND c.merged_into IS NULL AND c.redacted_at IS NULL"
_DEFAULT_COUNTRY = """(SELECT a.country_code FROM customer_addresses a WHERE a.customer_id = c.id
    ORDER BY a.is_default DESC, (a.source = 'shopify') DESC, a.id LIMIT 1)"""
_SQL_FILTERS = {
    "status": "c.status = :value",
    "segment": "EXISTS (SELECT 1 FROM customer_segments s WHERE s.customer_id = c.id "
    "AND s.segment_name = :value)",
    "source": "EXISTS (SELECT 1 FROM customer_sources src WHERE src.customer_id = c.id "
    "AND src.deleted_at IS NULL AND src.source = :value)",
    "tag": ":value = ANY(c.tags)",
    "country": f"{_DEFAULT_COUNTRY} = :value",
    "search": "EXISTS (SELECT 1 FROM unnest(ARRAY[c.first_name, c.last_name, c.full_name, "
    "c.email]) AS f(v) WHERE left(lower(btrim(f.v)), length(:value)) = :value)",
}
# Firestore orders null below every number and timestamp, and breaks ties by document id in the
# direction of the last sort.
_SQL_SORTS = {
    "ltv": "round(m.lifetime_value, 2) DESC NULLS LAST",
    "last_order": "m.last_order_date DESC NULLS LAST",
    "churn_risk": "nullif(m.churn_probability, 'NaN') DESC NULLS LAST",
    "created": "c.created_at DESC",
}


def sql_ids(conn: sa.Connection, query: ListQuery, value: str | None) -> list[str]:
    where = _LIVE
    if query.filter is not None:
        where += " AND " + _SQL_FILTERS[query.filter.name]
    sql = (
        "SELECT c.id::text FROM customers c LEFT JOIN customer_metrics m ON m.customer_id = c.id "
        f"WHERE {where} ORDER BY {_SQL_SORTS[query.sort.name]}, c.id DESC LIMIT :limit"
    )  # clauses from the constant tables above; the value is bound
    return list(conn.execute(sa.text(sql), {"value": value, "limit": PAGE_SIZE}).scalars())


def firestore_ids(client: firestore.Client, query: ListQuery, value: str | None) -> list[str]:
    ref: Any = client.collection(CUSTOMERS)
    if query.filter is not None:
        op = {"==": "==", "array-contains": "array_contains"}[query.filter.op]
        ref = ref.where(filter=FieldFilter(query.filter.field, op, value))
    ref = ref.order_by(query.sort.field, direction=firestore.Query.DESCENDING).limit(PAGE_SIZE)
    return [snapshot.id for snapshot in ref.stream()]


def _search_value(value: str) -> str:
    return value.strip().lower()[:MAX_TOKEN_LENGTH]


@pytest.fixture(scope="module")
def mirrored_store(engine: sa.Engine, firestore_emulator: str) -> firestore.Client:
    """A generated store with varied countries, tags and null/missing metrics, mirrored."""
    truncate_all(engine)
    clear_emulator(firestore_emulator, TEST_PROJECT)
    seed_customers(engine, CUSTOMERS_IN_STORE)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE customer_addresses SET country_code = 'CA', country = 'Canada' "
                "WHERE customer_id IN (SELECT id FROM customers ORDER BY id LIMIT 60)"
            )
        )
        conn.execute(
            sa.text(
                "UPDATE customers SET tags = tags || ARRAY['vip-list'] "
                "WHERE id IN (SELECT id FROM customers ORDER BY email LIMIT 80)"
            )
        )
        conn.execute(
            sa.text(
                "UPDATE customer_metrics SET churn_probability = NULL "
                "WHERE customer_id IN (SELECT id FROM customers ORDER BY phone LIMIT 15)"
            )
        )
        conn.execute(
            sa.text(
                "DELETE FROM customer_metrics "
                "WHERE customer_id IN (SELECT id FROM customers ORDER BY phone DESC LIMIT 10)"
            )
        )
        conn.execute(
            sa.text(
                "UPDATE customers SET deleted_at = now() "
                "WHERE id IN (SELECT id FROM customers ORDER BY created_at LIMIT 5)"
            )
        )
    client = firestore.Client(project=TEST_PROJECT)
    summary = sync_mirror(engine, client, MirrorSettings(batch_size=100, threads=2))
    assert summary.failed == 0 and summary.written == CUSTOMERS_IN_STORE - 5
    return client


def _cases() -> list[tuple[ListQuery, str | None]]:
    cases: list[tuple[ListQuery, str | None]] = []
    for query in CATALOGUE:
        values = VALUES[query.filter.name] if query.filter is not None else (None,)
        cases.extend((query, value) for value in values)
    return cases


@pytest.mark.parametrize(
    ("query", "value"), _cases(), ids=lambda x: x.name if isinstance(x, ListQuery) else str(x)
)
def test_catalogue_query_answers_as_postgres(
    mirrored_store: firestore.Client, engine: sa.Engine, query: ListQuery, value: str | None
) -> None:
    if query.filter is not None and query.filter.name == "search":
        value = _search_value(value or "")
    with engine.connect() as conn:
        expected = sql_ids(conn, query, value)
    assert expected, "every case matches some customers, so the comparison means something"
    assert firestore_ids(mirrored_store, query, value) == expected


def test_every_filter_has_sql_and_values() -> None:
    assert {f.name for f in FILTERS} == set(_SQL_FILTERS) == set(VALUES)


def test_every_catalogue_query_has_an_index_entry() -> None:
    on_disk = json.loads((ROOT / "firestore.indexes.json").read_text())
    assert (ROOT / "firestore.indexes.json").read_text() == indexes_json()
    composite = [
        [(f["fieldPath"], f.get("order") or f.get("arrayConfig")) for f in index["fields"]]
        for index in on_disk["indexes"]
        if index["collectionGroup"] == CUSTOMERS and index["queryScope"] == "COLLECTION"
    ]
    single = {
        o["fieldPath"]
        for o in on_disk["fieldOverrides"]
        if o["collectionGroup"] == CUSTOMERS
        and {"order": "DESCENDING", "queryScope": "COLLECTION"} in o["indexes"]
    }
    for query in CATALOGUE:
        if query.filter is None:
            assert query.sort.field in single, query.name
            continue
        equality = "CONTAINS" if query.filter.op == "array-contains" else "ASCENDING"
        wanted = [(query.filter.field, equality), (query.sort.field, "DESCENDING")]
        assert wanted in composite, query.name
    assert len(on_disk["indexes"]) == len(indexes_document()["indexes"])


def test_the_doc_lists_the_catalogue() -> None:
    doc = (ROOT / "docs" / "firestore-mirror.md").read_text()
    assert catalogue_markdown() in doc
    for query in CATALOGUE:
        assert query.web_text() in doc


names = st.text(alphabet=string.ascii_letters + " .-'", max_size=40)


@given(first=names, last=names, local=st.text(alphabet=string.ascii_lowercase, max_size=30))
def test_search_tokens_are_prefixes_of_what_the_document_holds(
    first: str, last: str, local: str
) -> None:
    email = f"{local}@Example.com" if local else None
    full = " ".join(p for p in (first, last) if p) or None
    data = {"first_name": first, "last_name": last, "full_name": full, "email": email}
    tokens = search_tokens(data)
    held = [(v or "").strip().lower() for v in data.values()]
    for token in tokens:
        assert token and len(token) <= MAX_TOKEN_LENGTH
        assert any(h.startswith(token) for h in held)
    for value in held:
        for n in range(1, min(len(value), MAX_TOKEN_LENGTH) + 1):
            assert value[:n] in tokens
