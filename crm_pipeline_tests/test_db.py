"""The schema as analysts and writers rely on it."""

import pytest
import sqlalchemy as sa

from crm_pipeline.db.migrate import migrate


def test_migrate_is_idempotent(database_url: str) -> None:
    assert migrate(database_url) == []


def test_generated_columns_and_updated_at_trigger(clean_db: sa.Engine) -> None:
    with clean_db.begin() as conn:
        row = conn.execute(
            sa.text(
                "INSERT INTO customers (email, first_name, last_name, updated_at) "
                "VALUES ('  Ana.Lopez@Example.COM ', 'Ana', 'López', now() - interval '1 day') "
                "RETURNING id, email_lowercase, full_name, updated_at"
            )
        ).one()
        assert row.email_lowercase == "ana.lopez@example.com"
        assert row.full_name == "Ana López"
        conn.execute(sa.text("UPDATE customers SET notes = 'x' WHERE id = :id"), {"id": row.id})
        later = conn.execute(
            sa.text("SELECT updated_at FROM customers WHERE id = :id"), {"id": row.id}
        ).scalar_one()
        assert later > row.updated_at


def test_live_email_is_unique_but_deleted_rows_do_not_block(clean_db: sa.Engine) -> None:
    with clean_db.begin() as conn:
        conn.execute(sa.text("INSERT INTO customers (email, deleted_at) VALUES ('a@x.io', now())"))
        conn.execute(sa.text("INSERT INTO customers (email) VALUES ('A@x.io')"))
    with pytest.raises(sa.exc.IntegrityError), clean_db.begin() as conn:
        conn.execute(sa.text("INSERT INTO customers (email) VALUES (' a@X.io')"))


@pytest.mark.parametrize(
    "column, value",
    [("status", "gold"), ("customer_type", "robot"), ("phone_normalized", "555-1234")],
)
def test_enum_and_format_checks(clean_db: sa.Engine, column: str, value: str) -> None:
    with pytest.raises(sa.exc.IntegrityError), clean_db.begin() as conn:
        conn.execute(
            sa.text(f"INSERT INTO customers ({column}) VALUES (:v)"),  # column from parametrize
            {"v": value},
        )


def test_removed_segment_assignments_stay_in_history(clean_db: sa.Engine) -> None:
    with clean_db.begin() as conn:
        insert = sa.text("INSERT INTO customers DEFAULT VALUES RETURNING id")
        cid = conn.execute(insert).scalar_one()
        conn.execute(
            sa.text(
                "INSERT INTO customer_segments (customer_id, segment_name, segment_type) "
                "VALUES (:c, 'vip', 'value')"
            ),
            {"c": cid},
        )
        conn.execute(sa.text("DELETE FROM customer_segments WHERE customer_id = :c"), {"c": cid})
        history = (
            conn.execute(
                sa.text("SELECT segment_name FROM customer_segment_history WHERE customer_id = :c"),
                {"c": cid},
            )
            .scalars()
            .all()
        )
    assert history == ["vip"]


def test_analyst_views_answer(clean_db: sa.Engine) -> None:
    with clean_db.begin() as conn:
        conn.execute(sa.text("INSERT INTO customers (email, status) VALUES ('v@x.io', 'vip')"))
        stats = conn.execute(sa.text("SELECT * FROM customer_stats")).mappings().one()
        assert stats["total_customers"] == 1 and stats["vip_customers"] == 1
        assert conn.execute(sa.text("SELECT count(*) FROM customer_360")).scalar_one() == 1
