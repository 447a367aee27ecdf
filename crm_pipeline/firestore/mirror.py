# Over 500 lines on purpose (for now): writing, wire encoding, per-batch state and verification
# share the private _State/_Bookkeeping types and SQL of one sync; the natural split is
# mirror/{writer,state,sync,verify}.py, left for its own change so this refactor moves no logic.
"""Keep the admin app's Firestore read model in step with PostgreSQL, incrementally by content.

A run walks live customers in keyset batches, builds their documents in SQL
(crm_pipeline.firestore.documents), and writes only those whose content hash differs from the one
recorded in `firestore_mirror_state`. Customers soft-deleted, merged or redacted lose their
document and subcollections. State and `customer_sync_logs` rows are committed per batch, so a
crashed first sync resumes cheaply: already-mirrored customers hash equal and are skipped.

Writes go through Firestore's non-atomic BatchWrite RPC (500 writes per request, several requests
in parallel), which reports a status per write, so one bad document never fails its neighbours.
Failed customers are retried with backoff inside the run, then left `status='failed'` with a
`next_attempt_at` for a later run.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson
import sqlalchemy as sa
from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1.types import common as common_types
from google.cloud.firestore_v1.types import document as document_types
from google.cloud.firestore_v1.types import firestore as firestore_types
from google.cloud.firestore_v1.types import write as write_types
from google.protobuf import timestamp_pb2
from google.rpc import code_pb2

from crm_pipeline.firestore.documents import (
    ACTIVITIES,
    ADDRESSES,
    CUSTOMERS,
    LIVE_CONDITION,
    ORDERS,
    SEGMENTS,
    SUBCOLLECTIONS,
    CustomerDocument,
    fetch_customer_batch,
    fetch_customer_documents,
    fetch_dashboard_documents,
    is_customer_id,
)
from crm_pipeline.firestore.lost import ensure_emulator
from crm_pipeline.firestore.verify import ConsistencyReport as ConsistencyReport
from crm_pipeline.firestore.verify import check_mirror_consistency as check_mirror_consistency
from crm_pipeline.firestore.verify import diff_sorted_ids as diff_sorted_ids
from crm_pipeline.pii import mask_optional
from crm_pipeline.prefetch import prefetch

log = logging.getLogger(__name__)

Operation = Literal["upsert", "delete", "redact", "repair"]
# Decides, per customer id and attempt number (1-based), whether to make that write fail.
FailWrite = Callable[[str, int], bool]

MAX_BATCH_WRITES = 500  # Firestore's limit per commit / BatchWrite request
# A precondition no document can meet: used to make injected failures real server rejections.
_IMPOSSIBLE_UPDATE_TIME = datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# A data error: retrying the same write cannot succeed.
_PERMANENT_CODES = frozenset({code_pb2.INVALID_ARGUMENT})


@dataclass
class MirrorSettings:
    """Tuning knobs of a mirror run; the defaults suit a 1M-customer first sync."""

    batch_size: int = 5000
    threads: int = 4
    max_attempts: int = 3
    backoff_seconds: float = 0.25
    retry_delay: timedelta = timedelta(minutes=1)
    max_retry_delay: timedelta = timedelta(hours=1)


@dataclass
class MirrorSummary:
    """What a run did; customers are counted once each, documents include subdocuments."""

    run_id: str
    considered: int = 0
    written: int = 0
    unchanged: int = 0
    deleted: int = 0
    failed: int = 0
    deferred: int = 0
    retried: int = 0
    documents_written: int = 0
    seconds: float = 0.0
    failed_ids: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def merge(self, other: MirrorSummary) -> None:
        """Add a batch's counts (batches run two at a time, hence the lock)."""
        with self._lock:
            for name in (
                "considered",
                "written",
                "unchanged",
                "deleted",
                "failed",
                "deferred",
                "retried",
                "documents_written",
            ):
                setattr(self, name, getattr(self, name) + getattr(other, name))
            self.failed_ids.extend(other.failed_ids)

    @property
    def docs_per_s(self) -> float:
        """Firestore document writes (including subcollections and deletes) per second."""
        return self.documents_written / self.seconds if self.seconds > 0 else 0.0

    @property
    def customers_per_s(self) -> float:
        return (self.written + self.deleted) / self.seconds if self.seconds > 0 else 0.0

    def as_metadata(self) -> dict[str, float | int]:
        return {
            "considered": self.considered,
            "written": self.written,
            "unchanged": self.unchanged,
            "deleted": self.deleted,
            "failed": self.failed,
            "deferred": self.deferred,
            "documents_written": self.documents_written,
            "docs_per_s": round(self.docs_per_s, 1),
            "seconds": round(self.seconds, 2),
        }


# ----------------------------------------------------------------------------- writing
@dataclass
class FirestoreWrite:
    """One set or delete of a document at `path` (collection, id, collection, id, ...)."""

    kind: Literal["set", "delete"]
    path: tuple[str, ...]
    data: dict[str, Any] | None = None
    is_root: bool = False


@dataclass
class CustomerWrite:
    """All Firestore writes for one customer; they succeed or fail together for bookkeeping."""

    customer_id: str
    operation: Operation
    writes: list[FirestoreWrite]
    document: CustomerDocument | None = None


@dataclass
class WriteOutcome:
    ok: bool
    attempts: int
    error: str | None = None


def customer_upsert(
    document: CustomerDocument,
    stale: dict[str, Collection[str]] | None = None,
    operation: Operation = "upsert",
) -> CustomerWrite:
    """Set the document and its subdocuments; delete subdocuments no longer in it."""
    root = (CUSTOMERS, document.customer_id)
    data = dict(document.data)
    data["mirrored_at"] = firestore.SERVER_TIMESTAMP
    writes = [FirestoreWrite("set", root, data, is_root=True)]
    for name, docs in document.subcollections().items():
        writes.extend(
            FirestoreWrite("set", (*root, name, sub_id), sub) for sub_id, sub in docs.items()
        )
        for sub_id in (stale or {}).get(name, ()):
            if sub_id not in docs:
                writes.append(FirestoreWrite("delete", (*root, name, sub_id)))
    return CustomerWrite(document.customer_id, operation, writes, document)


def customer_delete(
    customer_id: str, subdocuments: dict[str, Collection[str]], operation: Operation = "delete"
) -> CustomerWrite:
    """Delete the document and the given subdocuments (Firestore never cascades)."""
    root = (CUSTOMERS, customer_id)
    writes = [FirestoreWrite("delete", root, is_root=True)]
    for name, ids in subdocuments.items():
        writes.extend(FirestoreWrite("delete", (*root, name, sub_id)) for sub_id in ids)
    return CustomerWrite(customer_id, operation, writes)


# ---------------------------------------------------------------------- wire encoding
# The client's own WriteBatch.set() builds proto-plus wrappers value by value, which costs about
# 160 us per document and made Python, not Firestore, the bottleneck of a first sync. We encode
# straight into the generated (upb, C) protobuf classes and send the request through the
# client's own gapic API object, channel, metadata and retry policy.
_Value = document_types.Value.pb()
_MapValue = document_types.MapValue.pb()
_ArrayValue = document_types.ArrayValue.pb()
_Document = document_types.Document.pb()
_WritePb = write_types.Write.pb()
_FieldTransform = write_types.DocumentTransform.FieldTransform.pb()
_Precondition = common_types.Precondition.pb()
_TimestampPb = timestamp_pb2.Timestamp
_BatchWriteRequest = firestore_types.BatchWriteRequest
_REQUEST_TIME = write_types.DocumentTransform.FieldTransform.ServerValue.REQUEST_TIME
_NULL = _Value(null_value=0)


def _timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    if value.tzinfo is None:
        raise TypeError("naive datetime in a mirror document; timestamps must be UTC-aware")
    delta = value - _EPOCH
    seconds = delta.days * 86400 + delta.seconds
    return _TimestampPb(seconds=seconds, nanos=delta.microseconds * 1000)


def encode_value(value: Any) -> Any:
    """A Python value as a Firestore `Value` protobuf (the types a mirror document holds)."""
    kind = type(value)
    if value is None:
        return _NULL
    if kind is str:
        return _Value(string_value=value)
    if kind is bool:
        return _Value(boolean_value=value)
    if kind is int:
        return _Value(integer_value=value)
    if kind is float:
        return _Value(double_value=value)
    if kind is dict:
        return _Value(map_value=_MapValue(fields=encode_fields(value)))
    if kind is list:
        return _Value(array_value=_ArrayValue(values=[encode_value(v) for v in value]))
    if isinstance(value, datetime):
        return _Value(timestamp_value=_timestamp(value))
    raise TypeError(f"cannot store {kind.__name__} in a mirror document")


def encode_fields(data: dict[str, Any]) -> dict[str, Any]:
    return {key: encode_value(item) for key, item in data.items()}


def write_protobuf(prefix: str, write: FirestoreWrite, fail: bool) -> Any:
    """The `Write` protobuf for a set (server timestamps become transforms) or delete.

    `prefix` is `projects/P/databases/D/documents/`; `fail` adds a precondition no document
    meets (failure injection through the real server).
    """
    name = prefix + "/".join(write.path)
    precondition = _Precondition(update_time=_timestamp(_IMPOSSIBLE_UPDATE_TIME)) if fail else None
    if write.kind == "delete":
        return _WritePb(delete=name, current_document=precondition)
    data = dict(write.data or {})
    transforms = [
        _FieldTransform(field_path=key, set_to_server_value=_REQUEST_TIME)
        for key in [k for k, v in data.items() if v is firestore.SERVER_TIMESTAMP]
    ]
    for transform in transforms:
        del data[transform.field_path]
    return _WritePb(
        update=_Document(name=name, fields=encode_fields(data)),
        update_transforms=transforms,
        current_document=precondition,
    )


class FirestoreWriter:
    """Writes CustomerWrites in BatchWrite requests of up to 500, several in parallel, with retry.

    `fail_write` injects failures for tests and drills: the chosen customer's root write is sent
    with a precondition the server always rejects, so the failure travels the real client path.
    """

    def __init__(
        self,
        client: firestore.Client,
        threads: int = 4,
        max_attempts: int = 3,
        backoff_seconds: float = 0.25,
        fail_write: FailWrite | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.client = client
        self.timeout = timeout
        self.threads = max(1, threads)
        self.max_attempts = max(1, max_attempts)
        self.backoff_seconds = backoff_seconds
        self.fail_write = fail_write
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="firestore-write")

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
        """Run read calls (listing subcollections) on the writer's threads."""
        return list(self._pool.map(fn, items))

    def __enter__(self) -> FirestoreWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, items: Sequence[CustomerWrite]) -> dict[str, WriteOutcome]:
        """Write everything, retrying failed customers; returns an outcome per customer id."""
        outcomes: dict[str, WriteOutcome] = {}
        pending = list(items)
        attempt = 0
        while pending:
            attempt += 1
            if attempt > 1:
                delay = self.backoff_seconds * 2 ** (attempt - 2)
                time.sleep(delay * (0.5 + random.random()))
            errors = self._write_once(pending, attempt)
            retry: list[CustomerWrite] = []
            for item in pending:
                error = errors.get(item.customer_id)
                if error is None:
                    outcomes[item.customer_id] = WriteOutcome(True, attempt)
                    continue
                permanent = error[0] in _PERMANENT_CODES
                outcomes[item.customer_id] = WriteOutcome(False, attempt, error[1])
                if not permanent and attempt < self.max_attempts:
                    retry.append(item)
            pending = retry
        return outcomes

    def _write_once(
        self, items: Sequence[CustomerWrite], attempt: int
    ) -> dict[str, tuple[int, str]]:
        chunks = list(_chunk(items, MAX_BATCH_WRITES))
        errors: dict[str, tuple[int, str]] = {}
        for chunk_errors in self._pool.map(lambda c: self._commit(c, attempt), chunks):
            errors.update(chunk_errors)
        return errors

    def _commit(self, chunk: Sequence[CustomerWrite], attempt: int) -> dict[str, tuple[int, str]]:
        prefix = self.client._database_string + "/documents/"
        writes: list[Any] = []
        owners: list[str] = []
        errors: dict[str, tuple[int, str]] = {}
        for item in chunk:
            inject = self.fail_write is not None and self.fail_write(item.customer_id, attempt)
            try:
                encoded = [write_protobuf(prefix, w, inject and w.is_root) for w in item.writes]
            except (TypeError, ValueError, OverflowError) as exc:
                # A value Firestore cannot hold: fail this customer, not the whole request.
                errors[item.customer_id] = (code_pb2.INVALID_ARGUMENT, f"unencodable: {exc}")
                continue
            writes.extend(encoded)
            owners.extend([item.customer_id] * len(encoded))
        if not writes:
            return errors
        request = _BatchWriteRequest.wrap(
            _BatchWriteRequest.pb()(database=self.client._database_string, writes=writes)
        )
        try:
            response = self.client._firestore_api.batch_write(
                request=request, metadata=self.client._rpc_metadata, timeout=self.timeout
            )
        except (gexc.GoogleAPICallError, gexc.RetryError) as exc:
            ensure_emulator(self.client, exc)  # a dead emulator fails the sync, not each write
            status = getattr(exc, "grpc_status_code", None)
            code = status.value[0] if status is not None else code_pb2.UNAVAILABLE
            message = f"{type(exc).__name__}: {getattr(exc, 'message', exc)}"
            errors.update(dict.fromkeys(owners, (code, message)))
            return errors
        for owner, status in zip(owners, response._pb.status, strict=True):
            if status.code != code_pb2.OK and owner not in errors:
                errors[owner] = (
                    status.code,
                    f"{code_pb2.Code.Name(status.code)}: {status.message}",
                )
        return errors


def _chunk(items: Sequence[CustomerWrite], limit: int) -> Iterator[list[CustomerWrite]]:
    """Group whole customers into requests of at most `limit` writes."""
    chunk: list[CustomerWrite] = []
    size = 0
    for item in items:
        n = len(item.writes)
        if chunk and size + n > limit:
            yield chunk
            chunk, size = [], 0
        chunk.append(item)
        size += n
    if chunk:
        yield chunk


# ------------------------------------------------------------------------------- state
@dataclass
class _State:
    content_hash: str | None
    status: str
    retry_count: int
    next_attempt_at: datetime | None
    subdocuments: dict[str, list[str]]


_LOAD_STATE = sa.text(
    """
    SELECT customer_id::text, content_hash, status, retry_count, next_attempt_at,
           address_ids::text[], order_ids::text[], activity_ids::text[]
    FROM firestore_mirror_state WHERE customer_id = ANY(CAST(:ids AS uuid[]))
    """
)
_UPSERT_STATE = sa.text(
    """
    INSERT INTO firestore_mirror_state AS s (
        customer_id, content_hash, address_ids, order_ids, activity_ids, mirrored_at, status,
        retry_count, last_error, next_attempt_at, updated_at)
    SELECT u.customer_id, u.content_hash,
           CAST(u.address_ids AS bigint[]), CAST(u.order_ids AS uuid[]),
           CAST(u.activity_ids AS bigint[]),
           CASE WHEN u.status = 'mirrored' THEN now() END, u.status, u.retry_count, u.last_error,
           now() + make_interval(secs => u.delay_s), now()
    FROM unnest(CAST(:customer_id AS uuid[]), CAST(:content_hash AS text[]),
                CAST(:address_ids AS text[]), CAST(:order_ids AS text[]),
                CAST(:activity_ids AS text[]), CAST(:status AS text[]),
                CAST(:retry_count AS int[]), CAST(:last_error AS text[]),
                CAST(:delay_s AS float8[]))
         AS u(customer_id, content_hash, address_ids, order_ids, activity_ids, status,
              retry_count, last_error, delay_s)
    ON CONFLICT (customer_id) DO UPDATE SET
        content_hash = excluded.content_hash,
        address_ids = excluded.address_ids,
        order_ids = excluded.order_ids,
        activity_ids = excluded.activity_ids,
        mirrored_at = coalesce(excluded.mirrored_at, s.mirrored_at),
        status = excluded.status,
        retry_count = excluded.retry_count,
        last_error = excluded.last_error,
        next_attempt_at = CASE WHEN excluded.status = 'failed' THEN excluded.next_attempt_at END,
        updated_at = now()
    """
)
_DELETE_STATE = sa.text(
    "DELETE FROM firestore_mirror_state WHERE customer_id = ANY(CAST(:ids AS uuid[]))"
)
_INSERT_LOGS = sa.text(
    """
    INSERT INTO customer_sync_logs (customer_id, run_id, operation, postgres_status,
                                    firestore_status, error_message, retry_count, data_snapshot)
    SELECT u.customer_id, :run_id, u.operation, 'success', u.firestore_status, u.error_message,
           u.retry_count, CAST(u.data_snapshot AS jsonb)
    FROM unnest(CAST(:customer_id AS uuid[]), CAST(:operation AS text[]),
                CAST(:firestore_status AS text[]), CAST(:error_message AS text[]),
                CAST(:retry_count AS int[]), CAST(:data_snapshot AS text[]))
         AS u(customer_id, operation, firestore_status, error_message, retry_count, data_snapshot)
    """
)
_DEAD_CUSTOMERS = sa.text(
    """
    SELECT s.customer_id::text,
           CASE WHEN c.redacted_at IS NOT NULL THEN 'redact' ELSE 'delete' END,
           s.status, s.retry_count, s.next_attempt_at,
           s.address_ids::text[], s.order_ids::text[], s.activity_ids::text[]
    FROM firestore_mirror_state s
    LEFT JOIN customers c ON c.id = s.customer_id
    WHERE (c.id IS NULL OR NOT ("""
    + LIVE_CONDITION
    + """))
      AND s.customer_id > CAST(:after AS uuid)
    ORDER BY s.customer_id
    LIMIT :limit
    """
)
_FIRST_BATCH = 250
_NIL_UUID = "00000000-0000-0000-0000-000000000000"


def _pg_array(values: Iterable[str]) -> str:
    """A text[] literal of ids (ids are digits or uuids: no quoting needed)."""
    return "{" + ",".join(values) + "}"


def _load_state(conn: sa.Connection, ids: Sequence[str]) -> dict[str, _State]:
    states: dict[str, _State] = {}
    for row in conn.execute(_LOAD_STATE, {"ids": list(ids)}):
        states[row[0]] = _State(
            content_hash=row[1],
            status=row[2],
            retry_count=row[3],
            next_attempt_at=row[4],
            subdocuments={ADDRESSES: row[5] or [], ORDERS: row[6] or [], ACTIVITIES: row[7] or []},
        )
    return states


@dataclass
class _Bookkeeping:
    """State and log rows of one batch, written in one transaction."""

    upserts: dict[str, list[Any]] = field(
        default_factory=lambda: {
            k: []
            for k in (
                "customer_id",
                "content_hash",
                "address_ids",
                "order_ids",
                "activity_ids",
                "status",
                "retry_count",
                "last_error",
                "delay_s",
            )
        }
    )
    removed: list[str] = field(default_factory=list)
    logs: dict[str, list[Any]] = field(
        default_factory=lambda: {
            k: []
            for k in (
                "customer_id",
                "operation",
                "firestore_status",
                "error_message",
                "retry_count",
                "data_snapshot",
            )
        }
    )

    def state(
        self,
        customer_id: str,
        content_hash: str | None,
        subdocuments: dict[str, Collection[str]],
        status: str,
        retry_count: int = 0,
        last_error: str | None = None,
        delay_s: float = 0.0,
    ) -> None:
        u = self.upserts
        u["customer_id"].append(customer_id)
        u["content_hash"].append(content_hash)
        u["address_ids"].append(_pg_array(subdocuments.get(ADDRESSES, ())))
        u["order_ids"].append(_pg_array(subdocuments.get(ORDERS, ())))
        u["activity_ids"].append(_pg_array(subdocuments.get(ACTIVITIES, ())))
        u["status"].append(status)
        u["retry_count"].append(retry_count)
        u["last_error"].append(mask_optional(last_error))
        u["delay_s"].append(delay_s)

    def log(
        self,
        customer_id: str,
        operation: Operation,
        outcome: WriteOutcome,
        snapshot: dict[str, Any] | None = None,
    ) -> None:
        """One log row; the snapshot is kept only for failures (keeps the table small)."""
        known = is_customer_id(customer_id)
        if not known:
            # A stray document removed by a repair: its id can only go in the snapshot.
            snapshot = {"document_id": customer_id, **(snapshot or {})}
        keep_snapshot = snapshot is not None and (not outcome.ok or not known)
        g = self.logs
        g["customer_id"].append(customer_id if known else None)
        g["operation"].append(operation)
        g["firestore_status"].append("success" if outcome.ok else "failed")
        g["error_message"].append(None if outcome.ok else mask_optional(outcome.error))
        g["retry_count"].append(outcome.attempts - 1)
        g["data_snapshot"].append(
            orjson.dumps(snapshot, default=str).decode() if keep_snapshot else None
        )

    def flush(self, engine: sa.Engine, run_id: str) -> None:
        with engine.begin() as conn:
            if self.upserts["customer_id"]:
                conn.execute(_UPSERT_STATE, self.upserts)
            if self.removed:
                conn.execute(_DELETE_STATE, {"ids": self.removed})
            if self.logs["customer_id"]:
                conn.execute(_INSERT_LOGS, {**self.logs, "run_id": run_id})


def _retry_delay(settings: MirrorSettings, failed_runs: int) -> float:
    delay = settings.retry_delay.total_seconds() * 2 ** max(0, failed_runs - 1)
    return min(delay, settings.max_retry_delay.total_seconds())


def _snapshot(document: CustomerDocument | None) -> dict[str, Any] | None:
    if document is None:
        return None
    return {"customer": document.data, **document.subcollections()}


def _merge_ids(*groups: dict[str, Collection[str]]) -> dict[str, list[str]]:
    merged: dict[str, list[str]] = {}
    for name in SUBCOLLECTIONS:
        seen: dict[str, None] = {}
        for group in groups:
            seen.update(dict.fromkeys(group.get(name, ())))
        merged[name] = list(seen)
    return merged


def _record_upserts(
    book: _Bookkeeping,
    summary: MirrorSummary,
    items: Sequence[CustomerWrite],
    outcomes: dict[str, WriteOutcome],
    states: dict[str, _State],
    settings: MirrorSettings,
) -> None:
    for item in items:
        document = item.document
        assert document is not None
        outcome = outcomes[item.customer_id]
        previous = states.get(item.customer_id)
        new_ids = {name: list(docs) for name, docs in document.subcollections().items()}
        if outcome.attempts > 1:
            summary.retried += 1
        if outcome.ok:
            summary.written += 1
            summary.documents_written += len(item.writes)
            book.state(item.customer_id, document.content_hash, new_ids, "mirrored")
        else:
            summary.failed += 1
            summary.failed_ids.append(item.customer_id)
            failed_runs = (previous.retry_count if previous else 0) + 1
            # Keep every id that may now exist so the next successful write cleans up.
            known = _merge_ids(previous.subdocuments if previous else {}, new_ids)
            book.state(
                item.customer_id,
                None,
                known,
                "failed",
                failed_runs,
                outcome.error,
                _retry_delay(settings, failed_runs),
            )
        book.log(item.customer_id, item.operation, outcome, _snapshot(document))


def _batches(engine: sa.Engine, batch_size: int) -> Iterator[list[CustomerDocument]]:
    """Keyset batches of live customers' documents."""
    after: str | None = None
    # Start small and double: the writers get work quickly instead of idling while the first
    # full batch is built.
    limit = min(batch_size, _FIRST_BATCH)
    with engine.connect() as conn:
        while True:
            batch = fetch_customer_batch(conn, after, limit)
            limit = min(batch_size, limit * 2)
            conn.commit()  # end the read transaction: no snapshot held for hours
            if not batch:
                return
            yield batch
            after = batch[-1].customer_id


def sync_mirror(
    engine: sa.Engine,
    client: firestore.Client,
    settings: MirrorSettings | None = None,
    fail_write: FailWrite | None = None,
    run_id: str | None = None,
) -> MirrorSummary:
    """Mirror every live customer whose document changed and delete the documents of the rest."""
    ensure_emulator(client)
    settings = settings or MirrorSettings()
    summary = MirrorSummary(run_id=run_id or f"mirror-{uuid.uuid4().hex[:12]}")
    started = time.perf_counter()
    with (
        FirestoreWriter(
            client, settings.threads, settings.max_attempts, settings.backoff_seconds, fail_write
        ) as writer,
        ThreadPoolExecutor(2, thread_name_prefix="firestore-mirror-batch") as batches,
    ):
        # Two batches in flight: one batch's last requests and bookkeeping overlap the next
        # batch's writes, so the write threads never idle at batch boundaries.
        in_flight: deque[Future[None]] = deque()
        batches_ahead = prefetch(
            _batches(engine, settings.batch_size), depth=1, name="firestore-mirror-fetch"
        )
        for batch in batches_ahead:
            in_flight.append(batches.submit(_sync_batch, engine, writer, batch, settings, summary))
            if len(in_flight) >= 2:
                in_flight.popleft().result()
        while in_flight:
            in_flight.popleft().result()
        _delete_dead(engine, client, writer, settings, summary)
    summary.seconds = time.perf_counter() - started
    log.info(
        "firestore mirror %s: %d considered, %d written, %d unchanged, %d deleted, %d failed "
        "(%.0f docs/s)",
        summary.run_id,
        summary.considered,
        summary.written,
        summary.unchanged,
        summary.deleted,
        summary.failed,
        summary.docs_per_s,
    )
    return summary


def _sync_batch(
    engine: sa.Engine,
    writer: FirestoreWriter,
    batch: Sequence[CustomerDocument],
    settings: MirrorSettings,
    summary: MirrorSummary,
    operation: Operation = "upsert",
    force: bool = False,
    extra_stale: dict[str, dict[str, list[str]]] | None = None,
) -> None:
    total, summary = summary, MirrorSummary(run_id=summary.run_id)
    try:
        _sync_batch_into(engine, writer, batch, settings, summary, operation, force, extra_stale)
    finally:
        total.merge(summary)


def _sync_batch_into(
    engine: sa.Engine,
    writer: FirestoreWriter,
    batch: Sequence[CustomerDocument],
    settings: MirrorSettings,
    summary: MirrorSummary,
    operation: Operation,
    force: bool,
    extra_stale: dict[str, dict[str, list[str]]] | None,
) -> None:
    summary.considered += len(batch)
    with engine.connect() as conn:
        states = _load_state(conn, [d.customer_id for d in batch])
    now = datetime.now(UTC)
    items: list[CustomerWrite] = []
    for document in batch:
        state = states.get(document.customer_id)
        if state is not None and not force:
            if state.status == "mirrored" and state.content_hash == document.content_hash:
                summary.unchanged += 1
                continue
            if state.status == "failed" and state.next_attempt_at and state.next_attempt_at > now:
                summary.deferred += 1
                continue
        stale = _merge_ids(
            state.subdocuments if state else {},
            (extra_stale or {}).get(document.customer_id, {}),
        )
        items.append(customer_upsert(document, stale, operation))
    if not items:
        return
    outcomes = writer.write(items)
    book = _Bookkeeping()
    _record_upserts(book, summary, items, outcomes, states, settings)
    book.flush(engine, summary.run_id)


def list_subdocuments(client: firestore.Client, customer_id: str) -> dict[str, list[str]]:
    """Ids in the customer's subcollections as Firestore has them (for deletes and repairs)."""
    root = client.collection(CUSTOMERS).document(customer_id)
    return {
        name: [ref.id for ref in root.collection(name).list_documents(page_size=300)]
        for name in SUBCOLLECTIONS
    }


def _delete_dead(
    engine: sa.Engine,
    client: firestore.Client,
    writer: FirestoreWriter,
    settings: MirrorSettings,
    summary: MirrorSummary,
) -> None:
    """Delete documents of customers no longer live (soft-deleted, merged, redacted, gone)."""
    after = _NIL_UUID
    now = datetime.now(UTC)
    while True:
        with engine.connect() as conn:
            rows = conn.execute(
                _DEAD_CUSTOMERS, {"after": after, "limit": settings.batch_size}
            ).all()
        if not rows:
            return
        after = rows[-1][0]
        due = [r for r in rows if not (r[2] == "failed" and r[4] is not None and r[4] > now)]
        summary.deferred += len(rows) - len(due)
        # Listing catches subdocuments written outside the recorded ids (e.g. a partial write).
        listed = dict(
            zip(
                [r[0] for r in due],
                writer.map(lambda r: list_subdocuments(client, r[0]), due),
                strict=True,
            )
        )
        items: list[CustomerWrite] = []
        states: dict[str, _State] = {}
        for cid, operation, status, retry_count, next_at, a_ids, o_ids, x_ids in due:
            recorded = {ADDRESSES: a_ids or [], ORDERS: o_ids or [], ACTIVITIES: x_ids or []}
            states[cid] = _State(None, status, retry_count, next_at, recorded)
            items.append(customer_delete(cid, _merge_ids(recorded, listed[cid]), operation))
        summary.considered += len(items)
        outcomes = writer.write(items) if items else {}
        book = _Bookkeeping()
        for item in items:
            outcome = outcomes[item.customer_id]
            if outcome.ok:
                summary.deleted += 1
                summary.documents_written += len(item.writes)
                book.removed.append(item.customer_id)
            else:
                summary.failed += 1
                summary.failed_ids.append(item.customer_id)
                state = states[item.customer_id]
                failed_runs = state.retry_count + 1
                book.state(
                    item.customer_id,
                    None,
                    state.subdocuments,
                    "failed",
                    failed_runs,
                    outcome.error,
                    _retry_delay(settings, failed_runs),
                )
            book.log(item.customer_id, item.operation, outcome, {"operation": item.operation})
        book.flush(engine, summary.run_id)


def repair_mirror(
    engine: sa.Engine,
    client: firestore.Client,
    ids: Iterable[str],
    settings: MirrorSettings | None = None,
) -> MirrorSummary:
    """Re-mirror the given customers from PostgreSQL whatever the recorded state says.

    Live customers are rewritten and any subdocument Firestore has beyond the current ones is
    deleted; ids that are not live customers have their document and subcollections deleted.
    """
    settings = settings or MirrorSettings()
    summary = MirrorSummary(run_id=f"repair-{uuid.uuid4().hex[:12]}")
    started = time.perf_counter()
    id_list = sorted(set(ids))
    with FirestoreWriter(
        client, settings.threads, settings.max_attempts, settings.backoff_seconds
    ) as writer:
        for start in range(0, len(id_list), settings.batch_size):
            chunk = id_list[start : start + settings.batch_size]
            with engine.connect() as conn:
                documents = fetch_customer_documents(conn, chunk)
            listed = dict(
                zip(
                    chunk,
                    writer.map(lambda cid: list_subdocuments(client, cid), chunk),
                    strict=True,
                )
            )
            _sync_batch(engine, writer, documents, settings, summary, "repair", True, listed)
            live = {d.customer_id for d in documents}
            gone = [cid for cid in chunk if cid not in live]
            if gone:
                items = [customer_delete(cid, listed[cid], "repair") for cid in gone]
                summary.considered += len(items)
                outcomes = writer.write(items)
                book = _Bookkeeping()
                for item in items:
                    outcome = outcomes[item.customer_id]
                    if outcome.ok:
                        summary.deleted += 1
                        summary.documents_written += len(item.writes)
                        if is_customer_id(item.customer_id):
                            book.removed.append(item.customer_id)
                    else:
                        summary.failed += 1
                        summary.failed_ids.append(item.customer_id)
                    book.log(item.customer_id, "repair", outcome, {"operation": "delete"})
                book.flush(engine, summary.run_id)
    summary.seconds = time.perf_counter() - started
    return summary


# --------------------------------------------------------------------------- dashboard
@dataclass
class DashboardSummary:
    written: int
    deleted: int
    segments: int


def sync_dashboard(engine: sa.Engine, client: firestore.Client) -> DashboardSummary:
    """Write `stats/current` and `segments/{name}`; delete segment documents that went away."""
    with engine.connect() as conn:
        docs = fetch_dashboard_documents(conn)
    batch = client.batch()
    count = 0
    deleted = 0
    ops: list[tuple[str, dict[str, Any] | None]] = []
    for path, data in docs.items():
        ops.append((path, {**data, "updated_at": firestore.SERVER_TIMESTAMP}))
    existing = [ref.id for ref in client.collection(SEGMENTS).list_documents(page_size=300)]
    for doc_id in existing:
        if f"{SEGMENTS}/{doc_id}" not in docs:
            ops.append((f"{SEGMENTS}/{doc_id}", None))
            deleted += 1
    for path, data in ops:
        ref = client.document(path)
        if data is None:
            batch.delete(ref)
        else:
            batch.set(ref, data)
        count += 1
        if count % MAX_BATCH_WRITES == 0:
            batch.commit()
            batch = client.batch()
    if count % MAX_BATCH_WRITES:
        batch.commit()
    segments = sum(1 for path in docs if path.startswith(f"{SEGMENTS}/"))
    return DashboardSummary(written=len(docs), deleted=deleted, segments=segments)
