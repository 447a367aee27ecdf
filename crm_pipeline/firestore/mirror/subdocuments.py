"""Per-subdocument state of the history subcollections (`firestore_mirror_subdocuments`).

A customer whose history hash moved has its recorded (collection, id, md5) rows read and diffed
against what PostgreSQL builds now: only new or changed subdocuments are set, and recorded ones
no longer built are deleted. Rows are read only for those customers, so a no-change run never
touches this table.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from crm_pipeline.firestore.documents import CUSTOMERS
from crm_pipeline.firestore.history import HISTORY, History
from crm_pipeline.firestore.mirror.writer import FirestoreWrite

# (collection, doc_id) -> md5, or None when a write may have failed
Recorded = dict[tuple[str, str], bytes | None]

_LOAD = sa.text(
    """
    SELECT customer_id::text, collection, doc_id, content_hash
    FROM firestore_mirror_subdocuments WHERE customer_id = ANY(CAST(:ids AS uuid[]))
    """
)
_UPSERT = sa.text(
    """
    INSERT INTO firestore_mirror_subdocuments AS s (customer_id, collection, doc_id, content_hash)
    SELECT * FROM unnest(CAST(:customer_id AS uuid[]), CAST(:collection AS text[]),
                         CAST(:doc_id AS text[]), CAST(:content_hash AS bytea[]))
    ON CONFLICT (customer_id, collection, doc_id) DO UPDATE
        SET content_hash = excluded.content_hash
    """
)
_DELETE = sa.text(
    """
    DELETE FROM firestore_mirror_subdocuments s
    USING unnest(CAST(:customer_id AS uuid[]), CAST(:collection AS text[]),
                 CAST(:doc_id AS text[])) AS d(customer_id, collection, doc_id)
    WHERE s.customer_id = d.customer_id AND s.collection = d.collection AND s.doc_id = d.doc_id
    """
)
_DELETE_CUSTOMERS = sa.text(
    "DELETE FROM firestore_mirror_subdocuments WHERE customer_id = ANY(CAST(:ids AS uuid[]))"
)


def load_recorded(conn: sa.Connection, ids: Sequence[str]) -> dict[str, Recorded]:
    """The recorded history subdocuments of these customers."""
    recorded: dict[str, Recorded] = {cid: {} for cid in ids}
    if not ids:
        return recorded
    for cid, collection, doc_id, digest in conn.execute(_LOAD, {"ids": list(ids)}):
        recorded[cid][(collection, doc_id)] = bytes(digest) if digest is not None else None
    return recorded


def recorded_ids(recorded: Recorded) -> dict[str, list[str]]:
    """Recorded subdocument ids by collection (for deleting a customer's documents)."""
    ids: dict[str, list[str]] = {name: [] for name in HISTORY}
    for collection, doc_id in recorded:
        ids.setdefault(collection, []).append(doc_id)
    return ids


@dataclass
class HistoryDiff:
    """What one customer's history needs: the writes and the state rows they lead to."""

    history_hash: str
    writes: list[FirestoreWrite] = field(default_factory=list)
    written: list[tuple[str, str, bytes]] = field(default_factory=list)
    deleted: list[tuple[str, str]] = field(default_factory=list)


def diff_history(
    customer_id: str,
    history: History,
    history_hash: str,
    recorded: Recorded,
    extra: Mapping[str, Collection[str]] | None = None,
    force: bool = False,
) -> HistoryDiff:
    """Set new or changed subdocuments (all of them with `force`); delete recorded or `extra`
    (listed in Firestore) ids no longer built."""
    root = (CUSTOMERS, customer_id)
    diff = HistoryDiff(history_hash)
    for name in HISTORY:
        hashes = history.hashes[name]
        for doc_id, data in history.docs[name].items():
            digest = hashes[doc_id]
            if force or recorded.get((name, doc_id)) != digest:
                diff.writes.append(FirestoreWrite("set", (*root, name, doc_id), data))
                diff.written.append((name, doc_id, digest))
        stale = {doc_id for (collection, doc_id) in recorded if collection == name}
        stale.update((extra or {}).get(name, ()))
        for doc_id in sorted(stale - hashes.keys()):
            diff.writes.append(FirestoreWrite("delete", (*root, name, doc_id)))
            diff.deleted.append((name, doc_id))
    return diff


@dataclass
class SubdocumentBook:
    """Subdocument state rows of one batch (flushed in the batch's bookkeeping transaction)."""

    upserts: dict[str, list[Any]] = field(
        default_factory=lambda: (
            {k: [] for k in ("customer_id", "collection", "doc_id")} | {"content_hash": []}
        )
    )
    deletes: dict[str, list[Any]] = field(
        default_factory=lambda: {k: [] for k in ("customer_id", "collection", "doc_id")}
    )

    def record(self, customer_id: str, diff: HistoryDiff, ok: bool) -> None:
        """After a write: new hashes and removed rows; after a failure, the written ids with no
        hash (they may exist now, and must be rewritten) and the deleted ones kept."""
        for collection, doc_id, digest in diff.written:
            self.upserts["customer_id"].append(customer_id)
            self.upserts["collection"].append(collection)
            self.upserts["doc_id"].append(doc_id)
            self.upserts["content_hash"].append(digest if ok else None)
        if ok:
            for collection, doc_id in diff.deleted:
                self.deletes["customer_id"].append(customer_id)
                self.deletes["collection"].append(collection)
                self.deletes["doc_id"].append(doc_id)

    def flush(self, conn: sa.Connection, removed_customers: Iterable[str]) -> None:
        if self.upserts["customer_id"]:
            conn.execute(_UPSERT, self.upserts)
        if self.deletes["customer_id"]:
            conn.execute(_DELETE, self.deletes)
        removed = list(removed_customers)
        if removed:
            conn.execute(_DELETE_CUSTOMERS, {"ids": removed})
