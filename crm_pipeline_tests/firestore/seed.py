"""Synthetic customers with every table the mirror reads, inserted set-based (tests and bench).

Deterministic: customer i has id md5('crm-mirror-' || i)::uuid, so tests can name customers.
"""

from __future__ import annotations

import sqlalchemy as sa

_SEED_SQL = [
    """
    INSERT INTO customers (id, email, phone, phone_normalized, first_name, last_name, status,
                           customer_type, tags, notes, internal_notes, accepts_email_marketing,
                           accepts_sms_marketing, created_at, last_active_at)
    SELECT md5('crm-mirror-' || i)::uuid,
           'customer' || i || '@example.com',
           '+1 555 ' || lpad(i::text, 7, '0'),
           '+1555' || lpad(i::text, 7, '0'),
           (ARRAY['Ada', 'Grace', 'Alan', 'Edsger', 'Barbara', 'Ken'])[1 + i % 6],
           CASE WHEN i % 9 = 0 THEN NULL ELSE 'Surname' || i END,
           CASE i % 10 WHEN 0 THEN 'vip' WHEN 1 THEN 'inactive' WHEN 2 THEN 'blocked'
                ELSE 'active' END,
           (ARRAY['registered', 'guest', 'wholesale', 'affiliate'])[1 + i % 4],
           ARRAY['tag' || (i % 5)],
           CASE WHEN i % 3 = 0 THEN 'Prefers email' END,
           CASE WHEN i % 4 = 0 THEN 'Called about a refund' END,
           i % 2 = 0,
           i % 5 = 0,
           timestamptz '2024-01-01 00:00:00+00' + (i % 365) * interval '1 day'
               + (i * 7919 % 1000000) * interval '1 microsecond',
           timestamptz '2025-06-01 12:00:00+00' - (i % 200) * interval '1 hour'
    FROM generate_series(CAST(:first AS int), CAST(:last AS int)) AS i
    """,
    """
    INSERT INTO customer_sources (customer_id, source, external_id, source_data, last_synced_at)
    SELECT md5('crm-mirror-' || i)::uuid, s.source, s.prefix || i, '{}'::jsonb,
           timestamptz '2025-06-02 00:00:00+00'
    FROM generate_series(CAST(:first AS int), CAST(:last AS int)) AS i
    CROSS JOIN (VALUES ('shopify', 'gid-'), ('klaviyo', 'kl-')) AS s(source, prefix)
    WHERE s.source = 'shopify' OR i % 2 = 0
    """,
    """
    INSERT INTO customer_addresses (customer_id, source, external_id, address_type, is_default,
                                    address1, city, province, province_code, country,
                                    country_code, zip, latitude, longitude)
    SELECT md5('crm-mirror-' || i)::uuid, 'shopify', 'addr-' || i || '-' || k,
           CASE WHEN k = 1 THEN 'shipping' ELSE 'billing' END, k = 1,
           k || ' Main Street', 'Springfield', 'Oregon', 'OR', 'United States', 'US', '97477',
           44.05, -123.02
    FROM generate_series(CAST(:first AS int), CAST(:last AS int)) AS i
    CROSS JOIN generate_series(1, 2) AS k
    WHERE k = 1 OR i % 4 = 0
    """,
    """
    INSERT INTO orders (id, customer_id, source, external_id, created_at, cancelled_at,
                        financial_status, fulfillment_status, total_price, total_refunded,
                        currency)
    SELECT md5('crm-order-' || i || '-' || k)::uuid, md5('crm-mirror-' || i)::uuid, 'shopify',
           'ord-' || i || '-' || k,
           timestamptz '2025-01-01 10:00:00+00' + (i % 100) * interval '1 day'
               + k * interval '3 days',
           CASE WHEN k = 3 THEN timestamptz '2025-05-01 00:00:00+00' END,
           CASE WHEN k = 2 THEN 'refunded' ELSE 'paid' END,
           CASE WHEN k = 1 THEN 'fulfilled' END,
           19.99 * k, CASE WHEN k = 2 THEN 19.99 * k ELSE 0 END, 'USD'
    FROM generate_series(CAST(:first AS int), CAST(:last AS int)) AS i
    CROSS JOIN generate_series(1, 3) AS k
    WHERE k <= i % 4
    """,
    """
    INSERT INTO order_line_items (order_id, external_id, product_id, title, vendor,
                                  product_type, quantity, price)
    SELECT md5('crm-order-' || i || '-' || k)::uuid, 'li-' || n, 'p-' || n, 'Product ' || n,
           'Acme', 'Widgets', n, 9.995 * k
    FROM generate_series(CAST(:first AS int), CAST(:last AS int)) AS i
    CROSS JOIN generate_series(1, 3) AS k
    CROSS JOIN generate_series(1, 2) AS n
    WHERE k <= i % 4
    """,
    """
    INSERT INTO customer_activities (customer_id, activity_type, occurred_at, session_id,
                                     utm_source, properties, source, external_id)
    SELECT md5('crm-mirror-' || i)::uuid,
           (ARRAY['page_view', 'email_open', 'email_click', 'add_to_cart', 'purchase'])[1 + k % 5],
           timestamptz '2025-05-01 08:00:00+00' + (i % 50) * interval '1 hour'
               + k * interval '1 minute',
           'sess-' || i, 'newsletter',
           jsonb_build_object('campaign', 'Spring', 'n', k, '', 'empty key'),
           'klaviyo', 'evt-' || i || '-' || k
    FROM generate_series(CAST(:first AS int), CAST(:last AS int)) AS i
    CROSS JOIN generate_series(1, 5) AS k
    WHERE k <= i % 6
    """,
    """
    INSERT INTO customer_metrics (customer_id, total_orders, completed_orders, cancelled_orders,
                                  total_spent, total_refunded, net_revenue, average_order_value,
                                  lifetime_value, items_purchased, favorite_category,
                                  favorite_brand, first_order_date, last_order_date,
                                  days_since_last_order, email_opens, email_clicks, open_rate,
                                  click_rate, engagement_score, churn_probability,
                                  predicted_purchases_90d, predicted_next_order_date,
                                  predicted_ltv, scoring_method, computed_at)
    SELECT md5('crm-mirror-' || i)::uuid, i % 4, greatest(i % 4 - 1, 0), (i % 4 = 3)::int,
           19.99 * (i % 4), 0, 19.99 * (i % 4),
           CASE WHEN i % 4 = 0 THEN 0 ELSE 19.99 END, 19.99 * (i % 4) * 1.5, 3 * (i % 4),
           'Widgets', 'Acme',
           CASE WHEN i % 4 > 0 THEN timestamptz '2025-01-04 10:00:00+00' END,
           CASE WHEN i % 4 > 0 THEN timestamptz '2025-03-01 10:00:00+00' END,
           CASE WHEN i % 4 > 0 THEN 90 END,
           i % 12, i % 5, round((i % 100) / 100.0, 4), round((i % 50) / 100.0, 4),
           (i % 100)::numeric, round((i % 97) / 97.0, 4), 0.5 + (i % 3),
           date '2025-07-01' + (i % 30), 25.5 * (i % 4), 'heuristic',
           timestamptz '2025-06-03 00:00:00+00'
    FROM generate_series(CAST(:first AS int), CAST(:last AS int)) AS i
    """,
    """
    INSERT INTO customer_segments (customer_id, segment_name, segment_type, confidence,
                                   assigned_by, assigned_at, expires_at)
    SELECT md5('crm-mirror-' || i)::uuid, s.name, s.type, s.confidence, 'system',
           timestamptz '2025-06-03 00:00:00+00', timestamptz '2025-07-03 00:00:00+00'
    FROM generate_series(CAST(:first AS int), CAST(:last AS int)) AS i
    CROSS JOIN (VALUES ('high_value', 'value', 1.0, 0), ('at_risk', 'behavioral', 0.8, 1),
                       ('newsletter/fans', 'custom', 0.95, 2)) AS s(name, type, confidence, m)
    WHERE i % 3 = s.m
    """,
]


def customer_id(i: int) -> str:
    """The id seed_customers gives customer number i."""
    import hashlib
    import uuid

    return str(uuid.UUID(hashlib.md5(f"crm-mirror-{i}".encode()).hexdigest()))


def seed_customers(engine: sa.Engine, count: int, first: int = 1, chunk: int = 50_000) -> None:
    """Insert customers first..first+count-1 with metrics, segments, addresses, orders, events."""
    last = first + count - 1
    for start in range(first, last + 1, chunk):
        stop = min(start + chunk - 1, last)
        with engine.begin() as conn:
            for statement in _SEED_SQL:
                conn.execute(sa.text(statement), {"first": start, "last": stop})


_HISTORY_SQL = [
    # Times are a permutation of the insertion order (7919 is prime to both counts), so a
    # subcollection read in id order is not already in time order.
    """
    INSERT INTO orders (id, customer_id, source, external_id, created_at, financial_status,
                        total_price, total_refunded, currency)
    SELECT md5('crm-history-order-' || c.i || '-' || k)::uuid, c.id, 'shopify',
           'hist-ord-' || c.i || '-' || k,
           timestamptz '2023-01-01 00:00:00+00' + ((k * 7919) % :orders) * interval '1 hour',
           'paid', 10 + k, 0, 'USD'
    FROM (SELECT md5('crm-mirror-' || i)::uuid AS id, i
          FROM generate_series(CAST(:first AS int), CAST(:last AS int)) AS i) c
    CROSS JOIN generate_series(1, :orders) AS k
    """,
    """
    INSERT INTO customer_activities (customer_id, activity_type, occurred_at, properties, source,
                                     external_id)
    SELECT c.id, (ARRAY['page_view', 'email_open', 'product_view', 'add_to_cart'])[1 + k % 4],
           timestamptz '2023-01-01 00:00:00+00' + ((k * 7919) % :activities) * interval '1 minute',
           jsonb_build_object('n', k), 'klaviyo', 'hist-evt-' || c.i || '-' || k
    FROM (SELECT md5('crm-mirror-' || i)::uuid AS id, i
          FROM generate_series(CAST(:first AS int), CAST(:last AS int)) AS i) c
    CROSS JOIN generate_series(1, :activities) AS k
    """,
]


def seed_history(engine: sa.Engine, first: int, last: int, orders: int, activities: int) -> None:
    """Give seeded customers first..last `orders` more orders and `activities` more events."""
    params = {"first": first, "last": last, "orders": orders, "activities": activities}
    with engine.begin() as conn:
        for statement in _HISTORY_SQL:
            conn.execute(sa.text(statement), params)
