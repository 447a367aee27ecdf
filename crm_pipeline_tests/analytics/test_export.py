"""export_customers writes exactly the filtered customers, in csv, jsonl and parquet."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from crm_pipeline.analytics.export import EXPORT_COLUMNS, ExportError, export_customers
from crm_pipeline.analytics.metrics import compute_metrics
from crm_pipeline.analytics.segments import refresh_segments
from crm_pipeline_tests.analytics.seed import AS_OF, seed_store


@pytest.fixture
def store(clean_db: sa.Engine) -> sa.Engine:
    seed_store(clean_db, customers=50, seed=41)
    compute_metrics(clean_db, AS_OF)
    refresh_segments(clean_db, AS_OF)
    return clean_db


def expected_ids(engine: sa.Engine, where: str) -> list[str]:
    with engine.connect() as conn:
        return [
            str(r[0])
            for r in conn.execute(
                sa.text(f"SELECT id FROM customers c WHERE {where} ORDER BY id")  # test constant
            )
        ]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_export_writes_filtered_rows(store: sa.Engine, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"customers.{fmt}"
    filters = {"tags": ["promo"], "status": ["active", "vip"]}
    count = export_customers(store, out, fmt, filters, progress=fmt == "csv")
    want = expected_ids(store, "'promo' = ANY(tags) AND status IN ('active', 'vip')")
    assert count == len(want) > 0
    if fmt == "csv":
        with out.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert list(rows[0]) == list(EXPORT_COLUMNS)
        assert all("promo" in r["tags"].split(";") for r in rows)
    elif fmt == "jsonl":
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert all("promo" in r["tags"] for r in rows)
        assert any(r["segments"] for r in rows)
    else:
        table = pq.read_table(out)
        assert table.schema.names == list(EXPORT_COLUMNS)
        rows = table.to_pylist()
    assert [str(r["customer_id"]) for r in rows] == want
    assert not list(tmp_path.glob("*.partial"))


def test_export_by_segment_and_empty_result(store: sa.Engine, tmp_path: Path) -> None:
    n = export_customers(store, tmp_path / "a.jsonl", "jsonl", {"segment": "engagement:dormant"})
    with store.connect() as conn:
        want = conn.execute(
            sa.text(
                "SELECT count(*) FROM customer_segments WHERE segment_name = 'engagement:dormant'"
            )
        ).scalar_one()
    assert n == want
    assert export_customers(store, tmp_path / "b.csv", "csv", {"status": "blocked"}) == 0
    with pytest.raises(ExportError):
        export_customers(store, tmp_path / "c.xml", "xml")  # type: ignore[arg-type]
