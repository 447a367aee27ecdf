"""Send customers' writes through Firestore's BatchWrite RPC, in parallel, with retries.

BatchWrite is non-atomic and reports a status per write, so one bad document never fails its
neighbours; each customer's writes succeed or fail together for bookkeeping.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from google.api_core import exceptions as gexc
from google.api_core import retry as gretry
from google.cloud import firestore
from google.cloud.firestore_v1.types.firestore import BatchWriteResponse
from google.rpc import code_pb2

from crm_pipeline.firestore.documents import CUSTOMERS, CustomerDocument
from crm_pipeline.firestore.lost import ensure_emulator
from crm_pipeline.firestore.mirror.encoding import _BatchWriteRequest, write_protobuf
from crm_pipeline.firestore.mirror.settings import MirrorSettings

if TYPE_CHECKING:
    from crm_pipeline.firestore.mirror.subdocuments import HistoryDiff

Operation = Literal["upsert", "delete", "redact", "repair"]
# Decides, per customer id and attempt number (1-based), whether to make that write fail.
FailWrite = Callable[[str, int], bool]

MAX_BATCH_WRITES = 500  # Firestore's limit per commit / BatchWrite request
# A data error: retrying the same write cannot succeed.
_PERMANENT_CODES = frozenset({code_pb2.INVALID_ARGUMENT})
# The client library's own retry of BatchWrite (same codes and backoff). Its 60 s budget ignores
# the per-call timeout, so the writer bounds it by its `timeout` (60 s by default: unchanged);
# a shorter timeout then names a dead emulator after that long, not after a minute.
_BATCH_WRITE_RETRY = gretry.Retry(
    initial=0.1,
    maximum=60.0,
    multiplier=1.3,
    predicate=gretry.if_exception_type(
        gexc.Aborted, gexc.ResourceExhausted, gexc.ServiceUnavailable
    ),
)


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
    # the history subdocuments' part of `writes`, with the state rows it leads to
    history: HistoryDiff | None = None


@dataclass
class WriteOutcome:
    ok: bool
    attempts: int
    error: str | None = None


def customer_upsert(
    document: CustomerDocument,
    stale: Mapping[str, Collection[str]] | None = None,
    operation: Operation = "upsert",
    history: HistoryDiff | None = None,
    root: bool = True,
) -> CustomerWrite:
    """Set the document and its addresses, deleting addresses no longer in it (unless `root`
    is false: only the history changed), plus the history's writes."""
    path = (CUSTOMERS, document.customer_id)
    writes: list[FirestoreWrite] = []
    if root:
        data = dict(document.data)
        data["mirrored_at"] = firestore.SERVER_TIMESTAMP
        writes.append(FirestoreWrite("set", path, data, is_root=True))
        for name, docs in document.subcollections().items():
            writes.extend(
                FirestoreWrite("set", (*path, name, sub_id), sub) for sub_id, sub in docs.items()
            )
            for sub_id in (stale or {}).get(name, ()):
                if sub_id not in docs:
                    writes.append(FirestoreWrite("delete", (*path, name, sub_id)))
    if history is not None:
        writes.extend(history.writes)
    return CustomerWrite(document.customer_id, operation, writes, document, history)


def customer_delete(
    customer_id: str, subdocuments: dict[str, Collection[str]], operation: Operation = "delete"
) -> CustomerWrite:
    """Delete the document and the given subdocuments (Firestore never cascades)."""
    root = (CUSTOMERS, customer_id)
    writes = [FirestoreWrite("delete", root, is_root=True)]
    for name, ids in subdocuments.items():
        writes.extend(FirestoreWrite("delete", (*root, name, sub_id)) for sub_id in ids)
    return CustomerWrite(customer_id, operation, writes)


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

    def _commit(
        self, chunk: Sequence[tuple[CustomerWrite, Sequence[FirestoreWrite]]], attempt: int
    ) -> dict[str, tuple[int, str]]:
        # No public accessor for "projects/P/databases/D": the database id is private.
        database = self.client._database_string
        prefix = database + "/documents/"
        writes: list[Any] = []
        owners: list[str] = []
        errors: dict[str, tuple[int, str]] = {}
        for item, item_writes in chunk:
            inject = self.fail_write is not None and self.fail_write(item.customer_id, attempt)
            try:
                encoded = [write_protobuf(prefix, w, inject and w.is_root) for w in item_writes]
            except (TypeError, ValueError, OverflowError) as exc:
                # A value Firestore cannot hold: fail this customer, not the whole request.
                errors[item.customer_id] = (code_pb2.INVALID_ARGUMENT, f"unencodable: {exc}")
                continue
            writes.extend(encoded)
            owners.extend([item.customer_id] * len(encoded))
        if not writes:
            return errors
        request = _BatchWriteRequest.wrap(_BatchWriteRequest.pb()(database=database, writes=writes))
        try:
            # The public BulkWriter/WriteBatch re-encode every value through proto-plus (the cost
            # encoding.py avoids); only the private gapic client and metadata take our protobufs.
            response = self.client._firestore_api.batch_write(
                request=request,
                metadata=self.client._rpc_metadata,
                timeout=self.timeout,
                retry=_BATCH_WRITE_RETRY.with_timeout(self.timeout),
            )
        except (gexc.GoogleAPICallError, gexc.RetryError) as exc:
            ensure_emulator(self.client, exc)  # a dead emulator fails the sync, not each write
            status = getattr(exc, "grpc_status_code", None)
            code = status.value[0] if status is not None else code_pb2.UNAVAILABLE
            message = f"{type(exc).__name__}: {getattr(exc, 'message', exc)}"
            errors.update(dict.fromkeys(owners, (code, message)))
            return errors
        for owner, status in zip(owners, BatchWriteResponse.pb(response).status, strict=True):
            if status.code != code_pb2.OK and owner not in errors:
                errors[owner] = (
                    status.code,
                    f"{code_pb2.Code.Name(status.code)}: {status.message}",
                )
        return errors


def _chunk(
    items: Sequence[CustomerWrite], limit: int
) -> Iterator[list[tuple[CustomerWrite, Sequence[FirestoreWrite]]]]:
    """Group customers' writes into requests of at most `limit` writes. A customer with more
    (a long history) is split over several requests; it succeeds only if all of them do."""
    chunk: list[tuple[CustomerWrite, Sequence[FirestoreWrite]]] = []
    size = 0
    for item in items:
        for start in range(0, max(len(item.writes), 1), limit):
            part = item.writes[start : start + limit]
            if chunk and size + len(part) > limit:
                yield chunk
                chunk, size = [], 0
            chunk.append((item, part))
            size += len(part)
    if chunk:
        yield chunk


def _retry_delay(settings: MirrorSettings, failed_runs: int) -> float:
    delay = settings.retry_delay.total_seconds() * 2 ** max(0, failed_runs - 1)
    return min(delay, settings.max_retry_delay.total_seconds())
