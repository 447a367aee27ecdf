"""An unsubscribe delivered by a Klaviyo system webhook withdraws consent when it is applied,
with its time and source, and only when it is newer than the consent the sources gave."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi.testclient import TestClient

from crm_pipeline_tests.webhooks.helpers import klaviyo_request
from crm_pipeline_tests.webhooks.test_klaviyo_system_webhook import _item
from crm_pipeline_tests.webhooks.test_processing_support import at, land, run


def _subscribed_profile(profile_id: str, minutes: float) -> dict:
    consent = {"consent": "SUBSCRIBED", "consent_timestamp": at(minutes).isoformat()}
    return {
        "type": "profile",
        "id": profile_id,
        "attributes": {
            "email": f"{profile_id.lower()}@example.com",
            "phone_number": "+15005550006" if profile_id == "KU1" else None,
            "updated": at(minutes).isoformat(),
            "subscriptions": {
                "email": {"marketing": consent},
                "sms": {"marketing": consent} if profile_id == "KU1" else None,
            },
        },
    }


def _consent(engine: sa.Engine, email: str) -> tuple:
    with engine.connect() as conn:
        return conn.execute(
            sa.text(
                "SELECT accepts_email_marketing, email_consent_source, email_consent_updated_at, "
                "accepts_sms_marketing, sms_consent_source FROM customers "
                "WHERE email_lowercase = :email"
            ),
            {"email": email},
        ).one()


def test_unsubscribe_topics_withdraw_consent_with_time_and_source(
    client: TestClient, clean_db: sa.Engine
) -> None:
    engine = clean_db
    for pid in ("KU1", "KU2"):
        land(engine, "klaviyo", "profile", _subscribed_profile(pid, 0), triggered_at=at(0),
             subject_key=f"klaviyo:{pid}")  # fmt: skip
    run(engine)
    assert _consent(engine, "ku1@example.com")[0] is True
    items = [
        _item("event:klaviyo.unsubscribed_from_email_marketing", "EVU1", "KU1", 5),
        _item("event:klaviyo.unsubscribed_from_sms_marketing", "EVU2", "KU1", 6),
        # older than the consent KU2 gave: the newer statement wins
        _item("event:klaviyo.marked_email_as_spam", "EVU3", "KU2", -5),
    ]
    body, headers = klaviyo_request({"data": items, "meta": {"klaviyo_webhook_id": "W9"}})
    assert client.post("/webhooks/klaviyo", content=body, headers=headers).status_code == 200
    report = run(engine)
    assert report.outcomes.get("applied") == len(items), report

    email_ok, source, when, sms_ok, sms_source = _consent(engine, "ku1@example.com")
    assert (email_ok, source, when) == (False, "klaviyo_unsubscribed_event", at(5))
    assert (sms_ok, sms_source) == (False, "klaviyo_unsubscribed_event")
    assert _consent(engine, "ku2@example.com")[:2] == (True, None)
