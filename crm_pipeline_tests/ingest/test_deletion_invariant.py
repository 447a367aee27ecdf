"""Property: whatever happens at the shop and however it reaches us, a complete pull agrees with it.

Hypothesis drives a small shop (a handful of customers) through creates, updates, deletes,
merges and GDPR redactions; each change may or may not arrive as a webhook, processed at once or
later; pulls are full (complete, silently truncated or failing) or incremental; imports bring
current or stale snapshots. After every complete full pull: each customer live at the shop is
live here, each one deleted there is soft-deleted here, and no redacted person is live.

The pulls go through the real client, sandbox server and loaders (`load_pull` with the Pull
the `shopify_customers` asset builds), the webhooks through `process_pending`, the imports
through `import_file`: what the assets and the worker call, without a Dagster run per step.
"""

from __future__ import annotations

import itertools
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from crm_pipeline.defs.common import load_pull
from crm_pipeline.defs.shopify.assets import customers_pull
from crm_pipeline.ingest.customers import ReconcileRefused
from crm_pipeline.ingest.files import import_file
from crm_pipeline.sandbox.server import SandboxServer
from crm_pipeline.sources.errors import SourceError
from crm_pipeline.sources.http import SourceRetryPolicy
from crm_pipeline.sources.shopify import ShopifyClient
from crm_pipeline_tests.fixtures.postgres import truncate_all
from crm_pipeline_tests.webhooks.test_processing_support import land, run

MAX_CUSTOMERS = 5
DELIVERY = st.sampled_from(["now", "later", "lost"])  # a webhook processed at once, later, never
_STAMPS = itertools.count(time.time_ns())
QUICK = SourceRetryPolicy(max_attempts=2, initial_wait=0.01, max_wait=0.02)


def email(ident: int) -> str:
    return f"person{ident}@example.com"


@dataclass
class Shop:
    """The model: what the shop holds now, and every version it ever sent."""

    live: dict[int, dict] = field(default_factory=dict)
    deleted: set[int] = field(default_factory=set)
    versions: dict[int, list[dict]] = field(default_factory=dict)
    redacted: set[int] = field(default_factory=set)
    # a merge says two records are one person: erasing one of them erases the person
    person: dict[int, set[int]] = field(default_factory=dict)

    @property
    def erased(self) -> set[int]:
        """Redacted records and those merged with them: the erasure may take them along (when
        the merge reached us), so they need not be live here."""
        return {i for r in self.redacted for i in self.person.get(r, {r})}

    def same_person(self, kept: int, gone: int) -> None:
        group = self.person.get(kept, {kept}) | self.person.get(gone, {gone})
        for ident in group:
            self.person[ident] = group

    def write(self, ident: int, **fields: object) -> dict:
        now = datetime.now(UTC)
        first = self.versions.get(ident, [{}])[0]
        record = {
            "id": ident,
            "email": email(ident),
            "first_name": fields.get("first_name", f"First{ident}"),
            "last_name": f"Last{ident}",
            "phone": None,
            "state": "enabled",
            "tags": "",
            "note": None,
            "created_at": first.get("created_at", now.isoformat()),
            "updated_at": now.isoformat(),
            "addresses": [],
            "default_address": None,
        }
        self.live[ident] = record
        self.versions.setdefault(ident, []).append(record)
        return record


class DeletionInvariant(RuleBasedStateMachine):
    def __init__(self, engine: sa.Engine, server: SandboxServer) -> None:
        super().__init__()
        self.engine, self.server = engine, server
        self.root = server.store_path
        self.shop = Shop()
        self.client = ShopifyClient(
            "sandbox", "token", api_url=server.url, retry_policy=QUICK, bulk_poll_max=0.005
        )
        self.wrongly_deleted: set[int] = set()  # until a pull that sees them again
        truncate_all(engine)
        self.publish()

    # ------------------------------------------------------------------ the shop
    def publish(self) -> None:
        """Rewrite the store directory from the model and have the sandbox serve it."""
        shop = self.root / "shopify"
        shop.mkdir(parents=True, exist_ok=True)
        lines = b"".join(orjson.dumps(r) + b"\n" for r in self.shop.live.values())
        (shop / "customers.jsonl").write_bytes(lines)
        gone = b"".join(orjson.dumps({"id": i}) + b"\n" for i in sorted(self.shop.deleted))
        (shop / "deleted_customers.jsonl").write_bytes(gone)
        # a new modification time for sure, so the sandbox's index cache cannot serve the old file
        stamp = next(_STAMPS)
        os.utime(shop / "customers.jsonl", ns=(stamp, stamp))
        self.server.reload()

    def webhook(self, topic: str, payload: dict, deliver: str) -> None:
        if deliver == "lost":
            return
        land(self.engine, "shopify", topic, payload, triggered_at=datetime.now(UTC))
        if deliver == "now":
            run(self.engine)

    def pick(self, data: st.DataObject, among: set[int] | dict[int, dict]) -> int:
        return data.draw(st.sampled_from(sorted(among)))

    @precondition(lambda self: len(self.shop.versions) < MAX_CUSTOMERS)
    @rule(deliver=DELIVERY)
    def create(self, deliver: str) -> None:
        ident = len(self.shop.versions) + 1  # Shopify ids are never reused
        record = self.shop.write(ident)
        self.publish()
        self.webhook("customers/create", record, deliver)

    @precondition(lambda self: self.shop.live)
    @rule(deliver=DELIVERY, data=st.data())
    def update(self, deliver: str, data: st.DataObject) -> None:
        ident = self.pick(data, self.shop.live)
        record = self.shop.write(ident, first_name=f"Renamed{uuid.uuid4().hex[:6]}")
        self.publish()
        self.webhook("customers/update", record, deliver)

    @precondition(lambda self: self.shop.live)
    @rule(deliver=DELIVERY, data=st.data())
    def delete(self, deliver: str, data: st.DataObject) -> None:
        ident = self.pick(data, self.shop.live)
        del self.shop.live[ident]
        self.shop.deleted.add(ident)
        self.publish()
        self.webhook("customers/delete", {"id": ident}, deliver)

    @precondition(lambda self: len(self.shop.live) >= 2)
    @rule(deliver=DELIVERY, data=st.data())
    def merge(self, deliver: str, data: st.DataObject) -> None:
        kept = self.pick(data, self.shop.live)
        gone = self.pick(data, self.shop.live.keys() - {kept})
        del self.shop.live[gone]
        self.shop.deleted.add(gone)
        self.publish()
        self.shop.same_person(kept, gone)
        payload = {"customer_kept_id": kept, "customer_deleted_id": gone, "status": "completed"}
        self.webhook("customers/merge", payload, deliver)

    @precondition(lambda self: self.shop.versions.keys() - self.shop.redacted)
    @rule(leaves_shop=st.booleans(), data=st.data())
    def redact(self, leaves_shop: bool, data: st.DataObject) -> None:
        """GDPR: the person is erased here; the shop may keep (or drop) the customer."""
        ident = self.pick(data, self.shop.versions.keys() - self.shop.redacted)
        self.shop.redacted.add(ident)
        if leaves_shop and self.shop.live.pop(ident, None) is not None:
            self.shop.deleted.add(ident)
            self.publish()
        payload = {
            "shop_id": 1,
            "shop_domain": "test-shop.myshopify.com",
            "customer": {"id": ident, "email": email(ident), "phone": None},
            "orders_to_redact": [],
        }
        self.webhook("customers/redact", payload, "now")

    @rule(data=st.data())
    def deleted_by_the_old_reconcile(self, data: st.DataObject) -> None:
        """What the reconcile did before point lookups, after a short pull: a customer the shop
        still has soft-deleted here (`deleted_by_source`, as sql/0012 marks such rows). The next
        pull that sees the customer must bring it back."""
        with self.engine.begin() as conn:
            known = sorted(
                conn.execute(
                    sa.text(
                        "SELECT s.external_id::int FROM customer_sources s "
                        "JOIN customers c ON c.id = s.customer_id WHERE s.source = 'shopify' "
                        "AND s.external_id = ANY(:ids) AND s.deleted_at IS NULL "
                        "AND c.deleted_at IS NULL"
                    ),
                    {"ids": [str(i) for i in self.shop.live.keys() - self.shop.erased]},
                ).scalars()
            )
            if not known:
                return
            ident = data.draw(st.sampled_from(known))
            customer_id = conn.execute(
                sa.text(
                    "UPDATE customer_sources SET deleted_at = now(), sync_status = 'deleted' "
                    "WHERE source = 'shopify' AND external_id = :ext RETURNING customer_id"
                ),
                {"ext": str(ident)},
            ).scalar_one()
            conn.execute(
                sa.text(
                    "UPDATE customers SET deleted_at = now(), deleted_by_source = true "
                    "WHERE id = :id AND NOT EXISTS (SELECT 1 FROM customer_sources s "
                    "WHERE s.customer_id = :id AND s.deleted_at IS NULL "
                    "AND s.source IN ('shopify', 'manual'))"
                ),
                {"id": customer_id},
            )
        self.wrongly_deleted.add(ident)

    @rule()
    def process_webhooks(self) -> None:
        run(self.engine)

    # ------------------------------------------------------------------ what reaches us
    @precondition(lambda self: self.shop.versions)
    @rule(stale=st.booleans(), data=st.data())
    def import_snapshot(self, stale: bool, data: st.DataObject) -> None:
        """A file of the shop's customers as the team exported them, now or long ago."""
        ids = data.draw(st.sets(st.sampled_from(sorted(self.shop.versions)), min_size=1))
        rows = [self.shop.versions[i][0 if stale else -1] for i in sorted(ids)]
        path = self.root / f"import-{uuid.uuid4().hex}.jsonl"
        path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
        import_file(self.engine, path)
        path.unlink()

    @rule(kind=st.sampled_from(["complete", "lagging", "truncated", "failing", "incremental"]))
    def pull(self, kind: str) -> None:
        """complete; lagging (the newest customer missing from the result and the count alike,
        so the pull looks complete); truncated (missing, but counted); failing (bulk FAILED
        with partial data); incremental."""
        config = self.server.state.config
        config.drop_last = 1 if kind in ("lagging", "truncated") else 0
        config.drop_counted = kind != "lagging"
        config.bulk_fail_rate = 1.0 if kind == "failing" else 0.0
        try:
            result = load_pull(
                self.engine,
                customers_pull(self.client),
                full_refresh=kind != "incremental",
                run_id=str(uuid.uuid4()),
            )
        except (SourceError, ReconcileRefused):
            # a failed or short answer may be refused (a lagging one when the lookups show it
            # short), a complete one never
            assert kind == "failing" or (kind in ("truncated", "lagging") and self.shop.live)
            return
        finally:
            config.drop_last, config.drop_counted, config.bulk_fail_rate = 0, True, 0.0
        assert kind != "failing" and (kind != "truncated" or not self.shop.live)
        if result.full:
            # a lagging pull cannot bring in what it did not see; it must lose nothing either
            self.check_agrees_with_the_shop(saw_everyone=kind != "lagging")
            if kind != "lagging":
                self.wrongly_deleted.clear()

    @rule()
    def complete_pull(self) -> None:
        self.pull("complete")

    def teardown(self) -> None:
        """Every sequence ends with a complete pull, and its check."""
        self.pull("complete")

    # ------------------------------------------------------------------ the invariant
    def check_agrees_with_the_shop(self, *, saw_everyone: bool) -> None:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    """
                    SELECT s.external_id::int AS ident, s.deleted_at IS NULL AS source_live,
                           c.deleted_at IS NULL AS customer_live,
                           EXISTS (SELECT 1 FROM customer_sources o
                                   WHERE o.customer_id = c.id AND o.deleted_at IS NULL
                                     AND o.source IN ('shopify', 'manual')
                                     AND o.id <> s.id) AS held_otherwise
                    FROM customer_sources s JOIN customers c ON c.id = s.customer_id
                    WHERE s.source = 'shopify' AND s.external_id ~ '^[0-9]+$'
                    """
                )
            ).all()
            live_emails = set(
                conn.execute(
                    sa.text(
                        "SELECT email_lowercase FROM customers "
                        "WHERE deleted_at IS NULL AND email_lowercase IS NOT NULL"
                    )
                ).scalars()
            )
        here = {r.ident: r for r in rows}
        for ident in self.shop.live.keys() - self.shop.erased:
            row = here.get(ident)
            if not saw_everyone and (row is None or ident in self.wrongly_deleted):
                continue
            assert row is not None, f"customer {ident} is live at the shop but unknown here"
            assert row.source_live and row.customer_live, f"customer {ident} lost: {row}"
        for ident in self.shop.deleted - self.shop.erased:
            row = here.get(ident)
            if row is None:
                continue  # never reached us
            assert not row.source_live, f"customer {ident} deleted at the shop, live here"
            assert not row.customer_live or row.held_otherwise, f"customer {ident}: {row}"
        for ident in self.shop.redacted:
            row = here.get(ident)
            assert row is None or not row.source_live, f"redacted {ident} came back: {row}"
            assert email(ident) not in live_emails, f"redacted {ident}'s email is live"

    @invariant()
    def nobody_live_at_the_shop_is_lost(self) -> None:
        """Whatever arrived in whatever order: a customer we know and the shop still has is
        live here (a deletion needs the shop's word: a webhook, or a confirmed reconcile)."""
        with self.engine.connect() as conn:
            lost = set(
                conn.execute(
                    sa.text(
                        "SELECT s.external_id FROM customer_sources s "
                        "JOIN customers c ON c.id = s.customer_id "
                        "WHERE s.source = 'shopify' AND s.external_id = ANY(:ids) "
                        "AND (s.deleted_at IS NOT NULL OR c.deleted_at IS NOT NULL)"
                    ),
                    {
                        "ids": [
                            str(i)
                            for i in self.shop.live.keys() - self.shop.erased - self.wrongly_deleted
                        ]
                    },
                ).scalars()
            )
        assert not lost, f"live at the shop, deleted here: {lost}"

    @invariant()
    def redacted_people_stay_gone(self) -> None:
        with self.engine.connect() as conn:
            live = set(
                conn.execute(
                    sa.text(
                        "SELECT email_lowercase FROM customers WHERE deleted_at IS NULL "
                        "AND email_lowercase = ANY(:emails)"
                    ),
                    {"emails": [email(i) for i in self.shop.redacted]},
                ).scalars()
            )
        assert not live, f"redacted people live again: {live}"


@pytest.fixture
def shop_server(tmp_path: Path) -> Iterator[SandboxServer]:
    (tmp_path / "shopify").mkdir()
    (tmp_path / "shopify" / "customers.jsonl").write_bytes(b"")
    with SandboxServer(tmp_path, bulk_seconds=0, klaviyo_rate_limits=False) as server:
        yield server


def test_a_complete_pull_agrees_with_the_shop(
    clean_db: sa.Engine, shop_server: SandboxServer
) -> None:
    run_state_machine_as_test(
        lambda: DeletionInvariant(clean_db, shop_server),
        settings=settings(
            max_examples=int(os.environ.get("CRM_INVARIANT_EXAMPLES", "200")),
            stateful_step_count=8,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        ),
    )
