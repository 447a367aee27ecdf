"""A Klaviyo system-webhook delivery, in the shape Klaviyo sends it, lands and is applied.

Klaviyo wraps each event: `{"data": [{"topic", "external_id", "payload": <Get Event answer>}],
"meta": {...}}`. The topics `webhooks register --source klaviyo` subscribes must be applied.
"""

from __future__ import annotations

import sqlalchemy as sa
from fastapi.testclient import TestClient

from crm_pipeline.mapping.klaviyo import KLAVIYO_WEBHOOK_TOPICS, METRIC_ACTIVITY
from crm_pipeline_tests.webhooks.helpers import klaviyo_request
from crm_pipeline_tests.webhooks.test_processing_support import at, land, run


def _item(topic: str, event_id: str, profile_id: str, minutes: float) -> dict:
    event = {
        "type": "event",
        "id": event_id,
        "attributes": {
            "timestamp": int(at(minutes).timestamp()),
            "datetime": at(minutes).isoformat(),
            "event_properties": {"Subject": "Hello"},
            "uuid": f"uuid-{event_id}",
        },
        "relationships": {
            "profile": {"data": {"type": "profile", "id": profile_id}},
            "metric": {"data": {"type": "metric", "id": "MetricXYZ"}},
        },
        "links": {"self": f"https://a.klaviyo.com/api/events/{event_id}/"},
    }
    return {"topic": topic, "external_id": event_id, "payload": {"data": event}}


def test_subscribed_topics_are_applied_as_their_activities(
    client: TestClient, clean_db: sa.Engine
) -> None:
    engine = clean_db
    profile = {
        "type": "profile",
        "id": "KS1",
        "attributes": {"email": "ks1@example.com", "updated": at(0).isoformat()},
    }
    land(engine, "klaviyo", "profile", profile, triggered_at=at(0), subject_key="klaviyo:KS1")
    items = [
        _item(topic, f"EVS{n}", "KS1", n + 1) for n, topic in enumerate(KLAVIYO_WEBHOOK_TOPICS)
    ]
    body, headers = klaviyo_request({"data": items, "meta": {"klaviyo_webhook_id": "W1"}})
    assert client.post("/webhooks/klaviyo", content=body, headers=headers).status_code == 200

    report = run(engine)
    assert report.outcomes.get("applied") == 1 + len(items), report
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT external_id, activity_type FROM customer_activities ORDER BY 1")
        ).all()
    expected = [
        (f"EVS{n}", METRIC_ACTIVITY[metric])
        for n, metric in enumerate(KLAVIYO_WEBHOOK_TOPICS.values())
    ]
    assert sorted(rows) == sorted(expected)
