"""The admin app's customer-list queries, as data: the catalogue, its indexes and its doc text.

The list page combines at most one filter (status, segment, source, tag, country or the search
box) with one sort (LTV, last order, churn risk, created; highest/newest first). Firestore needs a
composite index for every filter+sort pair; a sort alone uses the automatic single-field index,
which `firestore.indexes.json` also states as a field override so every query has an entry.
`firestore.indexes.json` is generated from this module (`python -m crm_pipeline.firestore.queries
> firestore.indexes.json`) and a test keeps the file, the catalogue in
docs/firestore-mirror.md#query-catalogue and the emulator's answers in step with PostgreSQL.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from crm_pipeline.firestore.documents import CUSTOMERS

PAGE_SIZE = 50
Operator = Literal["==", "array-contains"]


@dataclass(frozen=True)
class Filter:
    name: str
    field: str
    op: Operator
    parameter: str


@dataclass(frozen=True)
class Sort:
    name: str
    field: str


@dataclass(frozen=True)
class ListQuery:
    """One list-page query: an optional equality/array-contains filter, a descending sort."""

    filter: Filter | None
    sort: Sort

    @property
    def name(self) -> str:
        return f"{self.filter.name if self.filter else 'all'}_by_{self.sort.name}"

    def web_text(self) -> str:
        """The query as the app writes it with the Firebase JS SDK (v9 modular API)."""
        parts = [f'collection(db, "{CUSTOMERS}")']
        if self.filter is not None:
            parts.append(
                f'where("{self.filter.field}", "{self.filter.op}", {self.filter.parameter})'
            )
        parts.append(f'orderBy("{self.sort.field}", "desc")')
        parts.append(f"limit({PAGE_SIZE})")
        return "query(" + ", ".join(parts) + ")"

    def index(self) -> dict[str, Any] | None:
        """Its composite index in firestore.indexes.json form (None: single-field suffices)."""
        if self.filter is None:
            return None
        first: dict[str, str] = {"fieldPath": self.filter.field}
        if self.filter.op == "array-contains":
            first["arrayConfig"] = "CONTAINS"
        else:
            first["order"] = "ASCENDING"
        return {
            "collectionGroup": CUSTOMERS,
            "queryScope": "COLLECTION",
            "fields": [first, {"fieldPath": self.sort.field, "order": "DESCENDING"}],
        }


FILTERS = (
    Filter("status", "status", "==", "status"),
    Filter("segment", "segment_names", "array-contains", "segmentName"),
    Filter("source", "source_names", "array-contains", "source"),
    Filter("tag", "tags", "array-contains", "tag"),
    Filter("country", "default_address.country_code", "==", "countryCode"),
    Filter("search", "search_tokens", "array-contains", "term.trim().toLowerCase().slice(0, 24)"),
)
SORTS = (
    Sort("ltv", "metrics.lifetime_value_amount"),
    Sort("last_order", "metrics.last_order_at"),
    Sort("churn_risk", "metrics.churn_probability"),
    Sort("created", "created_at"),
)
CATALOGUE: tuple[ListQuery, ...] = tuple(ListQuery(f, s) for f in (None, *FILTERS) for s in SORTS)


def indexes_document() -> dict[str, Any]:
    """The content of firestore.indexes.json for the catalogue."""
    indexes = [index for query in CATALOGUE if (index := query.index()) is not None]
    overrides = [
        {
            "collectionGroup": CUSTOMERS,
            "fieldPath": sort.field,
            "indexes": [
                {"order": "ASCENDING", "queryScope": "COLLECTION"},
                {"order": "DESCENDING", "queryScope": "COLLECTION"},
            ],
        }
        for sort in SORTS
    ]
    return {"indexes": indexes, "fieldOverrides": overrides}


def indexes_json() -> str:
    return json.dumps(indexes_document(), indent=2) + "\n"


def catalogue_markdown() -> str:
    """The catalogue table of docs/firestore-mirror.md."""
    lines = ["| query | Firestore query (JS SDK) | index |", "|---|---|---|"]
    for query in CATALOGUE:
        index = query.index()
        where = (
            "single-field (automatic; field override)"
            if index is None
            else " + ".join(
                f"`{f['fieldPath']}` {f.get('order', f.get('arrayConfig'))}"
                for f in index["fields"]
            )
        )
        lines.append(f"| `{query.name}` | `{query.web_text()}` | {where} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(indexes_json(), end="")  # noqa: T201 - the generator's output is the file
