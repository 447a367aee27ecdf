"""Journey rows and channel rules (pure), and the journey's round trip through the sandbox's
GraphQL node and the client's REST conversion."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from crm_pipeline.attribution.journey import (
    JOURNEY_COLUMNS,
    UNKNOWN,
    channel,
    journey_row,
    without_query,
)
from crm_pipeline.sandbox.builders.journeys import KINDS, _visit
from crm_pipeline.sandbox.shopify.nodes import journey_node
from crm_pipeline.sources.shopify.convert import journey_to_rest

CHANNELS = {"email", "sms", "paid_search", "paid_social", "paid_other", "organic_search",
            "organic_social", "affiliate", "direct", "referral", UNKNOWN}  # fmt: skip
# MarketingTactic in the shipped Admin schemas
TACTICS = (
    "ABANDONED_CART AD AFFILIATE LINK LOYALTY MESSAGE NEWSLETTER NOTIFICATION POST RETARGETING"
)
TACTICS += " TRANSACTIONAL STOREFRONT_APP SEO"
SAMPLES = ["google", "Facebook", "email", "direct", "cpc", "sms", "unknown", "paid_social"]
words = st.one_of(st.none(), st.sampled_from(SAMPLES), st.text(max_size=8))
visits = st.fixed_dictionaries(
    {
        "source": words,
        "source_type": st.one_of(st.none(), st.sampled_from(TACTICS.split())),
        "referrer_url": st.one_of(st.none(), st.just("https://example.org/x?email=a@b.c")),
        "landing_page": st.one_of(st.none(), st.text(max_size=30)),
        "utm_parameters": st.one_of(
            st.none(), st.fixed_dictionaries({"source": words, "medium": words, "campaign": words})
        ),
    }
)


@settings(max_examples=300, deadline=None)
@given(visit=st.one_of(st.none(), visits))
def test_every_visit_gets_one_known_channel_and_no_query_string_is_kept(visit: Any) -> None:
    assert channel(visit) in CHANNELS
    order = {"source_name": "web", "customer_journey_summary": {
        "ready": True, "first_visit": visit, "last_visit": visit}}  # fmt: skip
    row = journey_row(order)
    assert set(row) == set(JOURNEY_COLUMNS)
    for key in ("first_landing_page", "first_referrer_url"):
        assert row[key] is None or "?" not in row[key]


def test_a_journey_not_ready_or_missing_is_never_guessed() -> None:
    visit = {"source": "google", "source_type": "SEO"}
    pending = {"customer_journey_summary": {"ready": False, "first_visit": visit}}
    assert journey_row(pending)["journey_status"] == "not_ready"
    assert journey_row(pending)["first_channel"] == UNKNOWN
    assert journey_row({"customer_journey_summary": None})["journey_status"] == "unavailable"
    assert journey_row({"source_name": "web"})["journey_status"] == "not_fetched"
    assert without_query("https://s.example/p?email=x#frag") == "https://s.example/p"


def test_the_generated_kinds_are_the_channels_the_rules_give() -> None:
    for kind, name in enumerate(KINDS):
        visit = _visit(kind, [1, 2, 3, 4], "2026-11-01T00:00:00+00:00", 1, 0)
        assert channel(visit) == name


def test_a_journey_survives_the_sandbox_node_and_the_client_conversion() -> None:
    for kind in range(len(KINDS)):
        first = _visit(kind, [3, 1, 2, 5], "2026-10-30T10:00:00Z", 52, 0)
        last = _visit((kind + 1) % len(KINDS), [0, 0, 1, 1], "2026-10-31T10:00:00Z", 52, 1)
        journey = {"ready": True, "days_to_conversion": 1, "customer_order_index": 2,
                   "first_visit": first, "last_visit": last}  # fmt: skip
        assert journey_to_rest({"customerJourneySummary": journey_node(journey)}) == journey
    assert journey_to_rest({"customerJourneySummary": journey_node(None)}) is None
