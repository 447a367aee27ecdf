"""`crm-pipeline import`: Shopify CSV export, Klaviyo CSV export, JSON Lines; dry run; re-runs."""

from __future__ import annotations

import csv
from pathlib import Path

import sqlalchemy as sa
from typer.testing import CliRunner

from crm_pipeline.cli import app
from crm_pipeline.ingest.files import import_file

SHOPIFY_HEADERS = [
    "Customer ID", "First Name", "Last Name", "Email", "Accepts Email Marketing",
    "Default Address Company", "Default Address Address1", "Default Address Address2",
    "Default Address City", "Default Address Province Code", "Default Address Country Code",
    "Default Address Zip", "Default Address Phone", "Phone", "Accepts SMS Marketing",
    "Total Spent", "Total Orders", "Note", "Tax Exempt", "Tags",
]  # fmt: skip


def shopify_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=SHOPIFY_HEADERS)
        writer.writeheader()
        for row in rows:
            writer.writerow({h: row.get(h, "") for h in SHOPIFY_HEADERS})
    return path


ROWS = [
    {
        "Customer ID": "'7001",
        "First Name": "Zoë",
        "Last Name": "Ng",
        "Email": "Zoe@Example.com",
        "Accepts Email Marketing": "yes",
        "Default Address City": "Leeds",
        "Default Address Country Code": "GB",
        "Phone": "07911 123456",
        "Tags": "vip, wholesale",
        "Total Spent": "120.50",
        "Total Orders": "3",
    },
    {
        "Customer ID": "'7002",
        "First Name": "Bo",
        "Email": "bo@example.com",
        "Accepts Email Marketing": "no",
    },
    {"Customer ID": "", "First Name": "Nobody"},  # no identity at all
    {"Customer ID": "'7004", "First Name": "Bad", "Email": "bad-email"},  # invalid email
]


def count(engine: sa.Engine, sql: str) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text(sql)).scalar_one()


def test_shopify_csv_import_reports_and_dry_run_writes_nothing(clean_db, tmp_path) -> None:
    path = shopify_csv(tmp_path / "customers_export.csv", ROWS)
    runner = CliRunner()
    dry = runner.invoke(app, ["import", str(path), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "dry run" in dry.output and "new customers:    2" in dry.output
    assert count(clean_db, "SELECT count(*) FROM customers") == 0
    assert count(clean_db, "SELECT count(*) FROM quarantined_records") == 0

    real = runner.invoke(app, ["import", str(path)])
    assert real.exit_code == 0, real.output
    assert "new customers:    2" in real.output and "quarantined:      2" in real.output
    assert "external_id: missing" in real.output and "email: invalid_email" in real.output
    with clean_db.connect() as conn:
        zoe = (
            conn.execute(
                sa.text(
                    "SELECT c.*, a.city FROM customers c "
                    "JOIN customer_addresses a ON a.customer_id = c.id "
                    "WHERE email_lowercase = 'zoe@example.com'"
                )
            )
            .mappings()
            .one()
        )
    assert zoe["phone_normalized"] == "+447911123456"  # national UK number, region from address
    assert zoe["tags"] == ["vip", "wholesale"] and zoe["accepts_email_marketing"] is True
    assert zoe["city"] == "Leeds" and zoe["first_name"] == "Zoë"

    again = runner.invoke(app, ["import", str(path)])
    assert "unchanged:        2" in again.output and "new customers:    0" in again.output
    assert count(clean_db, "SELECT count(*) FROM quarantined_records") == 2


def test_import_links_to_existing_customers_and_jsonl_and_klaviyo_csv(clean_db, tmp_path) -> None:
    shopify_csv(tmp_path / "a.csv", ROWS[:2])
    import_file(clean_db, tmp_path / "a.csv")
    jsonl = tmp_path / "people.jsonl"
    jsonl.write_text(
        '{"email": " BO@example.com ", "first_name": "Bo", "tags": ["newsletter"]}\n'
        '{"email": "new@example.com", "first_name": "New"}\n'
        "this line is not json\n",
        encoding="utf-8",
    )
    result = import_file(clean_db, jsonl)
    assert (result.report.inserted, result.report.linked, result.report.quarantined_total) == (
        1,
        1,
        1,
    )
    klaviyo = tmp_path / "klaviyo_profiles.csv"
    klaviyo.write_text(
        "Email,First Name,Last Name,Phone Number,City,State / Region,Country,"
        "Email Marketing Consent,Klaviyo ID\n"
        "zoe@example.com,Zoe,Ng,,Leeds,,GB,SUBSCRIBED,01HKLAV\n",
        encoding="utf-8",
    )
    result = import_file(clean_db, klaviyo)
    assert result.format == "klaviyo_csv" and result.report.linked == 1
    assert count(clean_db, "SELECT count(*) FROM customers") == 3
    with clean_db.connect() as conn:
        tags = conn.execute(
            sa.text("SELECT tags FROM customers WHERE email_lowercase = 'bo@example.com'")
        ).scalar_one()
    assert tags == ["newsletter"]


def test_unknown_files_are_refused_clearly(clean_db, tmp_path) -> None:
    odd = tmp_path / "odd.csv"
    odd.write_text("a,b\n1,2\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["import", str(odd)])
    assert result.exit_code == 2 and "unrecognised CSV" in result.output
