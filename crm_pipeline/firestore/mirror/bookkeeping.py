"""Per-batch state (`firestore_mirror_state`, `firestore_mirror_subdocuments`) and
`customer_sync_logs` rows, one transaction."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa

from crm_pipeline.firestore.documents import (
    ADDRESSES,
    SUBCOLLECTIONS,
    CustomerDocument,
    is_customer_id,
)
from crm_pipeline.firestore.mirror.settings import MirrorSettings, MirrorSummary
from crm_pipeline.firestore.mirror.subdocuments import SubdocumentBook
from crm_pipeline.firestore.mirror.writer import (
    CustomerWrite,
    Operation,
    WriteOutcome,
    _retry_delay,
)
from crm_pipeline.pii import mask_optional


@dataclass
class _State:
    content_hash: str | None
    status: str
    retry_count: int
    next_attempt_at: datetime | None
    subdocuments: dict[str, list[str]]
    history_hash: str | None = None


_LOAD_STATE = sa.text(
    """
    SELECT customer_id::text, content_hash, status, retry_count, next_attempt_at,
           address_ids::text[], history_hash
    FROM firestore_mirror_state WHERE customer_id = ANY(CAST(:ids AS uuid[]))
    """
)
_UPSERT_STATE = sa.text(
    """
    INSERT INTO firestore_mirror_state AS s (
        customer_id, content_hash, history_hash, address_ids, mirrored_at, status,
        retry_count, last_error, next_attempt_at, updated_at)
    SELECT u.customer_id, u.content_hash, u.history_hash, CAST(u.address_ids AS bigint[]),
           CASE WHEN u.status = 'mirrored' THEN now() END, u.status, u.retry_count, u.last_error,
           now() + make_interval(secs => u.delay_s), now()
    FROM unnest(CAST(:customer_id AS uuid[]), CAST(:content_hash AS text[]),
                CAST(:history_hash AS text[]), CAST(:address_ids AS text[]),
                CAST(:status AS text[]), CAST(:retry_count AS int[]),
                CAST(:last_error AS text[]), CAST(:delay_s AS float8[]))
         AS u(customer_id, content_hash, history_hash, address_ids, status, retry_count,
              last_error, delay_s)
    ON CONFLICT (customer_id) DO UPDATE SET
        content_hash = excluded.content_hash,
        history_hash = excluded.history_hash,
        address_ids = excluded.address_ids,
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
            subdocuments={ADDRESSES: row[5] or []},
            history_hash=row[6],
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
                "history_hash",
                "address_ids",
                "status",
                "retry_count",
                "last_error",
                "delay_s",
            )
        }
    )
    removed: list[str] = field(default_factory=list)
    subdocuments: SubdocumentBook = field(default_factory=SubdocumentBook)
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
        subdocuments: Mapping[str, Collection[str]],
        status: str,
        retry_count: int = 0,
        last_error: str | None = None,
        delay_s: float = 0.0,
        history_hash: str | None = None,
    ) -> None:
        u = self.upserts
        u["customer_id"].append(customer_id)
        u["content_hash"].append(content_hash)
        u["history_hash"].append(history_hash)
        u["address_ids"].append(_pg_array(subdocuments.get(ADDRESSES, ())))
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
            self.subdocuments.flush(conn, self.removed)
            if self.logs["customer_id"]:
                conn.execute(_INSERT_LOGS, {**self.logs, "run_id": run_id})


def _snapshot(document: CustomerDocument | None) -> dict[str, Any] | None:
    if document is None:
        return None
    return {"customer": document.data, **document.subcollections()}


def _merge_ids(*groups: Mapping[str, Collection[str]]) -> dict[str, list[str]]:
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
        history_hash = item.history.history_hash if item.history else None
        if item.history is None and previous is not None:
            history_hash = previous.history_hash  # only the document was written
        if item.history is not None:
            book.subdocuments.record(item.customer_id, item.history, outcome.ok)
        if outcome.ok:
            summary.written += 1
            summary.documents_written += len(item.writes)
            book.state(
                item.customer_id,
                document.content_hash,
                new_ids,
                "mirrored",
                history_hash=history_hash,
            )
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
