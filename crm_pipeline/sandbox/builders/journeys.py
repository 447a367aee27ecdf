"""Customer journeys of the generated orders (`customer_journey_summary` in orders.jsonl) and the
Klaviyo credit their Placed Order events carry, so the attribution views and charts have a
realistic mix: direct, organic search, paid social, Klaviyo email and referral visits; orders
from POS and drafts have no journey, and a share of web orders (most of the last two days')
have one Shopify has not built yet (`ready: false`).

Drawn from their own random stream (seed, chunk, 15), so adding journeys left every other
field of the store as it was.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from crm_pipeline.sandbox.builders.base import DAY, klaviyo_times, pools_source_names
from crm_pipeline.sandbox.builders.shopify import ShopifyBuilder

KINDS = ("direct", "organic_search", "paid_social", "email", "referral")
KIND_ODDS = (0.27, 0.24, 0.19, 0.18, 0.12)
SAME_LAST_TOUCH = 0.55  # the last visit came the same way as the first
NOT_READY = 0.04  # web orders whose journey Shopify has not built
NOT_READY_RECENT = 0.5  # ... among orders of the last two days
KLAVIYO_ASSIST = 0.3  # orders first reached by email that Klaviyo credits though the last
# visit came another way (its click window is days long)
NO_JOURNEY_SOURCES = frozenset({"pos", "shopify_draft_order"})

SEARCH = ("google", "bing", "duckduckgo")
SOCIAL = ("facebook", "instagram", "tiktok")
REFERRERS = (
    "https://www.reddit.com/r/deals/",
    "https://blog.example.org/gift-guide",
    "https://news.ycombinator.com/item",
    "https://www.wirecutter.com/reviews/",
)
FLOWS = (("welcome-series", "XkR2fa"), ("abandoned-cart", "Ub7Qme"),
         ("browse-abandonment", "Pw4Hzn"), ("win-back", "Tc9Lsd"))  # fmt: skip
CAMPAIGNS = ("black-friday", "new-arrivals", "flash-sale", "weekly-newsletter")
SHOP = "https://shop.example.com"
PAGES = ("/", "/collections/all", "/products/best-seller", "/collections/sale")


def _visit(kind: int, pick: list[int], at: str, order_id: int, touch: int) -> dict:
    """One visit of `kind`; `pick` holds four random ints choosing its details."""
    page = SHOP + PAGES[pick[0] % len(PAGES)]
    visit: dict[str, Any] = {
        "id": order_id * 2 + touch,
        "occurred_at": at,
        "source": "direct",
        "source_type": None,
        "source_description": None,
        "landing_page": page,
        "referrer_url": None,
        "referral_code": None,
        "utm_parameters": None,
        "marketing_event": None,
    }
    name = KINDS[kind]
    if name == "organic_search":
        engine = SEARCH[pick[1] % len(SEARCH)]
        visit |= {"source": engine, "source_type": "SEO",
                  "referrer_url": f"https://www.{engine}.com/"}  # fmt: skip
    elif name == "paid_social":
        network = SOCIAL[pick[1] % len(SOCIAL)]
        campaign = ("holiday-prospecting", "retargeting-q4", "spring-launch")[pick[2] % 3]
        visit |= {
            "source": network,
            "source_type": "AD",
            "referrer_url": f"https://l.{network}.com/",
            "landing_page": f"{page}?utm_source={network}&utm_medium=paid_social",
            "utm_parameters": {
                "source": network,
                "medium": "paid_social",
                "campaign": campaign,
                "content": f"ad-{pick[3] % 8 + 1}",
                "term": None,
            },  # fmt: skip
            "marketing_event": {
                "id": 4_400_000 + pick[3] % 40,
                "type": "AD",
                "marketing_channel_type": "SOCIAL",
                "source_and_medium": f"{network.title()} ad",
                "utm_campaign": campaign,
                "utm_medium": "paid_social",
                "utm_source": network,
            },
        }
    elif name == "email":
        flow = pick[1] % (len(FLOWS) + len(CAMPAIGNS))
        campaign = FLOWS[flow][0] if flow < len(FLOWS) else CAMPAIGNS[flow - len(FLOWS)]
        visit |= {
            "source": "klaviyo",
            "source_type": "NEWSLETTER",
            "landing_page": f"{page}?utm_source=klaviyo&utm_medium=email",
            "utm_parameters": {
                "source": "klaviyo",
                "medium": "email",
                "campaign": campaign,
                "content": None,
                "term": None,
            },  # fmt: skip
        }
    elif name == "referral":
        referrer = REFERRERS[pick[1] % len(REFERRERS)]
        visit |= {"source": referrer.split("/")[2], "referrer_url": referrer}
    return visit


class JourneyBuilder(ShopifyBuilder):
    """Adds journeys to the orders drawn by ShopifyBuilder.orders()."""

    def journeys(self) -> None:
        r = np.random.default_rng([self.seed, self.plan.index, 15])
        n = len(self.order_id)
        ids = self.order_id.tolist()
        index = (self.order_seq % 1000 + 1).tolist()
        sources = pools_source_names()
        source = self.order_source.tolist()
        first_kind = r.choice(len(KINDS), size=n, p=KIND_ODDS).tolist()
        same = (r.random(n) < SAME_LAST_TOUCH).tolist()
        last_draw = r.choice(len(KINDS), size=n, p=KIND_ODDS).tolist()
        days = np.minimum(r.geometric(0.35, n) - 1, 60)
        first_t = self.order_time - days * DAY - r.integers(600, 20_000, n)
        last_t = np.maximum(first_t, self.order_time - r.integers(120, 3_000, n))
        first_s, last_s = klaviyo_times(first_t), klaviyo_times(last_t)
        last_tl = last_t.tolist()
        picks = r.integers(0, 1 << 30, (n, 2, 4)).tolist()
        days_l = days.tolist()
        recent = self.order_time > self.ref - 2 * DAY
        not_ready = (r.random(n) < np.where(recent, NOT_READY_RECENT, NOT_READY)).tolist()
        assist = (r.random(n) < KLAVIYO_ASSIST).tolist()
        journeys: list[dict | None] = []
        credits: list[dict | None] = []
        for o in range(n):
            last_kind = first_kind[o] if same[o] else last_draw[o]
            first = _visit(first_kind[o], picks[o][0], first_s[o], ids[o], 0)
            last = _visit(last_kind, picks[o][1], last_s[o], ids[o], 1)
            credits.append(self._credit(first, last, last_tl[o], assist[o]))
            if sources[source[o]] in NO_JOURNEY_SOURCES:
                journeys.append(None)
                credits[-1] = None
            elif not_ready[o]:
                journeys.append({"ready": False, "days_to_conversion": None,
                                 "customer_order_index": None, "first_visit": None,
                                 "last_visit": None})  # fmt: skip
            else:
                journeys.append({"ready": True, "days_to_conversion": days_l[o],
                                 "customer_order_index": index[o], "first_visit": first,
                                 "last_visit": last})  # fmt: skip
        self.order_journey = journeys
        self.order_klaviyo_credit = credits

    @staticmethod
    def _credit(first: dict, last: dict, last_at: int, assist: bool) -> dict | None:
        """Klaviyo's `$attribution` on the Placed Order event: the email visit that led to it."""
        if last["source"] == "klaviyo":
            visit = last
        elif first["source"] == "klaviyo" and assist:
            visit = first
        else:
            return None
        campaign = visit["utm_parameters"]["campaign"]
        flows = dict(FLOWS)
        credit = {"$attributed_channel": "email", "$send_ts": last_at - 3_600,
                  "$attributed_event_id": f"send-{visit['id']}"}  # fmt: skip
        if campaign in flows:
            credit |= {"$flow": flows[campaign], "$message": f"{flows[campaign]}-m1"}
        else:
            credit["$message"] = f"campaign-{campaign}"
        return credit
