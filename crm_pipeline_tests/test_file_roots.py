"""The import and export jobs stay inside their folders; CSV exports cannot carry formulas.

Issue 11, item 5: run config came from anyone who can launch a run and reached any path.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from crm_pipeline.analytics.export import export_customers
from crm_pipeline.db.resource import PostgresResource
from crm_pipeline.defs.analytics.jobs import export_customers_job
from crm_pipeline.defs.customers.jobs import import_customers


@pytest.fixture
def roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """CRM_HOME in tmp_path (default roots under it) and a folder outside both roots."""
    monkeypatch.setenv("CRM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CRM_IMPORTS_DIR", raising=False)
    monkeypatch.delenv("CRM_EXPORTS_DIR", raising=False)
    outside = tmp_path / "outside"
    outside.mkdir()
    return {
        "imports": tmp_path / "home" / "imports",
        "exports": tmp_path / "home" / "exports",
        "outside": outside,
    }


def run_export(database_url: str, out: str) -> dg.ExecuteInProcessResult:
    job = dg.Definitions(
        jobs=[export_customers_job],
        resources={"postgres": PostgresResource(dsn=database_url)},
    ).get_job_def("export_customers")
    config = {"out": out, "format": "jsonl", "filters": {}}
    return job.execute_in_process(run_config={"ops": {"export_customers_op": {"config": config}}})


def run_import(database_url: str, path: str) -> dg.ExecuteInProcessResult:
    job = dg.Definitions(
        jobs=[import_customers], resources={"postgres": PostgresResource(dsn=database_url)}
    ).get_job_def("import_customers")
    config = {"path": path, "dry_run": True}
    return job.execute_in_process(run_config={"ops": {"import_customer_file": {"config": config}}})


def test_export_job_writes_only_inside_the_exports_folder(
    clean_db: sa.Engine, database_url: str, roots: dict[str, Path]
) -> None:
    outside = roots["outside"]
    (roots["exports"]).mkdir(parents=True)
    (roots["exports"] / "out").symlink_to(outside)
    refused = {
        "../outside/a.jsonl": "'..' is not allowed",
        str(outside / "b.jsonl"): "not inside",
        "out/c.jsonl": "not inside",  # a symlink in the root that leads out
        str(roots["exports"]): "not inside",  # the folder itself is not a file
    }
    for out, message in refused.items():
        with pytest.raises(dg.Failure, match=message) as failure:
            run_export(database_url, out)
        assert "CRM_EXPORTS_DIR" in str(failure.value.description)
    assert not list(outside.iterdir())

    result = run_export(database_url, "team/all.jsonl")
    written = roots["exports"] / "team" / "all.jsonl"
    assert result.success and written.exists()
    assert result.output_for_node("export_customers_op") == 0


def test_import_job_reads_only_inside_the_imports_folder(
    clean_db: sa.Engine, database_url: str, roots: dict[str, Path]
) -> None:
    secret = roots["outside"] / "secret.jsonl"
    secret.write_text('{"email": "secret@outside.io"}\n')
    roots["imports"].mkdir(parents=True)
    (roots["imports"] / "linked.jsonl").symlink_to(secret)
    refused = {
        "../outside/secret.jsonl": "'..' is not allowed",
        str(secret): "not inside",
        "linked.jsonl": "not inside",
    }
    for path, message in refused.items():
        with pytest.raises(dg.Failure, match=message) as failure:
            run_import(database_url, path)
        assert "CRM_IMPORTS_DIR" in str(failure.value.description)

    (roots["imports"] / "ok.jsonl").write_text('{"email": "ok@inside.io"}\n')
    result = run_import(database_url, "ok.jsonl")
    assert result.success and result.output_for_node("import_customer_file") == 1


def test_roots_are_configurable(
    clean_db: sa.Engine, database_url: str, roots: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRM_EXPORTS_DIR", str(roots["outside"]))
    assert run_export(database_url, str(roots["outside"] / "x.jsonl")).success
    with pytest.raises(dg.Failure, match="not inside"):
        run_export(database_url, str(roots["exports"] / "x.jsonl"))


def test_csv_export_neutralises_formula_cells(clean_db: sa.Engine, tmp_path: Path) -> None:
    with clean_db.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO customers (email, first_name, last_name, phone_normalized, tags)"
                " VALUES ('f@x.io', :first, :last, '+447700900123', :tags),"
                " ('plain@x.io', 'Ann', 'Bee', NULL, '{}')"
            ),
            {"first": "=1+1", "last": "+SUM(A1)", "tags": ["-2+3", "ok"]},
        )
        cid = conn.execute(sa.text("SELECT id FROM customers WHERE email = 'f@x.io'")).scalar()
        conn.execute(
            sa.text(
                "INSERT INTO customer_addresses"
                " (customer_id, source, external_id, is_default, address1, city, zip)"
                " VALUES (:c, 'manual', 'a-1', true, :a, :city, '@x')"
            ),
            {"c": cid, "a": "\r=cmd|' /C calc'!A0", "city": "\t=1"},
        )
    out = tmp_path / "c.csv"
    export_customers(clean_db, out, "csv")
    with out.open(newline="") as handle:
        rows = {r["email"]: r for r in csv.DictReader(handle)}
    evil = rows["f@x.io"]
    assert evil["first_name"] == "'=1+1"
    assert evil["last_name"] == "'+SUM(A1)"
    assert evil["tags"] == "'-2+3;ok"
    assert evil["phone_normalized"] == "'+447700900123"
    assert evil["address1"] == "'\r=cmd|' /C calc'!A0"
    assert evil["city"] == "'\t=1"
    assert evil["zip"] == "'@x"
    assert rows["plain@x.io"]["first_name"] == "Ann"
    assert rows["plain@x.io"]["full_name"] == "Ann Bee"
    # jsonl keeps the data as it is (no spreadsheet reads it as a formula)
    export_customers(clean_db, tmp_path / "c.jsonl", "jsonl")
    records = [json.loads(line) for line in (tmp_path / "c.jsonl").read_text().splitlines()]
    assert {r["first_name"] for r in records} == {"=1+1", "Ann"}
