"""Fields that make customer documents queryable by the admin app's list page.

Money is mirrored as exact strings for display, but Firestore orders strings lexically ("9.00" >
"10.00"), so every money value the list sorts or filters by also gets a double next to it
(`<name>_amount`). Segments and sources are arrays of maps for the detail page, and Firestore's
`array-contains` needs the exact element, so their names are repeated as arrays of strings. The
search box queries `search_tokens` (lower-cased prefixes of the names and of the email the
document already holds) with `array-contains`. The queries themselves are in
crm_pipeline/firestore/queries.py and docs/firestore-mirror.md#query-catalogue.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

#: Money strings in `metrics` that also get a numeric `<name>_amount` double.
MONEY_METRICS = (
    "total_spent",
    "total_refunded",
    "net_revenue",
    "average_order_value",
    "lifetime_value",
    "predicted_ltv",
)
AMOUNT_SUFFIX = "_amount"
#: Longest prefix token: the app cuts a longer search term to this length (and may then narrow
#: the page in the browser).
MAX_TOKEN_LENGTH = 24


def amount(text: str | None) -> float | None:
    """A money string as a double (null stays null); exact for cents below 2**53."""
    return None if text is None else float(Decimal(text))


def prefixes(text: str | None) -> set[str]:
    """Lower-cased prefixes (1..MAX_TOKEN_LENGTH characters) of a trimmed, lower-cased text."""
    value = (text or "").strip().lower()
    return {value[:n] for n in range(1, min(len(value), MAX_TOKEN_LENGTH) + 1)}


def search_tokens(data: dict[str, Any]) -> list[str]:
    """Prefix tokens of first name, last name, full name and email (sorted, for a stable hash)."""
    tokens: set[str] = set()
    for key in ("first_name", "last_name", "full_name", "email"):
        tokens |= prefixes(data.get(key))
    return sorted(tokens)


def add_query_fields(data: dict[str, Any]) -> None:
    """Add the numeric, array and token fields to a customer document built by documents.py."""
    metrics = data["metrics"]
    for key in MONEY_METRICS:
        metrics[key + AMOUNT_SUFFIX] = amount(metrics.get(key))
    data["segment_names"] = [segment["name"] for segment in data["segments"]]
    data["source_names"] = sorted({source["source"] for source in data["sources"]})
    data["search_tokens"] = search_tokens(data)
