"""Search cursors: no SQL splicing, HMAC-signed under a key crm_analyst cannot read; fuzzing.

Item 2 of issue 11. The crafted cursor below spliced its query into SQL on the 0007 function
(division by zero evaluated from the search text) and the md5 "signature" was computable.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from crm_pipeline.analytics.metrics import compute_metrics
from crm_pipeline.analytics.search import FILTER_KEYS, SearchError, search
from crm_pipeline_tests.analytics.seed import AS_OF, seed_store

SORT_WORDS = ("score", "relevance", "full_name", "name", "email", "status", "customer_type",
              "created_at", "last_order_date", "total_orders", "lifetime_value",
              "churn_probability", "engagement_score")  # fmt: skip
#: What search_customers raises for bad input: its own errors with SQLSTATE 22023, never a
#: cast or syntax error from inside its statement (docs/search.md).
CLEAR_ERRORS = {"22023"}


@pytest.fixture(scope="module")
def store(engine: sa.Engine) -> Iterator[sa.Engine]:
    from crm_pipeline_tests.fixtures.postgres import truncate_all

    truncate_all(engine)
    seed_store(engine, customers=40, seed=5)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO customers (email, first_name, last_name) VALUES"
                " ('ann@bee.io', 'Ann', 'Bee'), ('dan@eff.io', 'Dan', 'Eff')"
            )
        )
    compute_metrics(engine, AS_OF)
    yield engine
    truncate_all(engine)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode().translate(str.maketrans("+/", "-_"))


def md5_cursor(query: str, sort: str, keys: list) -> str:
    """A cursor as 0007 signed it: md5 of (query|filters|sort), which anyone can compute."""
    signature = hashlib.md5(f"{query}|{{}}|{sort}".encode()).hexdigest()[:12]
    return _b64(json.dumps([signature, *keys]).encode())


def as_analyst(engine: sa.Engine, **kwargs) -> None:
    with engine.connect() as conn:
        conn.execute(sa.text("SET ROLE crm_analyst"))
        search(conn, **kwargs)


def test_crafted_cursor_does_not_splice_sql(store: sa.Engine) -> None:
    # 0007 put the cursor value into a quoted literal, then replaced '/*b*/' in the statement
    # with the matched-rows query: the query text's quotes then closed the literal and this
    # search text ran as SQL (here a division by zero; could be any expression)
    query = "|| (select 1/0)::text ||"
    cursor = md5_cursor(query, "email", ["/*b*/", "00000000-0000-0000-0000-000000000000"])
    with pytest.raises(SearchError, match="cursor"):
        search(store, query, sort="email", page_size=5, cursor=cursor)
    # the same text as a plain query is only data
    assert search(store, query, sort="email", page_size=5).rows == []


def test_forged_and_tampered_cursors_are_refused(store: sa.Engine) -> None:
    first = search(store, sort="email", page_size=5)
    assert first.next_cursor is not None
    last_key = first.rows[-1]
    # an md5-signed cursor for a real position (0007 accepted it)
    forged = md5_cursor("", "email", [last_key["email"], str(last_key["customer_id"])])
    with pytest.raises(SearchError, match="cursor"):
        search(store, sort="email", page_size=5, cursor=forged)
    # the genuine payload re-signed with a guessed key, or moved to another position
    payload_b64, mac_b64 = first.next_cursor.split(".")
    payload = base64.b64decode(payload_b64.translate(str.maketrans("-_", "+/")))
    for key in (b"", b"secret", hashlib.sha256(payload).digest()):
        guess = _b64(hmac.new(key, payload, hashlib.sha256).digest())
        with pytest.raises(SearchError, match="signature"):
            search(store, sort="email", page_size=5, cursor=f"{payload_b64}.{guess}")
    moved = json.loads(payload)
    moved[1] = "a"
    with pytest.raises(SearchError, match="signature"):
        search(
            store, sort="email", page_size=5, cursor=f"{_b64(json.dumps(moved).encode())}.{mac_b64}"
        )
    # a genuine cursor still pages, for the analyst too, and only for its own search
    second = search(store, sort="email", page_size=5, cursor=first.next_cursor)
    assert second.rows and second.rows[0]["customer_id"] not in {
        r["customer_id"] for r in first.rows
    }
    as_analyst(store, sort="email", page_size=5, cursor=first.next_cursor)
    with pytest.raises(SearchError, match="does not belong"):
        search(store, sort="-email", page_size=5, cursor=first.next_cursor)


def test_analyst_cannot_read_the_cursor_key(store: sa.Engine) -> None:
    forbidden = [
        "SELECT key FROM crm_private.search_cursor_key",
        "SELECT crm_private.hmac_sha256('\\x00'::bytea, '\\x00'::bytea)",
    ]
    for statement in forbidden:
        with store.connect() as conn:
            conn.execute(sa.text("SET ROLE crm_analyst"))
            with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
                conn.execute(sa.text(statement))
    with store.connect() as conn:
        key = conn.execute(sa.text("SELECT key FROM crm_private.search_cursor_key")).scalar_one()
    assert len(key) == 32


def test_rotating_the_key_invalidates_cursors(store: sa.Engine) -> None:
    before = search(store, sort="name", page_size=3).next_cursor
    with store.begin() as conn:  # as docs/search.md#cursor-signing says
        conn.execute(
            sa.text(
                "UPDATE crm_private.search_cursor_key SET key = sha256(convert_to("
                "gen_random_uuid()::text || gen_random_uuid()::text, 'UTF8')), created_at = now()"
            )
        )
    with pytest.raises(SearchError, match="signature"):
        search(store, sort="name", page_size=3, cursor=before)
    after = search(store, sort="name", page_size=3).next_cursor
    assert after != before and search(store, sort="name", page_size=3, cursor=after).rows


# ------------------------------------------------------------------------------ fuzzing
_text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30
)
_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | _text
    | st.sampled_from(["2024-01-31", "2024-13-45", "9999-12-31", "now", "-infinity"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=6,
)
#: A value each filter takes in a working search.
PLAUSIBLE = {
    "status": ["active", "vip"], "customer_type": "registered", "source": "shopify",
    "tags": "promo", "tags_any": ["promo", "b2b"], "created_from": "2023-06-01",
    "created_to": "2025-06-01T10:00:00Z", "last_order_from": "2023-01-01",
    "last_order_to": "2025-12-31", "country": "de", "attributes": {"plan": "gold"},
    "segment": "engagement:engaged", "min_lifetime_value": 10, "max_churn_probability": 0.9,
}  # fmt: skip
_plausible_filters = st.lists(st.sampled_from(FILTER_KEYS), max_size=2).map(
    lambda keys: {k: PLAUSIBLE[k] for k in keys}
)

_sort_item = st.tuples(st.sampled_from(["", "-", "+", "--"]), st.sampled_from(SORT_WORDS))
_sorts = st.lists(_sort_item, max_size=3).map(lambda items: ",".join(s + n for s, n in items))

#: Per argument: (usual values, odd values). An example makes at most one argument odd, so
#: most searches reach their rows and pages, and each odd value is tried on a working search.
ARGUMENTS = {
    "query": (
        st.sampled_from([None, None, "jon smth", "smith", "anna", "ann@bee.io", "o'brien", "''"]),
        _text | st.sampled_from(["%_\\", "/*b*/", "/*join*/", "555 1234", "@"]),
    ),
    "filters": (
        st.just({}) | _plausible_filters,
        st.dictionaries(st.sampled_from(FILTER_KEYS), _json, max_size=3)
        | st.dictionaries(_text, _json, max_size=2)
        | _json,
    ),
    "sort": (
        _sorts | st.none(),
        _text | _sorts.map(lambda s: s + ",x)") | _sorts.map(lambda s: s.replace(",", ";")),
    ),
    "page_size": (
        st.integers(1, 6),
        st.sampled_from([0, -1, 1000, 1001, -(2**31), 2**31 - 1]),
    ),
}


def _mutated(cursor: str, data: st.DataObject) -> str:
    kind = data.draw(st.sampled_from(["flip", "cut", "append", "md5", "text"]))
    if kind == "flip":
        at = data.draw(st.integers(0, len(cursor) - 1))
        return cursor[:at] + data.draw(st.sampled_from("A-_.=/+'")) + cursor[at + 1 :]
    if kind == "cut":
        return cursor[: data.draw(st.integers(0, len(cursor) - 1))]
    if kind == "append":
        return cursor + data.draw(_text)
    if kind == "md5":
        return md5_cursor(
            data.draw(_text), data.draw(_text), data.draw(st.lists(_json, max_size=4))
        )
    return data.draw(_text)


def _search_sql(conn: sa.Connection, args: dict, page_cursor: str | None) -> list:
    statement = sa.text("SELECT * FROM search_customers(:q, CAST(:f AS jsonb), :s, :n, :c)")
    params = {"q": args["query"], "f": json.dumps(args["filters"]), "s": args["sort"],
              "n": args["page_size"], "c": page_cursor}  # fmt: skip
    return conn.execute(statement, params).mappings().all()


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_fuzzed_arguments_give_only_clear_errors(store: sa.Engine, data: st.DataObject) -> None:
    odd = data.draw(st.sampled_from([None, None, "cursor", "cursor", *ARGUMENTS]))
    args = {name: data.draw(pair[name == odd]) for name, pair in ARGUMENTS.items()}
    with store.connect() as conn:
        conn.execute(sa.text("SET ROLE crm_analyst"))  # as analysts call it
        try:
            rows = _search_sql(conn, args, None)
            cursor = rows[-1]["next_cursor"] if rows else None
            if cursor is None and odd == "cursor":
                _search_sql(conn, args, _mutated("eyJhIjoxfQ.AAAA", data))
            elif cursor is not None and odd == "cursor":
                _search_sql(conn, args, _mutated(cursor, data))
            elif cursor is not None:
                after = _search_sql(conn, args, cursor)
                assert not {r["customer_id"] for r in after} & {r["customer_id"] for r in rows}
            event(f"ok, next page: {cursor is not None}, odd: {odd}")
        except sa.exc.DBAPIError as error:
            state = getattr(error.orig, "sqlstate", None)
            event(f"error {state}: {str(error.orig).split(chr(34))[0][:40]}")
            assert state in CLEAR_ERRORS, f"{state}: {error.orig}"
