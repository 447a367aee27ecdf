"""Input that cannot be loaded as it came becomes a quarantine row, never a failed run.

PostgreSQL refuses NUL characters in text and jsonb, and text that is not UTF-8; a line that is
not JSON, or JSON but not an object, maps to nothing; a record can break its mapping. Each such
input travels through the load as an `Unreadable` carrying its reasons and a copy of the input
jsonb can hold (escaped text plus the exact bytes in base64), and the loader quarantines it
beside the records that load (ingest/base.py). See docs/quarantine.md.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

NOT_JSON = "record: not valid JSON"
NOT_OBJECT = "record: not a JSON object"
INVALID_UTF8 = "record: invalid UTF-8"
NUL_CHARACTER = "record: NUL character"
WORKER_DIED = "record: its decoding worker process died"

_PREVIEW_CHARS = 2000
_KEPT_BYTES = 64 * 1024
# a JSON \u0000 escape that is not itself an escaped backslash followed by "u0000"
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(slots=True)
class Unreadable:
    """An input the loaders quarantine as is: `record` is safe to store in jsonb."""

    source: str | None
    external_id: str | None
    record: dict[str, Any]
    reasons: list[str] = field(default_factory=list)


def escape_invalid_utf8(data: bytes) -> bytes:
    """JSON text `data` with each byte that is not UTF-8 turned into a `\\udcXX` escape: the
    page still parses, and the strings that held such bytes carry lone surrogates, which
    `value_problem` reports as INVALID_UTF8 for just their record."""
    try:
        data.decode("utf-8")
        return data
    except UnicodeDecodeError:
        text = data.decode("utf-8", "surrogateescape")
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text).encode("utf-8")


def unmappable(exc: BaseException) -> str:
    """The reason for a record its mapping raised on (the type only: messages may hold PII)."""
    return f"record: could not be mapped ({type(exc).__name__})"


def line_record(line: bytes, number: int | None) -> dict[str, Any]:
    """A raw input line as jsonb can hold it: a readable escaped preview and the exact bytes."""
    kept = line[:_KEPT_BYTES]
    record: dict[str, Any] = {
        "_line": number,
        "_raw": escaped_text(line[: _PREVIEW_CHARS * 4].decode("utf-8", "backslashreplace"))[
            :_PREVIEW_CHARS
        ],
        "_raw_base64": base64.b64encode(kept).decode("ascii"),
    }
    if len(kept) < len(line):
        record["_raw_bytes"] = len(line)
    return record


def escaped_text(text: str) -> str:
    """`text` without what PostgreSQL refuses: NUL and lone surrogates (bytes that were not
    UTF-8, decoded with `surrogateescape`) become visible escapes."""
    if "\x00" in text:
        text = text.replace("\x00", "\\u0000")
    if _SURROGATE.search(text):
        text = _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    return text


def storable(value: Any) -> Any:
    """`value` (JSON-like) with every string passed through `escaped_text`, keys included."""
    if isinstance(value, str):
        return escaped_text(value)
    if isinstance(value, dict):
        return {storable(str(k)): storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable(v) for v in value]
    return value


def line_problem(line: bytes) -> str | None:
    """Why a line does not decode into an object (None: it does)."""
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return INVALID_UTF8
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return NOT_JSON
    return None if isinstance(value, dict) else NOT_OBJECT


def json_problem(data: bytes) -> str | None:
    """NUL_CHARACTER when orjson output `data` holds a \\u0000 escape (jsonb refuses it)."""
    if b"\\u0000" in data and _NUL_ESCAPE.search(data):
        return NUL_CHARACTER
    return None


def value_problem(value: Any) -> str | None:
    """Why `value` cannot be stored in text or jsonb columns, or None when it can."""
    try:
        data = orjson.dumps(value, default=str)
    except TypeError as exc:  # orjson.JSONEncodeError
        return INVALID_UTF8 if "UTF-8" in str(exc) else unmappable(exc)
    return json_problem(data)


def unreadable_value(
    value: Any, reasons: list[str], source: str | None, number: int | None = None
) -> Unreadable:
    """An input that parsed (a dict, a list, a scalar) but cannot load."""
    record = {"_value": storable(value)} if not isinstance(value, dict) else storable(value)
    if number is not None:
        record = {**record, "_line": number}
    external_id = value.get("id") if isinstance(value, dict) else None
    return Unreadable(source, _text_id(external_id), record, reasons)


def _text_id(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    return escaped_text(str(value))[:200]


def mapped(
    items: Iterable[Any], map_one: Callable[[Any], Any], source: str | None
) -> Iterator[Any]:
    """`map_one(item)` for each pulled item; an item that is no object, or that its mapping
    raises on, comes out as an `Unreadable` instead of ending the pull (as do the Unreadables
    a client hands out itself)."""
    for item in items:
        if isinstance(item, Unreadable):
            yield item
            continue
        if not isinstance(item, dict):
            yield unreadable_value(item, [NOT_OBJECT], source)
            continue
        try:
            yield map_one(item)
        except Exception as exc:  # noqa: BLE001 (one record's problem, not the run's)
            yield unreadable_value(item, [unmappable(exc)], source)
