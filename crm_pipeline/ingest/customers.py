# Over 500 lines on purpose: CustomerLoader's merge, the survivorship SQL and deletion
# reconciliation act on the same staging tables and identity rules inside one transaction per
# chunk; splitting them would spread one invariant (one live customer per person) over modules.
"""Load customer source records: validate, quarantine, resolve identity, merge, apply survivorship.

Each chunk is one transaction, so a run that dies halfway leaves whole chunks behind and a re-run
converges: unchanged records (same content hash) and stale ones (older `updated_at`) are skipped.
A soft-deleted record observed alive after its deletion comes back (`revive_sources`); a full
pull's missing records are soft-deleted only once the source confirms them gone
(`reconcile_deletions`).
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa

from crm_pipeline.db.copy import (
    copy_field,
    copy_json,
    copy_lines,
    create_temp_table,
    text_array,
)
from crm_pipeline.ingest.bad_records import Unreadable
from crm_pipeline.ingest.base import Loader, clamp_ts, refresh_statistics
from crm_pipeline.ingest.encoding import (
    ADDRESS_COLUMNS,
    NEW_CUSTOMER_COLUMNS,
    SOURCE_COLUMNS,
    address_dict,
    encoded,
)
from crm_pipeline.ingest.identity import Candidate, resolve
from crm_pipeline.ingest.source_state import SourceState, load_source, save_folded
from crm_pipeline.ingest.tombstones import Identity, any_tombstones, find_tombstoned
from crm_pipeline.mapping.records import CustomerRecord, content_hash

log = logging.getLogger(__name__)

_SOURCE_PRIORITY = "CASE s.source WHEN 'manual' THEN 0 WHEN 'shopify' THEN 1 ELSE 2 END"

if TYPE_CHECKING:  # pandas and pandera load with the first validation (fast starts)
    import pandas as pd
    import pandera.pandas as pa


def _schema(now: datetime | None = None) -> pa.DataFrameSchema:
    from crm_pipeline.schemas.records import customer_schema

    return customer_schema(now)


def _validation_frame(records: list[CustomerRecord]) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(
        {
            "external_id": pd.Series([r.external_id for r in records], dtype=object),
            "email": pd.Series([r.email for r in records], dtype=object),
            "source_updated_at": pd.to_datetime(
                [clamp_ts(r.source_updated_at) for r in records], utc=True
            ),
            "created_at": pd.to_datetime([clamp_ts(r.created_at) for r in records], utc=True),
        }
    )


class CustomerLoader(Loader):
    """Loads CustomerRecords of any source; one instance per run and origin."""

    record_kind = "customer"
    report_kind = "customers"
    index_tables = ("customers", "customer_addresses")
    schema_factory = staticmethod(_schema)

    def __init__(
        self,
        engine: sa.Engine,
        *,
        reconcile_run_id: str | None = None,
        observed_at: datetime | None = None,
        **options: Any,
    ) -> None:
        super().__init__(engine, **options)
        self.reconcile_run_id = reconcile_run_id
        # when the source was read (a pull's start); None: only a record's own updated_at counts
        self.observed_at = observed_at
        # encode in the producer thread while most records are new (an initial load); a re-pull
        # of known records only needs their hashes
        self._encode_ahead = True

    @classmethod
    def pull_options(cls, *, reconcile_run_id: str | None, observed_at: datetime) -> dict[str, Any]:
        """A pull records what it saw for the reconcile, and what it reads is alive as of its
        start (a deletion older than that is undone, see `observed_after`)."""
        return {"reconcile_run_id": reconcile_run_id, "observed_at": observed_at}

    def _prepare(self, chunk: list[CustomerRecord]) -> list[CustomerRecord]:
        """Runs in the producer thread, overlapping the previous chunk's merge."""
        if self._encode_ahead:
            for record in chunk:
                encoded(record)
        return chunk

    def _quarantine_unreadable(self, conn: sa.Connection, unreadable: list[Unreadable]) -> None:
        """A record quarantined for what it holds was still seen: a full pull's reconcile must
        not take it for deleted at the source."""
        super()._quarantine_unreadable(conn, unreadable)
        if self.reconcile_run_id:
            self._mark_seen(conn, [u for u in unreadable if u.source and u.external_id])

    # ------------------------------------------------------------------ one chunk
    def _load_chunk(self, conn: sa.Connection, chunk: list[CustomerRecord]) -> None:
        report = self.report
        failures = self._validate(chunk, _validation_frame(chunk))
        rejected = [
            (chunk[i].external_id, chunk[i].source_record(), reasons)
            for i, reasons in failures.items()
        ]
        self._quarantine(conn, chunk[0].source, rejected)
        if self.reconcile_run_id:
            self._mark_seen(conn, chunk)

        # newest record per (source, external_id) within the chunk
        latest: dict[tuple[str, str], CustomerRecord] = {}
        for i, record in enumerate(chunk):
            if i in failures:
                continue
            key = (record.source, record.external_id)
            held = latest.get(key)
            if held is None or (record.source_updated_at or datetime.min.replace(tzinfo=UTC)) >= (
                held.source_updated_at or datetime.min.replace(tzinfo=UTC)
            ):
                latest[key] = record
        report.duplicates += len(chunk) - len(failures) - len(latest)
        records = self._drop_redacted(conn, list(latest.values()))
        if not records:
            return

        existing = self._existing_links(conn, records)
        writes: list[tuple[CustomerRecord, str, str, bool]] = []  # record, customer, hash, new
        new_records: list[tuple[CustomerRecord, str]] = []
        stateful: list[CustomerRecord] = []  # known records carrying delta-webhook registers
        revived: list[str] = []  # external ids of soft-deleted records seen alive since
        for record in records:
            digest = (
                record.encoded.digest if record.encoded else content_hash(record.source_record())
            )
            link = existing.get((record.source, record.external_id))
            if link is None:
                new_records.append((record, digest))
                continue
            customer_id, old_hash, old_updated, deleted_at, redacted, has_state = link
            if redacted:
                report.skipped_redacted += 1
                continue
            if deleted_at is not None:
                if not observed_after(deleted_at, record.source_updated_at, self.observed_at):
                    report.unchanged += 1  # an observation from before the deletion
                    continue
                revived.append(record.external_id)
            stale = old_updated is not None and record.source_updated_at < old_updated
            if old_hash == digest or stale:
                report.unchanged += 1
                continue
            writes.append((record, customer_id, digest, False))
            if has_state:
                stateful.append(record)
            report.updated += 1

        alone: list[tuple[CustomerRecord, str]] = []  # new people with one source record
        if new_records:
            candidates = [
                Candidate(r.source, r.external_id, r.email, r.phone_normalized, r.link_shopify_id)
                for r, _ in new_records
            ]
            customer_ids, created = resolve(conn, candidates)
            for (record, digest), customer_id in zip(new_records, customer_ids, strict=True):
                writes.append((record, customer_id, digest, True))
            report.inserted += len(created)
            report.linked += len(new_records) - len(created)
            records_of = Counter(customer_ids)
            alone = [
                (record, customer_id)
                for (record, _), customer_id in zip(new_records, customer_ids, strict=True)
                if customer_id in created and records_of[customer_id] == 1
            ]
        self._encode_ahead = len(new_records) * 2 >= len(records)
        revived_for = revive_sources(conn, records[0].source, revived) if revived else []
        report.revived += len(revived_for)
        came_back = set(revived_for)

        if writes or came_back:
            copied = self._write_sources(conn, writes) if writes else False
            if stateful:
                self._refold_webhook_state(conn, stateful)
            touched = {customer_id for _, customer_id, _, _ in writes} | came_back
            inserted = self._insert_single_source_customers(conn, alone) if copied else set()
            apply_survivorship(conn, touched - inserted)
            # after survivorship, so the statistics see the customers it inserted (analysed
            # before, a first chunk leaves `customers` looking empty to every later plan)
            refresh_statistics(
                conn,
                "customers",
                self.report.inserted,
                also=("customer_sources", "customer_addresses"),
            )
            report.touched_customer_ids |= touched

    # ------------------------------------------------------------------ helpers
    def _mark_seen(self, conn: sa.Connection, chunk: list[CustomerRecord]) -> None:
        by_source: dict[str, set[str]] = {}
        for r in chunk:
            if r.external_id:
                by_source.setdefault(r.source, set()).add(r.external_id)
        for source, ids in by_source.items():
            conn.execute(
                sa.text(
                    "INSERT INTO reconcile_seen (run_id, source, external_id) "
                    "SELECT :run, :source, unnest(CAST(:ids AS text[])) ON CONFLICT DO NOTHING"
                ),
                {"run": self.reconcile_run_id, "source": source, "ids": text_array(ids)},
            )

    def _drop_redacted(
        self, conn: sa.Connection, records: list[CustomerRecord]
    ) -> list[CustomerRecord]:
        if not any_tombstones(conn):
            return records
        of: dict[Identity, list[int]] = {}
        for i, r in enumerate(records):
            keys: list[Identity] = [(f"{r.source}_id", r.external_id)]
            if r.email:
                keys.append(("email", r.email))
            if r.phone_normalized:
                keys.append(("phone", r.phone_normalized))
            for key in keys:
                of.setdefault(key, []).append(i)
        found = find_tombstoned(conn, of)
        if not found:
            return records
        blocked = {i for identity in found for i in of[identity]}
        self.report.skipped_redacted += len(blocked)
        return [r for i, r in enumerate(records) if i not in blocked]

    def _existing_links(
        self, conn: sa.Connection, records: list[CustomerRecord]
    ) -> dict[
        tuple[str, str], tuple[str, str | None, datetime | None, datetime | None, bool, bool]
    ]:
        source = records[0].source
        rows = conn.execute(
            sa.text(
                "SELECT s.source, s.external_id, s.customer_id::text AS customer_id, "
                "s.content_hash, "
                "s.source_updated_at, s.deleted_at, "
                "c.redacted_at IS NOT NULL AS redacted, s.webhook_state IS NOT NULL AS has_state "
                "FROM customer_sources s JOIN customers c ON c.id = s.customer_id "
                "WHERE s.source = :source AND s.external_id = ANY(CAST(:ids AS text[]))"
            ),
            {"source": source, "ids": text_array(r.external_id for r in records)},
        )
        return {
            (r.source, r.external_id): (
                r.customer_id,
                r.content_hash,
                r.source_updated_at,
                r.deleted_at,
                r.redacted,
                r.has_state,
            )
            for r in rows
        }

    def _refold_webhook_state(self, conn: sa.Connection, records: list[CustomerRecord]) -> None:
        """A pulled record is one more observation of the delta-webhook registers, not the
        last word: a tag added or a consent change timed after the record's `updated_at` stays
        (ingest/source_state.py). Rare (only records that got delta webhooks), so row by row."""
        for record in records:
            row = load_source(conn, record.source, record.external_id)
            if row is None:
                continue
            state = SourceState(row.webhook_state)
            if record.source == "shopify":
                state.shopify_record(record.source_record(), record.source_updated_at)
            save_folded(conn, row.id, state)

    def _insert_single_source_customers(
        self, conn: sa.Connection, alone: list[tuple[CustomerRecord, str]]
    ) -> set[str]:
        """COPY the customers row of each new person known from one source record alone.

        Survivorship over one record is that record (`customer_fields`, the Python twin of
        SURVIVORSHIP_SQL for this case): an initial load writes these rows directly instead of
        aggregating their jsonb profiles in SQL. Returns the customer ids written; if any row
        is refused (a live customer holds the email), none are, and survivorship decides.
        """
        if not alone:
            return set()
        now = conn.execute(sa.text("SELECT now()")).scalar_one()
        lines = (
            b"%s\t%s\t%s\n"
            % (
                customer_id.encode(),
                encoded(record).customer_tail,
                copy_field(min(record.created_at or now, now)),
            )
            for record, customer_id in alone
        )
        try:
            with conn.begin_nested():
                copy_lines(conn, "customers", NEW_CUSTOMER_COLUMNS, lines)
        except sa.exc.IntegrityError:
            return set()
        return {customer_id for _, customer_id in alone}

    def _write_sources(
        self, conn: sa.Connection, writes: list[tuple[CustomerRecord, str, str, bool]]
    ) -> bool:
        """Source rows and their addresses: new records by COPY, known ones by merge.

        A record with no source row yet (every record of an initial load) needs no conflict
        handling, so it is COPYed straight into customer_sources and customer_addresses. If a
        concurrent writer (a webhook) inserted one meanwhile, the savepoint rolls the COPY back
        and the chunk takes the merge. Returns whether the new records went in by COPY (each
        with the customer identity resolution gave it).
        """
        new = [w for w in writes if w[3]]
        known = [w for w in writes if not w[3]]
        copied = bool(new)
        if new:
            try:
                with conn.begin_nested():
                    self._copy_new_sources(conn, new)
            except sa.exc.IntegrityError:
                log.info("a concurrent writer added some of these source records; merging")
                known, copied = writes, False
        if known:
            self._merge_sources(conn, known)
        return copied

    def _copy_new_sources(
        self, conn: sa.Connection, writes: list[tuple[CustomerRecord, str, str, bool]]
    ) -> None:
        rows = [(customer_id.encode(), encoded(record)) for record, customer_id, _, _ in writes]
        copy_lines(
            conn,
            "customer_sources",
            SOURCE_COLUMNS,
            (b"%s\t%s\n" % (cid, e.source_tail) for cid, e in rows),
        )
        copy_lines(
            conn,
            "customer_addresses",
            ADDRESS_COLUMNS,
            (b"%s\t%s\n" % (cid, tail) for cid, e in rows for tail in e.address_tails),
        )

    def _merge_sources(
        self, conn: sa.Connection, writes: list[tuple[CustomerRecord, str, str, bool]]
    ) -> None:
        # the same encoded source line as the COPY path, plus the addresses as one jsonb
        create_temp_table(
            conn,
            "stage_sources",
            "customer_id uuid, source text, external_id text, source_data jsonb, profile jsonb, "
            "content_hash text, source_updated_at timestamptz, addresses jsonb",
        )
        copy_lines(
            conn,
            "stage_sources",
            (*SOURCE_COLUMNS, "addresses"),
            (
                b"%s\t%s\t%s\n"
                % (
                    customer_id.encode(),
                    encoded(record).source_tail,
                    copy_json(
                        encoded(record).addresses_json
                        or orjson.dumps([address_dict(a) for a in record.addresses])
                    ),
                )
                for record, customer_id, _, _ in writes
            ),
        )
        conn.exec_driver_sql(
            """
            INSERT INTO customer_sources AS s
                (customer_id, source, external_id, source_data, profile, content_hash,
                 source_updated_at, sync_status, last_synced_at)
            SELECT customer_id, source, external_id, source_data, profile, content_hash,
                   source_updated_at, 'synced', now()
            FROM stage_sources
            ON CONFLICT (source, external_id) DO UPDATE SET
                source_data = excluded.source_data,
                profile = excluded.profile,
                content_hash = excluded.content_hash,
                source_updated_at = excluded.source_updated_at,
                sync_status = 'synced',
                last_synced_at = now()
            WHERE s.source_updated_at IS NULL OR excluded.source_updated_at >= s.source_updated_at
            """
        )
        # addresses: the record's current set replaces what it carried before
        conn.exec_driver_sql(
            """
            DELETE FROM customer_addresses a USING stage_sources st
            WHERE a.source = st.source AND a.source_external_id = st.external_id
            """
        )
        conn.exec_driver_sql(
            """
            INSERT INTO customer_addresses AS a
                (customer_id, source, external_id, source_external_id, address_type, is_default,
                 first_name, last_name, company, address1, address2, city, province, province_code,
                 country, country_code, zip, phone, latitude, longitude, timezone)
            SELECT st.customer_id, st.source, x.external_id, st.external_id, 'both',
                   coalesce(x.is_default, false), x.first_name, x.last_name, x.company, x.address1,
                   x.address2, x.city, x.province, x.province_code, x.country,
                   CASE WHEN x.country_code ~ '^[A-Z]{2}$' THEN x.country_code END, x.zip, x.phone,
                   CASE WHEN x.latitude BETWEEN -90 AND 90 THEN x.latitude END,
                   CASE WHEN x.longitude BETWEEN -180 AND 180 THEN x.longitude END, x.timezone
            FROM stage_sources st,
                 jsonb_to_recordset(st.addresses) AS x(
                     external_id text, is_default boolean, first_name text, last_name text,
                     company text, address1 text, address2 text, city text, province text,
                     province_code text, country text, country_code text, zip text, phone text,
                     latitude double precision, longitude double precision, timezone text)
            ON CONFLICT (source, external_id) DO UPDATE SET
                customer_id = excluded.customer_id,
                source_external_id = excluded.source_external_id,
                is_default = excluded.is_default,
                first_name = excluded.first_name, last_name = excluded.last_name,
                company = excluded.company, address1 = excluded.address1,
                address2 = excluded.address2, city = excluded.city, province = excluded.province,
                province_code = excluded.province_code, country = excluded.country,
                country_code = excluded.country_code, zip = excluded.zip, phone = excluded.phone,
                latitude = excluded.latitude, longitude = excluded.longitude,
                timezone = excluded.timezone
            """
        )
        conn.exec_driver_sql("DROP TABLE stage_sources")


# Survivorship (docs/identity-resolution.md): for contact fields the best source wins
# (manual > shopify > klaviyo), newest updated_at within a source; consent follows the newest
# consent change; tags are the union of source tags and staff tags; staff-owned fields
# (internal_notes, manual_tags, a manual status) are never touched here.
SURVIVORSHIP_SQL = f"""
WITH ids AS MATERIALIZED (
    SELECT DISTINCT id FROM unnest(CAST(CAST(:ids AS text[]) AS uuid[])) AS t(id)
), src AS (
    SELECT s.customer_id, s.source, s.profile AS p, s.source_updated_at,
           {_SOURCE_PRIORITY} AS prio
    FROM ids JOIN customer_sources s ON s.customer_id = ids.id
    WHERE s.deleted_at IS NULL
), pick AS (
    SELECT customer_id,
        (array_agg(p->>'email' ORDER BY prio, source_updated_at DESC NULLS LAST)
            FILTER (WHERE p->>'email' IS NOT NULL))[1] AS email,
        (array_agg(p->>'phone' ORDER BY (p->>'phone_normalized' IS NULL), prio,
                   source_updated_at DESC NULLS LAST)
            FILTER (WHERE p->>'phone' IS NOT NULL))[1] AS phone,
        (array_agg(p->>'phone_normalized' ORDER BY prio, source_updated_at DESC NULLS LAST)
            FILTER (WHERE p->>'phone_normalized' IS NOT NULL))[1] AS phone_normalized,
        (array_agg(p->>'first_name' ORDER BY prio, source_updated_at DESC NULLS LAST)
            FILTER (WHERE p->>'first_name' IS NOT NULL))[1] AS first_name,
        (array_agg(p->>'last_name' ORDER BY prio, source_updated_at DESC NULLS LAST)
            FILTER (WHERE p->>'last_name' IS NOT NULL))[1] AS last_name,
        (array_agg(p->>'note' ORDER BY prio, source_updated_at DESC NULLS LAST)
            FILTER (WHERE p->>'note' IS NOT NULL))[1] AS note,
        (array_agg((p->>'accepts_email_marketing')::boolean
                   ORDER BY (p->>'email_consent_at') DESC NULLS LAST, prio,
                            source_updated_at DESC NULLS LAST)
            FILTER (WHERE p->>'accepts_email_marketing' IS NOT NULL))[1] AS accepts_email,
        (array_agg((p->>'accepts_sms_marketing')::boolean
                   ORDER BY prio, source_updated_at DESC NULLS LAST)
            FILTER (WHERE p->>'accepts_sms_marketing' IS NOT NULL))[1] AS accepts_sms,
        (array_agg(p->>'state' ORDER BY source_updated_at DESC NULLS LAST)
            FILTER (WHERE source = 'shopify'))[1] AS shopify_state,
        (array_agg(p->>'customer_type' ORDER BY source_updated_at DESC NULLS LAST)
            FILTER (WHERE source = 'manual' AND p->>'customer_type' IS NOT NULL))[1]
            AS manual_type,
        bool_or(source = 'shopify') AS has_shopify,
        min((p->>'created_at')::timestamptz) AS created_at,
        max(source_updated_at) AS source_updated_at
    FROM src GROUP BY customer_id
), tags AS (
    SELECT customer_id, array_agg(DISTINCT t ORDER BY t) AS tags
    FROM src, jsonb_array_elements_text(coalesce(p->'tags', '[]'::jsonb)) AS t
    GROUP BY customer_id
), attrs AS (
    SELECT customer_id, jsonb_object_agg(k, v) AS attrs
    FROM (
        SELECT DISTINCT ON (customer_id, k) customer_id, k, v
        FROM src, jsonb_each(coalesce(p->'attributes', '{{}}'::jsonb)) AS e(k, v)
        ORDER BY customer_id, k, source_updated_at DESC NULLS LAST
    ) newest
    GROUP BY customer_id
), taken AS MATERIALIZED (
    -- an email another live customer already holds stays with that customer (one join, not a
    -- probe per row: on a fresh table the planner has no statistics to pick an index probe)
    SELECT DISTINCT pick.customer_id
    FROM pick JOIN customers o ON o.email_lowercase = lower(btrim(pick.email))
    WHERE o.id <> pick.customer_id AND o.deleted_at IS NULL
), computed AS (
    SELECT pick.customer_id AS id,
        CASE WHEN taken.customer_id IS NOT NULL THEN c.email ELSE pick.email END AS email,
        pick.phone, pick.phone_normalized, pick.first_name, pick.last_name, pick.note,
        coalesce(pick.accepts_email, false) AS accepts_email,
        coalesce(pick.accepts_sms, false) AS accepts_sms,
        ARRAY(SELECT DISTINCT x
              FROM unnest(coalesce(tags.tags, '{{}}') || coalesce(c.manual_tags, '{{}}')) AS x
              ORDER BY x) AS tags,
        (coalesce(c.custom_attributes, '{{}}') - 'shopify' - 'klaviyo')
            || coalesce(attrs.attrs, '{{}}') AS custom_attributes,
        CASE WHEN c.status_set_by = 'manual' THEN c.status
             WHEN pick.shopify_state = 'invited' THEN 'pending'
             WHEN c.status IN ('vip', 'inactive') THEN c.status
             ELSE 'active' END AS status,
        coalesce(pick.manual_type,
                 CASE WHEN 'wholesale' = ANY(coalesce(tags.tags, '{{}}')) THEN 'wholesale'
                      WHEN 'affiliate' = ANY(coalesce(tags.tags, '{{}}')) THEN 'affiliate'
                      WHEN pick.shopify_state = 'enabled' THEN 'registered'
                      ELSE 'guest' END) AS customer_type,
        least(coalesce(pick.created_at, c.created_at, now()), coalesce(c.created_at, now()))
            AS created_at,
        greatest(pick.source_updated_at, c.source_updated_at) AS source_updated_at
    FROM pick
    LEFT JOIN customers c ON c.id = pick.customer_id
    LEFT JOIN tags ON tags.customer_id = pick.customer_id
    LEFT JOIN attrs ON attrs.customer_id = pick.customer_id
    LEFT JOIN taken ON taken.customer_id = pick.customer_id
    WHERE c.redacted_at IS NULL
)
-- New people are inserted with their fields in one write (their source rows went in first:
-- the foreign keys are deferred); known people are updated only when a field changed.
INSERT INTO customers AS c
    (id, email, phone, phone_normalized, first_name, last_name, notes, accepts_email_marketing,
     accepts_sms_marketing, tags, custom_attributes, status, customer_type, created_at,
     source_updated_at)
SELECT id, email, phone, phone_normalized, first_name, last_name, note, accepts_email,
       accepts_sms, tags, custom_attributes, status, customer_type, created_at, source_updated_at
FROM computed
ON CONFLICT (id) DO UPDATE SET
    email = excluded.email, phone = excluded.phone, phone_normalized = excluded.phone_normalized,
    first_name = excluded.first_name, last_name = excluded.last_name, notes = excluded.notes,
    accepts_email_marketing = excluded.accepts_email_marketing,
    accepts_sms_marketing = excluded.accepts_sms_marketing,
    tags = excluded.tags, custom_attributes = excluded.custom_attributes,
    status = excluded.status, customer_type = excluded.customer_type,
    created_at = excluded.created_at, source_updated_at = excluded.source_updated_at
WHERE (c.email, c.phone, c.phone_normalized, c.first_name, c.last_name, c.notes,
       c.accepts_email_marketing, c.accepts_sms_marketing, c.tags, c.custom_attributes,
       c.status, c.customer_type, c.created_at, c.source_updated_at)
      IS DISTINCT FROM
      (excluded.email, excluded.phone, excluded.phone_normalized, excluded.first_name,
       excluded.last_name, excluded.notes, excluded.accepts_email_marketing,
       excluded.accepts_sms_marketing, excluded.tags, excluded.custom_attributes,
       excluded.status, excluded.customer_type, excluded.created_at, excluded.source_updated_at)
"""


def apply_survivorship(conn: sa.Connection, customer_ids: Iterable[str]) -> int:
    """Recompute the profile fields of these customers from their live source records."""
    ids = sorted({str(i) for i in customer_ids})
    if not ids:
        return 0
    return conn.execute(sa.text(SURVIVORSHIP_SQL), {"ids": text_array(ids)}).rowcount


def observed_after(
    deleted_at: datetime, updated_at: datetime | None, observed_at: datetime | None
) -> bool:
    """Whether a live observation (a record updated at `updated_at`, read at `observed_at`)
    is newer than a deletion recorded at `deleted_at`, so the record is alive after all."""
    return any(t is not None and t > deleted_at for t in (updated_at, observed_at))


# Only customers deleted because their source records went come back with them: one deleted by
# staff, merged into another or redacted stays deleted. An email another live customer took
# meanwhile stays with that customer (the unique live email index), as in survivorship.
_REVIVE_CUSTOMERS_SQL = """
UPDATE customers c SET deleted_at = NULL, deleted_by_source = false,
    email = CASE WHEN EXISTS (SELECT 1 FROM customers o
                              WHERE o.email_lowercase = c.email_lowercase AND o.id <> c.id
                                AND o.deleted_at IS NULL) THEN NULL ELSE c.email END
WHERE c.id = ANY(CAST(:ids AS uuid[])) AND c.deleted_at IS NOT NULL AND c.deleted_by_source
  AND c.redacted_at IS NULL AND c.merged_into IS NULL
"""


def revive_sources(conn: sa.Connection, source: str, external_ids: Iterable[str]) -> list[str]:
    """Undelete these soft-deleted source records, seen alive after their deletion.

    The caller has checked the observation is newer than the deletion and not a GDPR tombstone
    (`CustomerLoader` does both). The source row keeps its customer id, so orders, activities and
    segments are still attached; the customer comes back if it was deleted only because of its
    sources. A record whose customer staff deleted, merged away or redacted stays deleted.
    Returns the customer id of each revived record, for survivorship.
    """
    customer_ids = list(
        conn.execute(
            sa.text(
                "UPDATE customer_sources s SET deleted_at = NULL, sync_status = 'synced' "
                "FROM customers c WHERE c.id = s.customer_id AND s.source = :source "
                "AND s.external_id = ANY(CAST(:ids AS text[])) AND s.deleted_at IS NOT NULL "
                "AND c.redacted_at IS NULL AND c.merged_into IS NULL "
                "AND (c.deleted_at IS NULL OR c.deleted_by_source) "
                "RETURNING s.customer_id::text"
            ),
            {"source": source, "ids": text_array(external_ids)},
        ).scalars()
    )
    if customer_ids:
        conn.execute(sa.text(_REVIVE_CUSTOMERS_SQL), {"ids": sorted(set(customer_ids))})
        log.info("revived %d %s records seen alive after their deletion", len(customer_ids), source)
    return customer_ids


def soft_delete_customers(conn: sa.Connection, source: str, customer_ids: Iterable[str]) -> int:
    """Soft-delete the customers that no live source record of weight holds any more.

    A Shopify deletion takes a customer down unless a live Shopify or manual record remains (a
    Klaviyo profile alone does not keep a shop customer); a Klaviyo deletion only when nothing
    live remains. Marked `deleted_by_source`, so a revived record brings them back.
    """
    keep = ["shopify", "manual"] if source == "shopify" else ["shopify", "manual", "klaviyo"]
    return conn.execute(
        sa.text(
            """
            UPDATE customers c SET deleted_at = now(), deleted_by_source = true
            WHERE c.id = ANY(CAST(:ids AS uuid[])) AND c.deleted_at IS NULL
              AND NOT EXISTS (SELECT 1 FROM customer_sources s
                              WHERE s.customer_id = c.id AND s.deleted_at IS NULL
                                AND s.source = ANY(:keep))
            """
        ),
        {"ids": sorted({str(i) for i in customer_ids}), "keep": keep},
    ).rowcount


StillAlive = Callable[[list[str]], set[str]]


def reconcile_deletions(
    engine: sa.Engine,
    source: str,
    run_id: str,
    *,
    still_alive: StillAlive,
    incomplete: str | None = None,
    min_seen_ratio: float = 0.5,
    sample_size: int = 100,
) -> dict[str, int]:
    """After a complete full pull: soft-delete source records (and customers) not seen in it.

    A record missing from the pull is deleted only when `still_alive` (a point lookup at the
    source: Shopify `nodes(ids:)`, Klaviyo get-profile) does not return it: a pull can miss
    records without saying so. Refuses when the pull is known incomplete (`incomplete` names
    why). When the pull saw fewer than `min_seen_ratio` of the live records, a sample of the
    missing ones is looked up first: if any is still alive the pull came back short and nothing
    is deleted (without a lookup per customer); if all are gone, it was a real mass deletion.
    """
    try:
        if incomplete:
            raise ReconcileRefused(
                f"full pull of {source} is incomplete ({incomplete}); refusing to soft-delete "
                "records it did not see (re-run the pull)"
            )
        with engine.connect() as conn:
            seen = conn.execute(
                sa.text(
                    "SELECT count(*) FROM reconcile_seen WHERE run_id = :run AND source = :source"
                ),
                {"run": run_id, "source": source},
            ).scalar_one()
            missing = (
                conn.execute(
                    sa.text(
                        """
                        SELECT s.external_id FROM customer_sources s
                        WHERE s.source = :source AND s.deleted_at IS NULL
                          AND NOT EXISTS (SELECT 1 FROM reconcile_seen r
                                          WHERE r.run_id = :run AND r.source = s.source
                                            AND r.external_id = s.external_id)
                        ORDER BY s.external_id
                        """
                    ),
                    {"source": source, "run": run_id},
                )
                .scalars()
                .all()
            )
        # outside any transaction: the lookups are network calls
        alive: set[str] = set()
        if missing and seen < (seen + len(missing)) * min_seen_ratio:
            sample = random.sample(missing, min(sample_size, len(missing)))
            alive = still_alive(sample) & set(sample)
            if alive:
                raise ReconcileRefused(
                    f"full pull of {source} saw {seen} records and missed {len(missing)}, of "
                    f"which {len(alive)} of {len(sample)} looked up still exist; refusing to "
                    "soft-delete the rest (check the source, then re-run)"
                )
            missing = sorted(set(missing) - set(sample))
            gone = sample
        else:
            gone = []
        alive |= still_alive(list(missing)) & set(missing) if missing else set()
        gone += [m for m in missing if m not in alive]
        with engine.begin() as conn:
            deleted_for = (
                conn.execute(
                    sa.text(
                        "UPDATE customer_sources SET deleted_at = now(), sync_status = 'deleted' "
                        "WHERE source = :source AND external_id = ANY(CAST(:ids AS text[])) "
                        "AND deleted_at IS NULL RETURNING customer_id::text"
                    ),
                    {"source": source, "ids": text_array(gone)},
                )
                .scalars()
                .all()
            )
            deleted = 0
            if deleted_for:
                deleted = soft_delete_customers(conn, source, deleted_for)
                apply_survivorship(conn, deleted_for)
    finally:
        with engine.begin() as conn:
            conn.execute(
                sa.text("DELETE FROM reconcile_seen WHERE run_id = :run AND source = :source"),
                {"run": run_id, "source": source},
            )
    if alive:
        log.warning(
            "full pull of %s missed %d records the source confirmed alive; kept them",
            source,
            len(alive),
        )
    return {
        "sources_deleted": len(deleted_for),
        "customers_deleted": deleted,
        "confirmed_alive": len(alive),
    }


class ReconcileRefused(RuntimeError):
    """A full pull looked incomplete; deletions were not applied."""
