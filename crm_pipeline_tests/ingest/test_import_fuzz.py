"""The importer never crashes on what a file holds, and every line is loaded or quarantined.

Hypothesis writes JSON Lines and Shopify CSV files mixing valid customers with random bytes,
arbitrary JSON, objects of the wrong types, NUL characters and bytes that are not UTF-8. After
each import the counts add up, in the report and in the database: rows read = lines in the
file, every one in exactly one bucket; quarantine rows of the run = quarantined; new source
rows = inserted + linked.
"""

from __future__ import annotations

import csv
import io
import itertools
from pathlib import Path

import orjson
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crm_pipeline.ingest.files import import_file

_counter = itertools.count()
# a private-use character marks where a byte that is not UTF-8 goes into a CSV cell
_BAD_BYTE_MARK = "\ue000"

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats()
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
field_values = st.one_of(
    st.text(max_size=20),  # NUL and every other code point but surrogates
    json_values,
    st.sampled_from(["a@example.com", "+14155550123", "vip, b", "2024-01-01T00:00:00Z"]),
)
customer_objects = st.fixed_dictionaries(
    {},
    optional={
        "id": field_values,
        "email": field_values,
        "phone": field_values,
        "first_name": field_values,
        "tags": field_values,
        "addresses": field_values,
        "created_at": field_values,
        "type": st.sampled_from(["profile", "customer"]),
        "attributes": field_values,
    },
)


@st.composite
def jsonl_lines(draw) -> bytes:
    kind = draw(st.sampled_from(["valid", "object", "value", "bytes", "bad_utf8"]))
    n = next(_counter)
    if kind == "valid":
        return orjson.dumps({"email": f"fuzz{n}@example.com", "first_name": f"F{n}"})
    if kind == "value":
        value = draw(json_values)
        if isinstance(value, dict):  # an object: unique, or quarantine would fold repeats
            value = {**value, "_n": n}
        return orjson.dumps(value)
    if kind == "bytes":
        return draw(st.binary(max_size=40)).replace(b"\n", b"")
    line = orjson.dumps({**draw(customer_objects), "_n": n})  # unique: no quarantine dedupe
    if kind == "bad_utf8":
        # the line's length depends on the counter, so draw with fixed bounds (replays agree)
        cut = 1 + draw(st.integers(0, 2**16)) % (len(line) - 1)
        line = line[:cut] + draw(st.sampled_from([b"\xff", b"\xc3(", b"\xed\xa0\x80"])) + line[cut:]
    return line


CSV_HEADERS = ["Customer ID", "First Name", "Last Name", "Email", "Phone", "Tags", "Note"]
csv_cells = st.one_of(
    st.text(max_size=15),
    st.text(max_size=6).map(lambda t: t + _BAD_BYTE_MARK),
    st.sampled_from(["x@example.com", "+447911123456", "'123", "yes"]),
)


@st.composite
def csv_rows(draw) -> list[str]:
    n = next(_counter)
    cells = draw(st.lists(csv_cells, min_size=1, max_size=len(CSV_HEADERS) + 2))
    if draw(st.booleans()):
        cells[:4] = [f"'{n}", f"F{n}", "L", f"fuzz{n}@example.com"]
    cells = (cells + [""] * 7)[: max(len(cells), 7)]
    cells[6] = f"row {n}"  # unique: no quarantine dedupe
    return cells


def write_file(path: Path, fmt: str, lines: list) -> int:
    """Write the file; returns how many records it holds (blank JSON lines are not records)."""
    if fmt == "jsonl":
        path.write_bytes(b"".join(line + b"\n" for line in lines))
        return sum(1 for line in lines if line.strip())
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(CSV_HEADERS)
    writer.writerows(lines)
    data = text.getvalue().encode("utf-8").replace(_BAD_BYTE_MARK.encode(), b"\xff")
    path.write_bytes(data)
    return len(lines)


def scalar(engine: sa.Engine, sql: str, **params: object) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), params).scalar_one()


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    data=st.one_of(
        st.tuples(st.just("jsonl"), st.lists(jsonl_lines(), min_size=1, max_size=12)),
        st.tuples(st.just("csv"), st.lists(csv_rows(), min_size=1, max_size=12)),
    )
)
def test_every_line_is_loaded_or_quarantined(clean_db, tmp_path, data) -> None:
    fmt, lines = data
    n = next(_counter)
    path = tmp_path / (f"fuzz{n}.jsonl" if fmt == "jsonl" else f"fuzz{n}.csv")
    records = write_file(path, fmt, lines)
    sources_before = scalar(clean_db, "SELECT count(*) FROM customer_sources")

    try:
        report = import_file(clean_db, path, run_id=f"fuzz-{n}", chunk_size=5).report
        check_counts(clean_db, report, records, sources_before, n)
    finally:
        with clean_db.begin() as conn:  # identical bad rows of later examples are kept again
            conn.execute(sa.text("UPDATE quarantined_records SET resolved_at = now()"))


def check_counts(clean_db, report, records: int, sources_before: int, n: int) -> None:
    assert report.received == records
    assert report.accounted == records
    quarantined = scalar(
        clean_db, "SELECT count(*) FROM quarantined_records WHERE run_id = :r", r=f"fuzz-{n}"
    )
    assert quarantined == report.quarantined_records
    new_sources = scalar(clean_db, "SELECT count(*) FROM customer_sources") - sources_before
    assert new_sources == report.inserted + report.linked
