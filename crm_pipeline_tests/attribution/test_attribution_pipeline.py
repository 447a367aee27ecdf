"""Order attribution end to end: a generated store through the pulls, `order_attribution` and the
analytics assets; revenue_by_channel checked against a computation straight from the store files."""

from __future__ import annotations

import base64
import re
import struct
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import dagster as dg
import orjson
import pytest
import sqlalchemy as sa

from crm_pipeline.changes.mode import REFRESH_TAG
from crm_pipeline.db.resource import PostgresResource
from crm_pipeline.defs.analytics import assets as analytics_assets
from crm_pipeline.defs.attribution.assets import order_attribution
from crm_pipeline.defs.klaviyo.resources import KlaviyoResource
from crm_pipeline.defs.shopify.resources import ShopifyResource
from crm_pipeline.sandbox.generate import generate_store
from crm_pipeline.sandbox.server import SandboxServer
from crm_pipeline_tests.fixtures.pipeline import INGESTION_ASSETS, PULLS

ASSETS = [
    *INGESTION_ASSETS,
    order_attribution,
    analytics_assets.customer_metrics,
    analytics_assets.customer_segments,
    analytics_assets.customer_stats,
]
COMPLETED = {"paid", "partially_refunded", "refunded"}
LATE = 5  # orders whose journey Shopify builds only after the first run


def _shopify_ts(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 400-customer store in which a few recent web orders have a journey not built yet."""
    path = tmp_path_factory.mktemp("attribution") / "store"
    generate_store(path, customers=400, seed=15)
    orders = [
        orjson.loads(line)
        for line in (path / "shopify/orders.jsonl").read_bytes().split(b"\n")
        if line
    ]
    recent = _shopify_ts(datetime.now(UTC) - timedelta(days=1))
    late = [
        o
        for o in orders
        if (o.get("customer_journey_summary") or {}).get("ready")
        and o["financial_status"] == "paid"
        and not o["cancelled_at"]
    ][:LATE]
    for order in late:
        order["_journey"] = order["customer_journey_summary"]
        order["customer_journey_summary"] = {
            "ready": False,
            "first_visit": None,
            "last_visit": None,
            "days_to_conversion": None,
            "customer_order_index": None,
        }
        order["created_at"] = order["updated_at"] = recent
    _write(path, orders)
    return path


def _write(path: Path, orders: list[dict]) -> None:
    (path / "shopify/orders.jsonl").write_bytes(b"".join(orjson.dumps(o) + b"\n" for o in orders))


@pytest.fixture(scope="module")
def sandbox(store: Path) -> Iterator[SandboxServer]:
    with SandboxServer(store, klaviyo_rate_limits=False, shopify_plan="plus") as server:
        yield server


def _run(dsn: str, url: str, full: bool, assets: list | None = None) -> dg.ExecuteInProcessResult:
    resources = {
        "postgres": PostgresResource(dsn=dsn),
        "shopify": ShopifyResource(api_url=url),
        "klaviyo": KlaviyoResource(api_url=url),
    }
    config = {"ops": {name: {"config": {"full_refresh": full}} for name in PULLS}}
    # a full run recomputes everyone (and draws the calibration diagnostic), as full_refresh does
    tags = {REFRESH_TAG: "full" if full else "touched"}
    result = dg.materialize(assets or ASSETS, resources=resources, run_config=config, tags=tags)
    assert result.success
    return result


# -- the independent computation -------------------------------------------------------------


def _channel(visit: dict | None) -> str:
    """The channel of a generated visit, read from what the generator wrote."""
    if not visit:
        return "unknown"
    if (visit.get("utm_parameters") or {}).get("medium") == "email":
        return "email"
    kind = {"AD": "paid_social", "SEO": "organic_search"}.get(visit.get("source_type") or "")
    return kind or ("referral" if visit.get("referrer_url") else "direct")


def expected_revenue(store: Path, loaded: set[str], credited: set[str]) -> dict[str, dict]:
    """model -> channel -> (orders, net revenue) from the store files, for the loaded orders."""
    out: dict[str, dict[str, list]] = {
        m: defaultdict(lambda: [0, Decimal(0)]) for m in ("first_touch", "last_touch", "klaviyo")
    }
    for line in (store / "shopify/orders.jsonl").read_bytes().splitlines():
        order = orjson.loads(line)
        if str(order["id"]) not in loaded or order["cancelled_at"]:
            continue
        if order["financial_status"] not in COMPLETED:
            continue
        refunded = sum(
            (
                Decimal(t["amount"])
                for r in order["refunds"]
                for t in r["transactions"]
                if t["kind"] == "refund"
            ),
            Decimal(0),
        )
        net = Decimal(order["total_price"]) - refunded
        journey = order.get("customer_journey_summary") or {}
        ready = journey.get("ready")
        channels = {
            "first_touch": _channel(journey.get("first_visit") if ready else None),
            "last_touch": _channel(journey.get("last_visit") if ready else None),
            "klaviyo": "klaviyo_email" if str(order["id"]) in credited else "not_klaviyo",
        }
        for model, channel in channels.items():
            out[model][channel][0] += 1
            out[model][channel][1] += net
    return {m: {c: (v[0], v[1]) for c, v in chans.items()} for m, chans in out.items()}


def klaviyo_credited(store: Path, loaded_events: set[str]) -> set[str]:
    credited = set()
    for line in (store / "klaviyo/events.jsonl").read_bytes().splitlines():
        event = orjson.loads(line)
        props = event["attributes"]["event_properties"]
        if event["id"] in loaded_events and "$attribution" in props:
            credited.add(props["$event_id"])
    return credited


def revenue(engine: sa.Engine, grain: str) -> dict[str, dict]:
    sql = """SELECT model, channel, sum(orders), sum(net_revenue) FROM revenue_by_channel
             WHERE grain = :grain GROUP BY 1, 2"""
    out: dict[str, dict] = defaultdict(dict)
    with engine.connect() as conn:
        for model, channel, orders, net in conn.execute(sa.text(sql), {"grain": grain}):
            out[model][channel] = (int(orders), Decimal(net))
    return dict(out)


def _loaded(engine: sa.Engine) -> tuple[set[str], set[str]]:
    with engine.connect() as conn:
        orders = set(conn.execute(sa.text("SELECT external_id FROM orders")).scalars())
        events = set(
            conn.execute(
                sa.text("SELECT external_id FROM customer_activities WHERE source = 'klaviyo'")
            ).scalars()
        )
    return orders, events


def attribution_rows(engine: sa.Engine) -> list[tuple]:
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                sa.text(
                    "SELECT o.external_id, a.* FROM order_attributions a "
                    "JOIN orders o ON o.id = a.order_id ORDER BY 1"
                )
            ).all()
        ]


STATUS_SQL = """
SELECT a.journey_status FROM order_attributions a JOIN orders o ON o.id = a.order_id
WHERE o.external_id = ANY(:ids)
"""


def _statuses(engine: sa.Engine, ids: list[str]) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(sa.text(STATUS_SQL), {"ids": ids}).scalars())


def _without_times(rows: list[tuple]) -> list[tuple]:
    return [tuple(v for v in r if not isinstance(v, datetime)) for r in rows]


def _images(result: dg.ExecuteInProcessResult) -> dict[str, bytes]:
    images = {}
    for event in result.get_asset_materialization_events():
        for key, value in event.materialization.metadata.items():
            text = value.value if isinstance(value.value, str) else ""
            for data in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)\)", text):
                images[f"{event.asset_key.to_user_string()}.{key}"] = base64.b64decode(data)
    return images


# -- the tests ---------------------------------------------------------------------------------


def test_attribution_matches_the_store_is_idempotent_and_fills_late_journeys(
    clean_db: sa.Engine, database_url: str, sandbox: SandboxServer, store: Path
) -> None:
    first = _run(database_url, sandbox.url, full=True)
    loaded, events = _loaded(clean_db)
    expected = expected_revenue(store, loaded, klaviyo_credited(store, events))
    assert set(expected["last_touch"]) >= {
        "direct",
        "email",
        "organic_search",
        "paid_social",
        "referral",
        "unknown",
    }
    assert expected["klaviyo"]["klaviyo_email"][0] > 0
    for grain in ("day", "week", "month"):
        assert revenue(clean_db, grain) == expected, grain

    # the charts: every embedded image decodes to an 800 x 400 PNG
    images = _images(first)
    assert {
        "order_attribution.revenue_by_channel_chart",
        "customer_stats.ltv_by_acquisition_channel_chart",
        "customer_stats.segment_distribution_chart",
        "customer_stats.churn_probability_histogram",
        "customer_stats.predicted_ltv_histogram",
        "customer_metrics.calibration_chart",
    } <= set(images)
    for name, png in images.items():
        assert png[:8] == b"\x89PNG\r\n\x1a\n", name
        assert struct.unpack(">II", png[16:24]) == (800, 400), name

    # re-runs change nothing
    rows = attribution_rows(clean_db)
    _run(database_url, sandbox.url, full=True)
    _run(database_url, sandbox.url, full=False)
    assert _without_times(attribution_rows(clean_db)) == _without_times(rows)
    assert revenue(clean_db, "month") == expected

    # Shopify builds the late journeys; orders' updated_at does not move
    orders = [
        orjson.loads(line) for line in (store / "shopify/orders.jsonl").read_bytes().splitlines()
    ]
    late = [o for o in orders if "_journey" in o]
    assert len(late) == LATE
    statuses = _statuses(clean_db, [str(o["id"]) for o in late])
    assert statuses == {"not_ready"}
    for order in late:
        order["customer_journey_summary"] = order.pop("_journey")
    _write(store, orders)
    sandbox.reload()
    _run(database_url, sandbox.url, full=False, assets=[*INGESTION_ASSETS, order_attribution])
    statuses = _statuses(clean_db, [str(o["id"]) for o in late])
    assert statuses == {"ready"}
    expected = expected_revenue(store, loaded, klaviyo_credited(store, events))
    assert revenue(clean_db, "month") == expected
