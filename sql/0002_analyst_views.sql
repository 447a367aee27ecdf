-- Views analysts start from: one row per live customer, and the dashboard numbers.
-- depends: 0001_core_schema

CREATE OR REPLACE VIEW customer_360 AS
SELECT
    c.id AS customer_id,
    c.email,
    c.email_lowercase,
    c.phone_normalized,
    c.first_name,
    c.last_name,
    c.full_name,
    c.status,
    c.customer_type,
    c.tags,
    c.accepts_email_marketing,
    c.accepts_sms_marketing,
    c.created_at,
    c.last_active_at,
    a.address1, a.city, a.province, a.country, a.country_code, a.zip,
    m.total_orders, m.completed_orders, m.cancelled_orders, m.returned_orders,
    m.total_spent, m.total_refunded, m.net_revenue, m.average_order_value, m.lifetime_value,
    m.items_purchased, m.favorite_category, m.favorite_brand,
    m.first_order_date, m.last_order_date, m.days_since_last_order,
    m.email_opens, m.email_clicks, m.open_rate, m.click_rate, m.engagement_score,
    m.churn_probability, m.predicted_purchases_90d, m.predicted_next_order_date, m.predicted_ltv,
    coalesce((SELECT array_agg(s.segment_name ORDER BY s.segment_name)
              FROM customer_segments s WHERE s.customer_id = c.id), '{}') AS segments,
    coalesce((SELECT jsonb_object_agg(src.source || ':' || src.external_id, src.last_synced_at)
              FROM customer_sources src WHERE src.customer_id = c.id AND src.deleted_at IS NULL),
             '{}'::jsonb) AS sources
FROM customers c
LEFT JOIN LATERAL (
    SELECT * FROM customer_addresses ca
    WHERE ca.customer_id = c.id
    ORDER BY ca.is_default DESC, (ca.source = 'shopify') DESC, ca.id
    LIMIT 1
) a ON true
LEFT JOIN customer_metrics m ON m.customer_id = c.id
WHERE c.deleted_at IS NULL AND c.merged_into IS NULL;

COMMENT ON VIEW customer_360 IS 'One row per live customer: profile, default address, metrics, segment names, sources.';

CREATE OR REPLACE VIEW customer_stats AS
WITH live AS (
    SELECT c.id, c.status, c.created_at, m.lifetime_value, m.churn_probability, m.total_orders
    FROM customers c LEFT JOIN customer_metrics m ON m.customer_id = c.id
    WHERE c.deleted_at IS NULL AND c.merged_into IS NULL
), counts AS (
    SELECT
        count(*) AS total_customers,
        count(*) FILTER (WHERE status IN ('active', 'vip')) AS active_customers,
        count(*) FILTER (WHERE status = 'vip') AS vip_customers,
        round(avg(lifetime_value), 2) AS average_ltv,
        round(avg((churn_probability >= 0.5)::int) FILTER (WHERE total_orders > 0), 4) AS churn_rate,
        count(*) FILTER (WHERE created_at >= date_trunc('month', now())) AS new_this_month,
        count(*) FILTER (WHERE created_at >= date_trunc('month', now()) - interval '1 month'
                           AND created_at < date_trunc('month', now())) AS new_last_month,
        count(*) FILTER (WHERE churn_probability >= 0.7) AS high_risk_customers
    FROM live
)
SELECT
    total_customers, active_customers, vip_customers, average_ltv, churn_rate,
    new_this_month, high_risk_customers,
    round(new_this_month::numeric / nullif(total_customers - new_this_month, 0), 4) AS growth_rate,
    new_last_month
FROM counts;

COMMENT ON VIEW customer_stats IS 'Dashboard numbers over live customers; definitions in docs/metrics.md.';
COMMENT ON COLUMN customer_stats.churn_rate IS 'Share of customers with orders whose churn_probability >= 0.5.';
COMMENT ON COLUMN customer_stats.growth_rate IS 'Customers created this month / customers that existed before this month.';
