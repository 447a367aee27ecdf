"""What every loader shares: one transaction per prefetched chunk, validation, quarantine."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import nullcontext
from datetime import UTC, datetime
from itertools import islice
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from crm_pipeline.db.bulk_indexes import deferred_indexes
from crm_pipeline.ingest.bad_records import Unreadable, json_problem, value_problem
from crm_pipeline.ingest.quarantine import quarantine
from crm_pipeline.ingest.report import LoadReport
from crm_pipeline.pii import mask_pii
from crm_pipeline.prefetch import prefetch

if TYPE_CHECKING:  # pandas and pandera load with the first validation, not the code location
    import pandas as pd
    import pandera.pandas as pa

CHUNK_SIZE = 10_000

_MAX_TS = datetime(2200, 1, 1, tzinfo=UTC)


def chunked(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def prefetched_chunks(
    items: Iterable[Any], size: int, prepare: Callable[[list[Any]], list[Any]] | None = None
) -> Iterator[list[Any]]:
    """Chunks of `items` built (and `prepare`d) by a background thread while the caller merges
    the previous one: pulling, mapping and encoding are Python work, the merge is PostgreSQL
    work the caller waits on with the interpreter lock released."""
    chunks = chunked(items, size)
    if prepare is not None:
        chunks = (prepare(chunk) for chunk in chunks)
    return prefetch(chunks, depth=2, name="crm-ingest-prefetch")


def clamp_ts(value: datetime | None) -> datetime | None:
    """pandas holds nanosecond timestamps up to 2262; far-future values only need to fail checks."""
    if value is None:
        return None
    return min(value, _MAX_TS) if value.year > 1700 else _MAX_TS.replace(year=1700)


# The columns the merge plans join and filter on. ANALYZE of only these is a fraction of a full
# ANALYZE (which detoasts every jsonb sample); autovacuum later gathers the rest for analysts.
PLANNER_COLUMNS = {
    "customers": (
        "id",
        "email_lowercase",
        "phone_normalized",
        "deleted_at",
        "merged_into",
        "redacted_at",
    ),
    "customer_sources": ("customer_id", "source", "external_id", "deleted_at"),
    "customer_addresses": ("source", "external_id", "source_external_id"),
    "orders": ("source", "external_id", "customer_external_id", "customer_id"),
    "order_line_items": ("order_id", "external_id"),
    "customer_activities": ("source", "external_id", "customer_id"),
}


def refresh_statistics(
    conn: sa.Connection, table: str, loaded: int, also: tuple[str, ...] = ()
) -> None:
    """ANALYZE while a load has grown `table` past twice what its statistics say.

    A fresh table has no statistics and the merge plans go quadratic without them; analysing
    on every chunk would cost more than the merge. Doubling keeps it to log2(rows) analyses.
    """
    estimate = conn.execute(
        sa.text("SELECT greatest(reltuples, 0) FROM pg_class WHERE oid = CAST(:t AS regclass)"),
        {"t": table},
    ).scalar_one()
    if loaded > 1000 and estimate * 2 < loaded:
        targets = ", ".join(f"{t} ({', '.join(PLANNER_COLUMNS[t])})" for t in (table, *also))
        conn.exec_driver_sql(f"ANALYZE {targets}")  # names from code


def _storable_problem(record: Any) -> str | None:
    """Why a mapped record cannot be written (its raw record holds what PostgreSQL refuses).
    Records decoded in a worker carry their JSON, already checked there."""
    raw = getattr(record, "raw", None)
    if raw is None and getattr(record, "raw_json", None) is not None:
        return json_problem(record.raw_json)
    return value_problem(raw)


class Loader:
    """Base of the record loaders; subclasses set the kind and schema and merge one chunk.

    Each chunk commits on its own (rolled back under `dry_run`), so a run that dies halfway
    keeps whole chunks and a re-run converges.
    """

    record_kind: str
    report_kind: str
    # tables whose search/analyst indexes an initial load may defer (db/bulk_indexes.py)
    index_tables: tuple[str, ...] = ()
    schema_factory: Callable[[datetime], pa.DataFrameSchema]
    default_chunk_size = CHUNK_SIZE

    def __init__(
        self,
        engine: sa.Engine,
        *,
        origin: str,
        origin_detail: str | None = None,
        run_id: str | None = None,
        dry_run: bool = False,
        defer_indexes: bool = False,
        now: datetime | None = None,
    ) -> None:
        self.engine = engine
        self.origin = origin
        self.origin_detail = origin_detail
        self.run_id = run_id
        self.dry_run = dry_run
        self.defer_indexes = defer_indexes and not dry_run
        self.schema = type(self).schema_factory(now or datetime.now(UTC))
        self.report = LoadReport(kind=self.report_kind)
        # the reasons quarantined by the latest `load()` call alone (a webhook delivery's error
        # names its own record's reasons, not the run's)
        self.load_quarantined: Counter[str] = Counter()
        # webhook deliveries: their quarantine rows commit on this engine in a transaction of
        # their own (they outlive the delivery's rollback) and name the delivery
        self.quarantine_engine: sa.Engine | None = None
        self.webhook_event_id: int | None = None

    @classmethod
    def pull_options(cls, *, reconcile_run_id: str | None, observed_at: datetime) -> dict[str, Any]:
        """Constructor options of this loader for an API pull, beyond the common ones: the
        pull loop (defs/common.py `load_pull`) asks the loader rather than naming loaders.
        `reconcile_run_id` is set when the pull is a full one that reconciles deletions;
        `observed_at` is when the pull started reading. Most loaders need neither."""
        return {}

    def load(self, records: Iterable[Any], chunk_size: int | None = None) -> LoadReport:
        """Load every record; `defer_indexes` lets an initial backfill build indexes at the end."""
        self.load_quarantined = Counter()
        tables = self.index_tables if self.defer_indexes else ()
        with deferred_indexes(self.engine, tables) if tables else nullcontext([]) as deferred:
            self.report.deferred_indexes = len(deferred)
            size = chunk_size or self.default_chunk_size
            for chunk, unreadable in prefetched_chunks(records, size, self._screen):
                with self.engine.begin() as conn:
                    if unreadable:
                        self._quarantine_unreadable(conn, unreadable)
                    if chunk:
                        self._load_chunk(conn, chunk)
                    if self.dry_run:
                        conn.rollback()
        return self.report

    def _screen(self, chunk: list[Any]) -> tuple[list[Any], list[Unreadable]]:
        """Set aside what cannot load (unreadable input, NUL characters, text that was not
        UTF-8), then `_prepare` the rest; in the producer thread."""
        good: list[Any] = []
        bad: list[Unreadable] = []
        for record in chunk:
            if isinstance(record, Unreadable):
                bad.append(record)
                continue
            problem = _storable_problem(record)
            if problem is None:
                good.append(record)
            else:
                raw = record.source_record() if hasattr(record, "source_record") else record.raw
                bad.append(Unreadable(record.source, record.external_id, raw, [problem]))
        return (self._prepare(good) if good else good), bad

    def _prepare(self, chunk: list[Any]) -> list[Any]:
        """Per-record work that needs no database, done in the producer thread; a hook."""
        return chunk

    def _quarantine_unreadable(self, conn: sa.Connection, unreadable: list[Unreadable]) -> None:
        self.report.received += len(unreadable)
        by_source: dict[str | None, list[tuple[str | None, dict[str, Any], list[str]]]] = {}
        for u in unreadable:
            by_source.setdefault(u.source, []).append((u.external_id, u.record, u.reasons))
        for source, rows in by_source.items():
            self._quarantine(conn, source, rows)

    def _load_chunk(self, conn: sa.Connection, chunk: list[Any]) -> None:
        raise NotImplementedError

    def _validate(self, chunk: list[Any], frame: pd.DataFrame) -> dict[int, list[str]]:
        """Count the chunk and return the schema failures by row position."""
        self.report.received += len(chunk)
        from crm_pipeline.schemas.validate import validate_frame

        return validate_frame(self.schema, frame)

    def _quarantine(
        self,
        conn: sa.Connection,
        source: str | None,
        rejected: Sequence[tuple[str | None, dict[str, Any], list[str]]],
    ) -> None:
        """Keep rejected (external_id, record, reasons) rows and count them by (masked) reason."""
        if not rejected:
            return
        rejected = [(ext, rec, [mask_pii(r) for r in reasons]) for ext, rec, reasons in rejected]
        self.report.quarantined_records += len(rejected)
        for _, _, reasons in rejected:
            self.report.quarantined.update(reasons)
            self.load_quarantined.update(reasons)
        with self.quarantine_engine.begin() if self.quarantine_engine else nullcontext(conn) as qc:
            quarantine(
                qc,
                origin=self.origin,
                source=source,
                record_kind=self.record_kind,
                rows=rejected,
                origin_detail=self.origin_detail,
                run_id=self.run_id,
                webhook_event_id=self.webhook_event_id,
            )
