"""Does Firestore hold what PostgreSQL says it should? Two sizes of the same question.

- `check_mirror_consistency`: the full comparison (full refresh, nightly, repair). Both id sets
  are streamed in order and diffed as a merge. Documents are compared a chunk of live ids at a
  time; their subdocuments come from one name-ordered, paginated collection-group stream per
  subcollection, merged with the live ids in order. Memory stays bounded on both sides (a chunk
  of ids, a page of subdocuments), and the emulator, which answers every query by scanning its
  whole database, runs about (subdocuments / page) queries, not one per chunk and subcollection.
- `verify_customers`: what an incremental or webhook run wrote, plus a small random sample, read
  by key (`get_all`; no query at all), so a run that changed one customer reads a few dozen
  documents, not the store.

Either catches a missing, extra or stale document among the ids it looks at. Only the full
comparison sees a subdocument nobody recorded (written by someone else): see `verify_customers`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from google.cloud import firestore
from google.cloud.firestore_v1.field_path import FieldPath

from crm_pipeline.firestore.documents import (
    ADDRESSES,
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
# ids per server-side cursor fetch of PostgreSQL's live ids
_ID_PAGE = 1_000
# drifted ids a report lists (each kind); a repair run fixes these, the next run the rest
DRIFT_LIST_LIMIT = 10_000
# customers compared at a time (one get_all of their documents, one history query)
_GET_CHUNK = 300
# document references per get_all request when reading subdocuments by key
_KEYS_PER_GET = 1_000
# documents per page of a name-ordered Firestore stream (customer ids, each subcollection group):
# each page is one emulator scan of the whole database, so pages are large; memory holds a page
_GROUP_PAGE = 20_000

_LIVE_COUNT = sa.text(f"SELECT count(*) FROM customers c WHERE {LIVE_CONDITION}")
_LIVE_IDS = sa.text(f"SELECT c.id::text FROM customers c WHERE {LIVE_CONDITION} ORDER BY c.id")
_SAMPLE_IDS = sa.text(
    f"SELECT c.id::text FROM customers c WHERE {LIVE_CONDITION} ORDER BY random() LIMIT :n"
)
# Every subdocument key the mirror recorded for these customers: history rows and address ids.
# Read by key, so one the mirror wrote and failed to delete is still found.
_RECORDED_KEYS = sa.text(
    """
    SELECT customer_id::text, collection, doc_id FROM firestore_mirror_subdocuments
    WHERE customer_id = ANY(CAST(:ids AS uuid[]))
    UNION ALL
    SELECT s.customer_id::text, :addresses, a::text
    FROM firestore_mirror_state s, unnest(s.address_ids) a
    WHERE s.customer_id = ANY(CAST(:ids AS uuid[]))
    """
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


def live_customer_count(engine: sa.Engine) -> int:
    """Customers PostgreSQL says the mirror should hold (one indexed count)."""
    with engine.connect() as conn:
        return int(conn.execute(_LIVE_COUNT).scalar_one())


def _firestore_count(client: firestore.Client) -> int:
    result = client.collection(CUSTOMERS).count().get()
    return int(result[0][0].value)


def _paged(query: Any, page: int) -> Iterator[Any]:
    """The snapshots of a name-ordered query, `page` per request with a cursor after the last:
    one query per page (on the emulator, one scan of its whole database), a page in memory.
    Each page is read whole before it is yielded, so no query stays open while the caller
    compares (a stream consumed over minutes would outlive its deadline)."""
    last = None
    while True:
        snaps = list((query if last is None else query.start_after(last)).limit(page).stream())
        yield from snaps
        if len(snaps) < page:
            return
        last = snaps[-1]


def _firestore_ids_in_order(client: firestore.Client) -> Iterator[str]:
    """Every customer document id, ascending, from a keys-only query ordered by name, a page of
    `_GROUP_PAGE` at a time. Ids with only subcollections left (orphans) have no document: the
    full check finds them in its subdocument streams (`_report_orphans`)."""
    query = client.collection(CUSTOMERS).select([FieldPath.document_id()]).order_by("__name__")
    for snap in _paged(query, _GROUP_PAGE):
        yield snap.id


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


class _GroupStream:
    """One subcollection's documents under `customers`, ascending by name (parent id, then id),
    read a page of `_GROUP_PAGE` at a time with a cursor after the last one: one query per
    page, and at most a page in memory."""

    def __init__(self, client: firestore.Client, name: str) -> None:
        self.read = 0
        self.docs = self._documents(client, name)
        self.head: tuple[str, str, dict[str, Any]] | None = next(self.docs, None)

    def _documents(
        self, client: firestore.Client, name: str
    ) -> Iterator[tuple[str, str, dict[str, Any]]]:
        for snap in _paged(client.collection_group(name).order_by("__name__"), _GROUP_PAGE):
            self.read += 1
            parent = snap.reference.parent.parent
            if parent is not None and parent.parent.id == CUSTOMERS:
                yield parent.id, snap.id, snap.to_dict() or {}

    def take_below(self, upper: str | None) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """The documents whose parent id is below `upper` (all of them when None)."""
        while self.head is not None and (upper is None or self.head[0] < upper):
            yield self.head
            self.head = next(self.docs, None)


def _subdocs_in_range(
    streams: dict[str, _GroupStream], chunk: Sequence[str], upper: str | None
) -> tuple[dict[str, Subdocs], set[str]]:
    """The subdocuments of the customers in `chunk` (ascending, contiguous live ids): what each
    stream holds below `upper`; and the other parent ids met there (not live: `_report_orphans`)."""
    grouped: dict[str, Subdocs] = {cid: {n: {} for n in SUBCOLLECTIONS} for cid in chunk}
    strays: set[str] = set()
    for name, stream in streams.items():
        for parent, doc_id, data in stream.take_below(upper):
            if parent in grouped:
                grouped[parent][name][doc_id] = data
            else:
                strays.add(parent)
    return grouped, strays


def _report_orphans(client: firestore.Client, strays: set[str], report: ConsistencyReport) -> None:
    """Ids that are not live but have subdocuments: extra. Those with a document the id diff
    already reported; those without (orphans) only show up here. A point read tells them apart."""
    if not strays:
        return
    customers = client.collection(CUSTOMERS)
    snaps = client.get_all([customers.document(cid) for cid in sorted(strays)])
    for cid in sorted(snap.id for snap in snaps if not snap.exists):
        report.add("extra", cid)


def _subdocs_by_key(
    client: firestore.Client,
    keys: dict[str, set[tuple[str, str]]],
    pool: ThreadPoolExecutor,
) -> tuple[dict[str, Subdocs], int]:
    """Read the given (collection, id) subdocuments of each customer by key: point reads, which
    the emulator answers without scanning. Returns those that exist and how many they are."""
    customers = client.collection(CUSTOMERS)
    refs = [
        customers.document(cid).collection(name).document(doc_id)
        for cid, wanted in keys.items()
        for name, doc_id in sorted(wanted)
    ]
    batches = [refs[i : i + _KEYS_PER_GET] for i in range(0, len(refs), _KEYS_PER_GET)]
    found: dict[str, Subdocs] = {cid: {n: {} for n in SUBCOLLECTIONS} for cid in keys}
    read = 0
    for snaps in pool.map(lambda batch: list(client.get_all(batch)), batches):
        for snap in snaps:
            if not snap.exists:
                continue
            read += 1
            parent = snap.reference.parent
            found[parent.parent.id][parent.id][snap.id] = snap.to_dict() or {}
    return found, read


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
    others must have no document and no subdocuments.

    `subs=None` reads the subdocuments by key: those PostgreSQL builds now and those the mirror
    recorded (`firestore_mirror_subdocuments`, `firestore_mirror_state.address_ids`). A missing,
    changed or undeleted one is seen; one nobody recorded is not (see `verify_customers`).

    `diffed`: the id diff already ran, so it reported live ids without a document as missing,
    and documents of ids gone from PostgreSQL as extra (once each, here not again).
    """
    with engine.connect() as conn:
        documents = {d.customer_id: d for d in fetch_customer_documents(conn, chunk)}
        built = fetch_history(conn, documents)
        recorded = (
            []
            if subs is not None
            else conn.execute(_RECORDED_KEYS, {"ids": list(chunk), "addresses": ADDRESSES}).all()
        )
    expected = {cid: document.content_hash for cid, document in documents.items()}
    histories = {cid: history_digest(history.docs) for cid, history in built.items()}
    refs = [client.collection(CUSTOMERS).document(cid) for cid in chunk]
    snaps = {snap.id: snap for snap in client.get_all(refs)}
    report.documents_read += sum(snap.exists for snap in snaps.values())
    if subs is None:
        keys: dict[str, set[tuple[str, str]]] = {cid: set() for cid in chunk}
        for cid, document in documents.items():
            keys[cid].update((ADDRESSES, address_id) for address_id in document.addresses)
        for cid, history in built.items():
            keys[cid].update((name, i) for name, docs in history.docs.items() for i in docs)
        for cid, name, doc_id in recorded:
            keys[cid].add((name, doc_id))
        subs, read = _subdocs_by_key(client, keys, pool)
        report.documents_read += read
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
            if not diffed:  # the id diff lists documents only, so it reported this one
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

    `sample=None` compares every customer, streaming (full refresh, nightly, repair), and sees
    every subdocument, recorded or not; an int compares a random sample of that size by key (as
    `verify_customers` does), and diffs the id sets only when the counts differ.
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
        streams = {name: _GroupStream(client, name) for name in SUBCOLLECTIONS}
        for chunk, upper in _chunks_with_next(_live_ids_in_order(engine), _GET_CHUNK):
            subs, strays = _subdocs_in_range(streams, chunk, upper)
            _report_orphans(client, strays, report)
            _compare_chunk(engine, client, chunk, report, subs, pool, diffed)
            report.checked += len(chunk)
        # subdocuments after the last live id (or of a store with none)
        _report_orphans(client, _subdocs_in_range(streams, [], None)[1], report)
        report.documents_read += sum(stream.read for stream in streams.values())
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
    """Compare only `ids` plus `sample` random live customers, reading by key only: their
    documents, and the subdocuments PostgreSQL builds now plus those the mirror recorded in its
    state tables (so one it wrote and failed to delete is found). No query, no count, no id
    listing: on the emulator every query scans the whole database, a key read does not.

    A live id without its document is missing, a gone id with a document or a recorded
    subdocument is extra, a differing one (a field, a missing, changed or undeleted subdocument)
    mismatched. Not seen: a subdocument nobody recorded (written into Firestore by someone else)
    under a checked customer; the full check (`check_mirror_consistency`) finds those."""
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
