-- The dashboard (issue 14): the inactive card, and the recent_activity feed's query.
--
-- customer_stats gains inactive_customers (status = 'inactive', which segmentation now sets:
-- docs/metrics.md#status); columns are appended, so CREATE OR REPLACE keeps the analyst grant.
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
        count(*) FILTER (WHERE churn_probability >= 0.7) AS high_risk_customers,
        count(*) FILTER (WHERE status = 'inactive') AS inactive_customers
    FROM live
)
SELECT
    total_customers, active_customers, vip_customers, average_ltv, churn_rate,
    new_this_month, high_risk_customers,
    round(new_this_month::numeric / nullif(total_customers - new_this_month, 0), 4) AS growth_rate,
    new_last_month, inactive_customers
FROM counts;

COMMENT ON COLUMN customer_stats.inactive_customers IS
    'Live customers with status inactive: no order and no activity for inactive_after_days (180).';

-- The latest activities across customers (Firestore recent_activity) without a full sort.
CREATE INDEX IF NOT EXISTS customer_activities_occurred_idx
    ON customer_activities (occurred_at DESC, id DESC);
