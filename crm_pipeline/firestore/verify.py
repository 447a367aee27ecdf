"""Does Firestore hold what PostgreSQL says it should? Two sizes of the same question.

- `check_mirror_consistency`: the full comparison (full refresh, nightly, repair). Both id sets
  are streamed in order and diffed as a merge, and documents are compared a chunk of live ids at
  a time, their subdocuments read by a collection-group query bounded to that chunk's id range.
  Memory stays bounded on both sides: nothing reads every document at once.
- `verify_customers`: what an incremental or webhook run wrote, plus a small random sample, so
  a run that changed one customer reads a few dozen documents, not the store.

Either catches a missing, extra or stale document among the ids it looks at.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from crm_pipeline.firestore.documents import (
    CUSTOMERS,
    LIVE_CONDITION,
    SUBCOLLECTIONS,
    fetch_customer_documents,
    firestore_content_hash,
    is_customer_id,
)
from crm_pipeline.firestore.history import fetch_history, history_digest

# random live customers a run-sized verification adds to the ones the run wrote
RUN_SAMPLE = 50
# ids per server-side cursor fetch and per Firestore ListDocuments page in the id diff
_ID_PAGE = 1_000
# drifted ids a report lists (each kind); a repair run fixes these, the next run the rest
DRIFT_LIST_LIMIT = 10_000
_GET_CHUNK = 300

_LIVE_COUNT = sa.text(f"SELECT count(*) FROM customers c WHERE {LIVE_CONDITION}")
_LIVE_IDS = sa.text(f"SELECT c.id::text FROM customers c WHERE {LIVE_CONDITION} ORDER BY c.id")
_SAMPLE_IDS = sa.text(
    f"SELECT c.id::text FROM customers c WHERE {LIVE_CONDITION} ORDER BY random() LIMIT :n"
)
_RUN_IDS = sa.text(
    "SELECT DISTINCT customer_id::text FROM customer_sync_logs "
    # the Klaviyo sync logs into the same table in the same run (target klaviyo)
    "WHERE run_id = :run_id AND customer_id IS NOT NULL AND target = 'firestore'"
)

Subdocs = dict[str, dict[str, dict[str, Any]]]


@dataclass
class ConsistencyReport:
    """Postgres vs Firestore: counts (full and sampled checks), and per checked customer
    whether the content matches."""

    postgres_count: int | None
    firestore_count: int | None
    checked: int
    sampled: bool
    # at most DRIFT_LIST_LIMIT ids each (memory stays bounded); the totals count them all
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    missing_total: int = 0
    extra_total: int = 0
    mismatched_total: int = 0
    # customer and subcollection documents read from Firestore by the content comparison
    documents_read: int = 0
    mode: str = "full"

    @property
    def ok(self) -> bool:
        return (
            self.postgres_count == self.firestore_count
            and not self.missing
            and not self.extra
            and not self.mismatched
        )

    @property
    def drifted_ids(self) -> list[str]:
        return sorted(set(self.missing) | set(self.extra) | set(self.mismatched))

    def add(self, kind: str, cid: str) -> None:
        """Record one drifted id, listing at most DRIFT_LIST_LIMIT of each kind."""
        ids: list[str] = getattr(self, kind)
        if len(ids) < DRIFT_LIST_LIMIT:
            ids.append(cid)
        setattr(self, f"{kind}_total", getattr(self, f"{kind}_total") + 1)

    def as_metadata(self) -> dict[str, Any]:
        counts = {
            "postgres_count": self.postgres_count,
            "firestore_count": self.firestore_count,
        }
        return {
            "mode": self.mode,
            **{k: v for k, v in counts.items() if v is not None},
            "checked": self.checked,
            "sampled": self.sampled,
            "documents_read": self.documents_read,
            "missing": max(self.missing_total, len(self.missing)),
            "extra": max(self.extra_total, len(self.extra)),
            "mismatched": max(self.mismatched_total, len(self.mismatched)),
            "drifted_ids_preview": ", ".join(self.drifted_ids[:20]),
        }


def _firestore_count(client: firestore.Client) -> int:
    result = client.collection(CUSTOMERS).count().get()
    return int(result[0][0].value)


def _firestore_ids_in_order(client: firestore.Client) -> Iterator[str]:
    """Every customer document id, ascending, a page at a time (ListDocuments orders by name).
    Ids that only have subcollections left are listed too (orphans count as extra)."""
    for ref in client.collection(CUSTOMERS).list_documents(page_size=_ID_PAGE):
        yield ref.id


def _live_ids_in_order(engine: sa.Engine) -> Iterator[str]:
    """Every live customer id, ascending, through a server-side cursor. uuid order is the order
    of their lowercase text, the order Firestore lists document ids in."""
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=_ID_PAGE).execute(_LIVE_IDS)
        yield from result.scalars()


def diff_sorted_ids(expected: Iterable[str], actual: Iterable[str]) -> Iterator[tuple[str, str]]:
    """Merge two ascending id streams: ("missing", id) for an id only `expected` has, ("extra",
    id) for one only `actual` has. Reads each stream one id ahead, so neither set is ever held
    whole; a stream out of order raises ValueError (its diff would be wrong)."""
    exp, act = iter(expected), iter(actual)
    e, a = _next_in_order(exp, None, "expected"), _next_in_order(act, None, "actual")
    while e is not None or a is not None:
        if a is None or (e is not None and e < a):
            yield "missing", e
            e = _next_in_order(exp, e, "expected")
        elif e is None or a < e:
            yield "extra", a
            a = _next_in_order(act, a, "actual")
        else:
            e = _next_in_order(exp, e, "expected")
            a = _next_in_order(act, a, "actual")


def _next_in_order(ids: Iterator[str], previous: str | None, name: str) -> str | None:
    value = next(ids, None)
    if value is not None and previous is not None and value <= previous:
        raise ValueError(f"{name} ids are not ascending: {value!r} after {previous!r}")
    return value


def _chunks_with_next(ids: Iterable[str], size: int) -> Iterator[tuple[list[str], str | None]]:
    """Consecutive chunks of an id stream, each with the id that follows it (None at the end)."""
    chunk: list[str] = []
    for cid in ids:
        if len(chunk) == size:
            yield chunk, cid
            chunk = []
        chunk.append(cid)
    if chunk:
        yield chunk, None


def _subdocs_in_range(
    client: firestore.Client, chunk: Sequence[str], upper: str | None
) -> tuple[dict[str, Subdocs], int]:
    """The subdocuments of the customers in `chunk` (ascending, contiguous live ids) through one
    collection-group query per subcollection bounded to [chunk[0], upper): a few RPCs per
    chunk, and never the whole group. Returns them with the number of documents read."""
    wanted = set(chunk)
    grouped: dict[str, Subdocs] = {cid: {n: {} for n in SUBCOLLECTIONS} for cid in chunk}
    read = 0
    customers = client.collection(CUSTOMERS)
    for name in SUBCOLLECTIONS:
        query = client.collection_group(name).where(
            filter=FieldFilter("__name__", ">=", customers.document(chunk[0]))
        )
        if upper is not None:
            query = query.where(filter=FieldFilter("__name__", "<", customers.document(upper)))
        for snap in query.stream():
            read += 1
            parent = snap.reference.parent.parent
            if parent is None or parent.parent.id != CUSTOMERS or parent.id not in wanted:
                continue  # an extra id's orphans between two live ids: the id diff reports it
            grouped[parent.id][name][snap.id] = snap.to_dict() or {}
    return grouped, read


def _subdocs_of(client: firestore.Client, customer_id: str) -> Subdocs:
    root = client.collection(CUSTOMERS).document(customer_id)
    return {
        name: {snap.id: snap.to_dict() or {} for snap in root.collection(name).stream()}
        for name in SUBCOLLECTIONS
    }


def _compare_chunk(
    engine: sa.Engine,
    client: firestore.Client,
    chunk: Sequence[str],
    report: ConsistencyReport,
    subs: dict[str, Subdocs] | None,
    pool: ThreadPoolExecutor,
    diffed: bool = False,
) -> None:
    """Compare one chunk of ids. Live ones must exist with the hash PostgreSQL builds now (both
    the stored `content_hash` and the one recomputed from fields and addresses) and with every
    order, activity and note as PostgreSQL builds them (compared by a digest of both sides); the
    others must have no document and no subdocuments. `subs=None` reads each id's subcollections.

    `diffed`: the id diff already ran, so it reported live ids with neither a document nor
    subdocuments as missing, and ids gone from PostgreSQL as extra (once each, here not again).
    """
    with engine.connect() as conn:
        expected = {d.customer_id: d.content_hash for d in fetch_customer_documents(conn, chunk)}
        built = fetch_history(conn, expected)
    histories = {cid: history_digest(history.docs) for cid, history in built.items()}
    refs = [client.collection(CUSTOMERS).document(cid) for cid in chunk]
    snaps = {snap.id: snap for snap in client.get_all(refs)}
    report.documents_read += len(chunk)
    if subs is None:
        subs = dict(zip(chunk, pool.map(lambda c: _subdocs_of(client, c), chunk), strict=True))
        report.documents_read += sum(len(d) for s in subs.values() for d in s.values())
    for cid in chunk:
        snap = snaps.get(cid)
        present = snap is not None and snap.exists
        children = subs.get(cid, {})
        orphans = any(children.values())
        if cid not in expected:
            if not diffed and (present or orphans):
                report.add("extra", cid)
            continue
        if not present:
            if orphans or not diffed:  # ListDocuments lists orphans' ids: the diff missed it
                report.add("missing", cid)
            continue
        assert snap is not None
        data = snap.to_dict() or {}
        full = {name: children.get(name, {}) for name in SUBCOLLECTIONS}
        recomputed = firestore_content_hash(data, full)
        if (
            data.get("content_hash") != expected[cid]
            or recomputed != expected[cid]
            or history_digest(full) != histories[cid]
        ):
            report.add("mismatched", cid)


def check_mirror_consistency(
    engine: sa.Engine,
    client: firestore.Client,
    sample: int | None = None,
    threads: int = 4,
) -> ConsistencyReport:
    """Compare Postgres documents with Firestore by count, ids and content hash.

    `sample=None` compares every customer, streaming (full refresh, nightly, repair); an int
    compares a random sample of that size, and diffs the id sets only when the counts differ.
    """
    with engine.connect() as conn:
        pg_count = int(conn.execute(_LIVE_COUNT).scalar_one())
        sample_ids = (
            None if sample is None else list(conn.execute(_SAMPLE_IDS, {"n": sample}).scalars())
        )
    fs_count = _firestore_count(client)
    full = sample_ids is None
    report = ConsistencyReport(
        pg_count, fs_count, 0, sampled=not full, mode="full" if full else "sample"
    )
    diffed = full or pg_count != fs_count
    if diffed:
        drift = diff_sorted_ids(_live_ids_in_order(engine), _firestore_ids_in_order(client))
        for kind, cid in drift:
            report.add(kind, cid)
    with ThreadPoolExecutor(max(1, threads)) as pool:
        if sample_ids is not None:
            for start in range(0, len(sample_ids), _GET_CHUNK):
                chunk = sample_ids[start : start + _GET_CHUNK]
                _compare_chunk(engine, client, chunk, report, None, pool, diffed)
                report.checked += len(chunk)
            return report
        for chunk, upper in _chunks_with_next(_live_ids_in_order(engine), _GET_CHUNK):
            subs, read = _subdocs_in_range(client, chunk, upper)
            report.documents_read += read
            _compare_chunk(engine, client, chunk, report, subs, pool, diffed)
            report.checked += len(chunk)
    return report


def ids_written_by_run(engine: sa.Engine, run_id: str) -> list[str]:
    """Customers a mirror run wrote or deleted (its customer_sync_logs rows, failures too)."""
    with engine.connect() as conn:
        return sorted(conn.execute(_RUN_IDS, {"run_id": run_id}).scalars())


def verify_customers(
    engine: sa.Engine,
    client: firestore.Client,
    ids: Iterable[str],
    sample: int = RUN_SAMPLE,
    threads: int = 4,
) -> ConsistencyReport:
    """Compare only `ids` plus `sample` random live customers: reads those documents and their
    subdocuments, nothing else (no counts, no id listing). A live id without its document is
    missing, a gone id with a document or subdocuments is extra, a differing one mismatched."""
    targets = {cid for cid in ids if is_customer_id(cid)}
    if sample > 0:
        with engine.connect() as conn:
            targets.update(conn.execute(_SAMPLE_IDS, {"n": sample}).scalars())
    check_ids = sorted(targets)
    report = ConsistencyReport(None, None, len(check_ids), sampled=True, mode="run")
    with ThreadPoolExecutor(max(1, threads)) as pool:
        for start in range(0, len(check_ids), _GET_CHUNK):
            _compare_chunk(
                engine, client, check_ids[start : start + _GET_CHUNK], report, None, pool
            )
    return report
