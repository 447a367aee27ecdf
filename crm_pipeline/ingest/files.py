"""Bulk import of customer files: streamed, chunked, reported, safe to cancel and to re-run."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from crm_pipeline.ingest.bad_records import (
    Unreadable,
    line_problem,
    line_record,
    unmappable,
    unreadable_value,
)
from crm_pipeline.ingest.customers import CustomerLoader
from crm_pipeline.ingest.report import LoadReport
from crm_pipeline.ingest.workers import decode_in_workers
from crm_pipeline.mapping.files import (
    detect_csv_format,
    map_jsonl_row,
    map_klaviyo_csv_row,
    map_shopify_csv_row,
)
from crm_pipeline.mapping.records import CustomerRecord

FORMATS = ("auto", "shopify_csv", "klaviyo_csv", "jsonl")


class ImportFormatError(ValueError):
    """The file is not in a format we can import."""


@dataclass
class ImportResult:
    file: str
    format: str
    dry_run: bool
    report: LoadReport
    cancelled: bool = False


def detect_format(path: Path) -> str:
    if path.suffix.lower() in {".jsonl", ".ndjson"}:
        return "jsonl"
    with path.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as fh:
        header = next(csv.reader(fh), [])
    try:
        return detect_csv_format(header)
    except ValueError as exc:
        raise ImportFormatError(f"{path.name}: {exc}") from exc


def read_records(
    path: Path, fmt: str, imported_at: datetime, on_bytes: Callable[[int], None] | None = None
) -> Iterator[CustomerRecord | Unreadable]:
    """Stream mapped records from the file; memory stays bounded whatever its size. A line or
    row that cannot be read or mapped comes out as an `Unreadable` (quarantined, counted). The
    file is read here and its lines or rows mapped and encoded in worker processes
    (ingest/workers.py), in order."""
    decode = partial(decode_import_item, fmt, imported_at)
    return decode_in_workers(read_items(path, fmt, on_bytes), decode, source="manual")


# an input of a file as read: a JSONL line or a CSV row with its line number, or an Unreadable
# for a row the CSV reader itself refused
Item = tuple[bytes | dict[str, Any], int] | Unreadable


def read_items(
    path: Path, fmt: str, on_bytes: Callable[[int], None] | None = None
) -> Iterator[Item]:
    """The file's lines or rows, unmapped (`decode_import_item` maps each)."""
    with path.open("rb") as raw:
        if fmt == "jsonl":
            for number, line in enumerate(raw, start=1):
                if on_bytes:
                    on_bytes(len(line))
                if line.strip():
                    yield (line.rstrip(b"\r\n"), number)
            return
        # bytes that are not UTF-8 survive as surrogates; the loader quarantines their row
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="")
        reader = csv.DictReader(text)
        position = 0
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:  # e.g. a field over the size limit: skip just that row
                yield Unreadable("manual", None, {"_line": reader.line_num}, [f"record: {exc}"])
                continue
            if on_bytes:
                now = raw.tell()
                on_bytes(now - position)
                position = now
            yield (_csv_row(row), reader.line_num)


def decode_import_item(fmt: str, imported_at: datetime, item: Item) -> CustomerRecord | Unreadable:
    """One `read_items` item as its record (in a worker process, or here)."""
    if isinstance(item, Unreadable):
        return item
    value, number = item
    if isinstance(value, bytes):
        return _jsonl_record(value, number, imported_at)
    mapper = map_shopify_csv_row if fmt == "shopify_csv" else map_klaviyo_csv_row
    return _mapped_row(mapper, value, number, imported_at)


def _jsonl_record(line: bytes, number: int, imported_at: datetime) -> CustomerRecord | Unreadable:
    try:
        row = orjson.loads(line)
    except orjson.JSONDecodeError:
        row = None
    if not isinstance(row, dict):
        return Unreadable("manual", None, line_record(line, number), [line_problem(line)])
    return _mapped_row(map_jsonl_row, row, number, imported_at)


def _csv_row(row: dict[Any, Any]) -> dict[str, Any]:
    """Cells beyond the header (DictReader's None key) kept under a string key."""
    if None in row:
        row["_extra_cells"] = row.pop(None)
    return row


def _mapped_row(
    mapper: Callable[[dict[str, Any]], CustomerRecord],
    row: dict[str, Any],
    number: int,
    imported_at: datetime,
) -> CustomerRecord | Unreadable:
    try:
        return _stamp(mapper(row), imported_at)
    except Exception as exc:  # noqa: BLE001 (one row's problem, not the import's)
        return unreadable_value(row, [unmappable(exc)], "manual", number)


def _stamp(record: CustomerRecord, imported_at: datetime) -> CustomerRecord:
    # files carry no update time: the import's time makes a changed row win over older data
    if record.source_updated_at is None:
        record.source_updated_at = imported_at
    return record


def import_file(
    engine: sa.Engine,
    path: Path,
    *,
    fmt: str = "auto",
    dry_run: bool = False,
    run_id: str | None = None,
    on_bytes: Callable[[int], None] | None = None,
    chunk_size: int = 10_000,
) -> ImportResult:
    """Import one file. Each chunk commits on its own, so a cancelled import keeps whole chunks
    and a re-run of the same file converges (unchanged rows are recognised by content)."""
    path = Path(path)
    if not path.exists():
        raise ImportFormatError(f"{path}: no such file")
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt not in FORMATS:
        raise ImportFormatError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    loader = CustomerLoader(
        engine,
        origin="import file",
        origin_detail=path.name,
        run_id=run_id,
        dry_run=dry_run,
        defer_indexes=True,  # a first import of a big export is an initial backfill
    )
    imported_at = datetime.now(UTC)
    result = ImportResult(file=str(path), format=fmt, dry_run=dry_run, report=loader.report)
    try:
        loader.load(read_records(path, fmt, imported_at, on_bytes), chunk_size=chunk_size)
    except KeyboardInterrupt:
        result.cancelled = True
    return result


def report_lines(result: ImportResult) -> list[str]:
    r = result.report
    lines = [
        f"file: {result.file} ({result.format})"
        + ("  [dry run: nothing written]" if result.dry_run else ""),
        f"rows read:        {r.received}",
        f"new customers:    {r.inserted}",
        f"linked to existing customers: {r.linked}",
        f"updated:          {r.updated}",
        f"unchanged:        {r.unchanged}",
        f"duplicate rows:   {r.duplicates}",
        f"quarantined:      {r.quarantined_total}",
    ]
    for reason, n in r.quarantined.most_common():
        lines.append(f"    {n:>8}  {reason}")
    if result.cancelled:
        lines.append(
            "CANCELLED: the chunks committed before the interrupt are kept; re-run the "
            "same file to finish (already imported rows are recognised as unchanged)."
        )
    return lines
