"""Fuzzy customer search for people: a thin caller of the search_customers SQL function.

Matching, filters, sort and keyset pagination live in SQL (sql/0004_analytics.sql, made faster
by sql/0007_search_speed.sql, cursors HMAC-signed by sql/0010_search_cursor_hmac.sql) so psql
users and the CLI get the same results; docs/search.md describes them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import psycopg
import sqlalchemy as sa

from crm_pipeline.analytics._db import Bind, transaction

#: Filter keys search_customers / export accept (anything else is an error).
FILTER_KEYS = (
    "status", "customer_type", "source", "tags", "tags_any", "created_from", "created_to",
    "last_order_from", "last_order_to", "country", "attributes", "segment",
    "min_lifetime_value", "max_churn_probability",
)  # fmt: skip
RESULT_COLUMNS = (
    "customer_id", "full_name", "email", "phone", "status", "customer_type", "tags",
    "created_at", "total_orders", "last_order_date", "lifetime_value", "churn_probability",
    "engagement_score", "score",
)  # fmt: skip


# invalid parameter, datetime format, text representation, datetime field overflow
_USER_ERRORS = ("22023", "22007", "22P02", "22008")


class SearchError(ValueError):
    """The query, a filter, the sort or the cursor was not understood."""


@dataclass(frozen=True)
class SearchPage:
    """One page of results and the opaque cursor of the next page (None on the last page)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    next_cursor: str | None = None


def _json_default(value: Any) -> str:
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__} in a filter")


def clean_filters(filters: dict[str, Any] | None) -> dict[str, Any]:
    """Drop empty values (None, '', []) so CLI options that were not given do not filter."""
    cleaned = {k: v for k, v in (filters or {}).items() if v not in (None, "", [], (), {})}
    unknown = sorted(set(cleaned) - set(FILTER_KEYS))
    if unknown:
        raise SearchError(
            f"unknown filter(s): {', '.join(unknown)}; known: {', '.join(FILTER_KEYS)}"
        )
    return {k: list(v) if isinstance(v, tuple) else v for k, v in cleaned.items()}


def filters_json(filters: dict[str, Any] | None) -> str:
    return json.dumps(clean_filters(filters), default=_json_default, sort_keys=True)


def search(
    bind: Bind,
    query: str | None = None,
    filters: dict[str, Any] | None = None,
    sort: str | None = None,
    page_size: int = 25,
    cursor: str | None = None,
) -> SearchPage:
    """One page of live customers matching `query` (fuzzy) and `filters`, in `sort` order.

    Pass the returned `next_cursor` back with the same query, filters and sort for the next page.
    """
    params = {
        "q": query or None,
        "f": filters_json(filters),
        "s": sort or None,
        "n": page_size,
        "c": cursor or None,
    }
    statement = sa.text("SELECT * FROM search_customers(:q, CAST(:f AS jsonb), :s, :n, :c)")
    try:
        with transaction(bind) as conn:
            rows = conn.execute(statement, params).mappings().all()
    except sa.exc.DBAPIError as error:
        orig = error.orig
        if isinstance(orig, psycopg.Error) and orig.sqlstate in _USER_ERRORS:
            raise SearchError(orig.diag.message_primary or str(orig)) from None
        raise
    next_cursor = rows[-1]["next_cursor"] if rows else None
    return SearchPage([{k: r[k] for k in RESULT_COLUMNS} for r in rows], next_cursor)


def render_table(rows: list[dict[str, Any]], title: str | None = None) -> Any:
    """A rich Table of search rows for the terminal (the CLI prints it)."""
    from rich.table import Table

    table = Table(title=title, show_lines=False, header_style="bold")
    for name, justify in (
        ("name", "left"), ("email", "left"), ("phone", "left"), ("status", "left"),
        ("orders", "right"), ("LTV", "right"), ("churn", "right"), ("engagement", "right"),
        ("match", "right"), ("id", "left"),
    ):  # fmt: skip
        table.add_column(name, justify=justify, no_wrap=name in ("email", "id"))

    def num(value: Any, pattern: str) -> str:
        return "" if value is None else format(float(value), pattern)

    for r in rows:
        status = r.get("status") or ""
        table.add_row(
            r.get("full_name") or "",
            r.get("email") or "",
            r.get("phone") or "",
            f"[bold magenta]{status}[/]" if status == "vip" else status,
            "" if r.get("total_orders") is None else str(r["total_orders"]),
            num(r.get("lifetime_value"), ",.2f"),
            num(r.get("churn_probability"), ".0%"),
            num(r.get("engagement_score"), ".0f"),
            num(r.get("score"), ".2f") if r.get("score") else "",
            str(r.get("customer_id", ""))[:8],
        )
    return table
