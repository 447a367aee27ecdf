"""Mask personal data in free text before it is logged, stored as an error or shown in Dagster.

Error texts carry whatever the failing value was: a PostgreSQL unique violation says
`Key (email_lowercase)=(x@y.com) already exists`, a validation message may quote a phone. Every
place that keeps such a text (webhook `last_error`, quarantine reasons, mirror errors and sync
logs, log lines, run metadata) passes it through `mask_pii` first. Ids that are not personal
(subject keys like `shopify:123`, gids, uuids, timestamps) are left readable for operators.
"""

from __future__ import annotations

import re

MASK = "***"

# `Key (col, ...)=(value, ...)` in PostgreSQL constraint details: the values are the row's data.
_PG_KEY_DETAIL = re.compile(r"(Key \([^)]*\)=\()(.*?)(\) (?:already exists|conflicts|is not))")
# `Failing row contains (...)` (check and not-null violations) quotes the whole row.
_PG_FAILING_ROW = re.compile(r"(Failing row contains \().*(\))")
# SQLAlchemy appends the statement's bound values: data, never needed to act on the error.
_SA_PARAMETERS = re.compile(r"\[parameters: .*?\](?=\s*(?:\(Background on this error|$))", re.S)
_EMAIL = re.compile(r"[^\s@<>()\[\]{},;:\"'`]+@[^\s@<>()\[\]{},;:\"'`]+")
# left readable: ISO dates/times, uuids, source subject keys and Shopify gids (not personal)
_KEEP = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
    r"|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|(?:shopify|klaviyo|manual|crm):[\w-]+"
    r"|gid://shopify/\w+/\d+"
)
# a phone: 7 or more digits, optionally with +, spaces, dots, dashes and parentheses between
_PHONE = re.compile(r"\+?\(?\d(?:[\s().-]{0,2}\d){6,}")


def _mask_numbers(text: str) -> str:
    out: list[str] = []
    last = 0
    for kept in _KEEP.finditer(text):
        out.append(_PHONE.sub(MASK, text[last : kept.start()]))
        out.append(kept.group(0))
        last = kept.end()
    out.append(_PHONE.sub(MASK, text[last:]))
    return "".join(out)


def mask_pii(text: object) -> str:
    """The text with emails, phone-like numbers and PostgreSQL key values replaced by `***`."""
    if text is None:
        return ""
    masked = _PG_KEY_DETAIL.sub(lambda m: f"{m.group(1)}{MASK}{m.group(3)}", str(text))
    masked = _PG_FAILING_ROW.sub(lambda m: f"{m.group(1)}{MASK}{m.group(2)}", masked)
    masked = _SA_PARAMETERS.sub(f"[parameters: {MASK}]", masked)
    masked = _EMAIL.sub(MASK, masked)
    return _mask_numbers(masked)


def mask_optional(text: str | None) -> str | None:
    """`mask_pii` that keeps None (a column without an error stays NULL)."""
    return None if text is None else mask_pii(text)
