-- Order attribution (issue 15): Shopify's customer journey per order and Klaviyo's attributed
-- flow/campaign, with the analyst views built on them. Definitions in docs/attribution.md.

CREATE TABLE order_attributions (
    order_id                 uuid PRIMARY KEY REFERENCES orders (id) ON DELETE CASCADE,
    journey_status           text NOT NULL
                             CHECK (journey_status IN ('ready', 'not_ready', 'unavailable', 'not_fetched')),
    source_name              text,
    days_to_conversion       integer,
    customer_order_index     integer,
    first_visit_at                 timestamptz,
    first_source                   text,
    first_source_type              text,
    first_utm_source               text,
    first_utm_medium               text,
    first_utm_campaign             text,
    first_utm_content              text,
    first_utm_term                 text,
    first_landing_page             text,
    first_referrer_url             text,
    first_marketing_event_id       text,
    first_marketing_event_type     text,
    first_marketing_event_channel  text,
    first_channel                  text NOT NULL DEFAULT 'unknown',
    last_visit_at                 timestamptz,
    last_source                   text,
    last_source_type              text,
    last_utm_source               text,
    last_utm_medium               text,
    last_utm_campaign             text,
    last_utm_content              text,
    last_utm_term                 text,
    last_landing_page             text,
    last_referrer_url             text,
    last_marketing_event_id       text,
    last_marketing_event_type     text,
    last_marketing_event_channel  text,
    last_channel                  text NOT NULL DEFAULT 'unknown',
    klaviyo_event_id         text,
    klaviyo_flow_id          text,
    klaviyo_campaign_id      text,
    klaviyo_message_id       text,
    klaviyo_channel          text,
    journey_checked_at       timestamptz NOT NULL DEFAULT now(),
    updated_at               timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE order_attributions IS
    'Per order: Shopify''s customer journey (first/last visit) and the Klaviyo flow or campaign its Placed Order event credits; docs/attribution.md.';
COMMENT ON COLUMN order_attributions.journey_status IS
    'ready; not_ready (Shopify had not built it: asked again by later runs); unavailable (Shopify has none, e.g. POS, draft orders); not_fetched (the payload did not carry it). Only ready journeys have touches; the others count as channel unknown.';
COMMENT ON COLUMN order_attributions.source_name IS 'Order.sourceName: web, pos, shopify_draft_order, an app''s name.';
COMMENT ON COLUMN order_attributions.first_channel IS 'Channel of the first visit by the rules in docs/attribution.md; unknown without a ready journey.';
COMMENT ON COLUMN order_attributions.last_channel IS 'Channel of the last visit before the order (last touch); unknown without a ready journey.';
COMMENT ON COLUMN order_attributions.first_landing_page IS 'Landing page without query string or fragment (they can carry personal data); UTMs are kept in their own columns.';
COMMENT ON COLUMN order_attributions.klaviyo_flow_id IS 'Klaviyo flow the order event credits ($attribution.$flow); null when none.';
COMMENT ON COLUMN order_attributions.klaviyo_campaign_id IS 'Klaviyo campaign message credited when no flow is ($attribution.$message without $flow).';
COMMENT ON COLUMN order_attributions.journey_checked_at IS 'When Shopify was last asked for this journey.';
CREATE INDEX order_attributions_pending_idx ON order_attributions (journey_checked_at)
    WHERE journey_status IN ('not_ready', 'not_fetched');

-- completed orders (docs/metrics.md: paid, not cancelled) with their three channel views
CREATE OR REPLACE VIEW attributed_orders AS
SELECT
    o.id AS order_id, o.customer_id, o.created_at, o.total_price, o.total_refunded,
    o.total_price - o.total_refunded AS net_revenue,
    coalesce(a.journey_status, 'not_fetched') AS journey_status,
    coalesce(a.first_channel, 'unknown') AS first_touch_channel,
    coalesce(a.last_channel, 'unknown') AS last_touch_channel,
    CASE WHEN a.klaviyo_flow_id IS NOT NULL OR a.klaviyo_campaign_id IS NOT NULL
         THEN 'klaviyo_' || coalesce(a.klaviyo_channel, 'email') ELSE 'not_klaviyo' END
        AS klaviyo_channel,
    a.first_utm_campaign, a.last_utm_campaign, a.klaviyo_flow_id, a.klaviyo_campaign_id,
    a.first_source, a.first_utm_source, a.first_utm_medium,
    row_number() OVER (PARTITION BY o.customer_id ORDER BY o.created_at, o.id) = 1
        AND o.customer_id IS NOT NULL AS first_order_of_customer
FROM orders o
LEFT JOIN order_attributions a ON a.order_id = o.id
WHERE o.cancelled_at IS NULL
  AND o.financial_status IN ('paid', 'partially_refunded', 'refunded');
COMMENT ON VIEW attributed_orders IS
    'Completed orders (paid, not cancelled) with first-touch, last-touch and Klaviyo channels; orders without a ready journey are channel unknown. Base of revenue_by_channel and campaign_performance.';

CREATE OR REPLACE VIEW revenue_by_channel AS
SELECT
    m.model, g.grain,
    date_trunc(g.grain, ao.created_at AT TIME ZONE 'UTC')::date AS period_start,
    m.channel,
    count(*) AS orders,
    sum(ao.total_price) AS gross_revenue,
    sum(ao.total_refunded) AS refunded,
    sum(ao.net_revenue) AS net_revenue,
    count(*) FILTER (WHERE ao.first_order_of_customer) AS new_customer_orders
FROM attributed_orders ao
CROSS JOIN LATERAL (VALUES ('first_touch', ao.first_touch_channel),
                           ('last_touch', ao.last_touch_channel),
                           ('klaviyo', ao.klaviyo_channel)) AS m(model, channel)
CROSS JOIN (VALUES ('day'), ('week'), ('month')) AS g(grain)
GROUP BY m.model, g.grain, period_start, m.channel;
COMMENT ON VIEW revenue_by_channel IS
    'Net revenue (total_price - total_refunded of completed orders) per channel and UTC day/week/month, under three models: first_touch, last_touch (Shopify journey) and klaviyo (the flow/campaign Klaviyo credits; not_klaviyo otherwise). Orders without a ready journey are channel unknown. Filter on model and grain.';
COMMENT ON COLUMN revenue_by_channel.model IS 'first_touch, last_touch or klaviyo; each order counts once per model.';
COMMENT ON COLUMN revenue_by_channel.grain IS 'day, week (ISO, Monday) or month; period_start is the UTC date the period starts.';

CREATE OR REPLACE VIEW customer_acquisition AS
WITH firsts AS (
    SELECT DISTINCT ON (o.customer_id) o.customer_id, o.id AS order_id, o.created_at
    FROM orders o
    WHERE o.customer_id IS NOT NULL
    ORDER BY o.customer_id, o.created_at, o.id
)
SELECT
    f.customer_id, f.order_id AS first_order_id, f.created_at AS first_order_at,
    coalesce(a.journey_status, 'not_fetched') AS journey_status,
    coalesce(a.first_channel, 'unknown') AS acquisition_channel,
    a.first_source AS acquisition_source, a.first_utm_source AS acquisition_utm_source,
    a.first_utm_medium AS acquisition_utm_medium, a.first_utm_campaign AS acquisition_utm_campaign,
    a.first_landing_page AS acquisition_landing_page,
    a.klaviyo_flow_id AS first_order_klaviyo_flow_id,
    a.klaviyo_campaign_id AS first_order_klaviyo_campaign_id,
    m.lifetime_value, m.predicted_ltv, m.total_orders, m.churn_probability
FROM firsts f
JOIN customers c ON c.id = f.customer_id AND c.deleted_at IS NULL AND c.merged_into IS NULL
LEFT JOIN order_attributions a ON a.order_id = f.order_id
LEFT JOIN customer_metrics m ON m.customer_id = f.customer_id;
COMMENT ON VIEW customer_acquisition IS
    'One row per live customer with an order: the first touch of their first order (the acquisition channel; unknown without a ready journey) with their LTV and predicted LTV. LTV by channel: GROUP BY acquisition_channel.';

CREATE OR REPLACE VIEW campaign_performance AS
SELECT t.attribution, t.campaign,
       count(*) AS orders,
       sum(ao.net_revenue) AS net_revenue,
       count(DISTINCT ao.customer_id) FILTER (WHERE ao.first_order_of_customer) AS new_customers,
       min(ao.created_at) AS first_order_at, max(ao.created_at) AS last_order_at
FROM attributed_orders ao
CROSS JOIN LATERAL (VALUES ('utm_first_touch', ao.first_utm_campaign),
                           ('utm_last_touch', ao.last_utm_campaign),
                           ('klaviyo_flow', ao.klaviyo_flow_id),
                           ('klaviyo_campaign', ao.klaviyo_campaign_id)) AS t(attribution, campaign)
WHERE t.campaign IS NOT NULL
GROUP BY t.attribution, t.campaign;
COMMENT ON VIEW campaign_performance IS
    'Completed orders, net revenue and new customers (orders that were the customer''s first) per UTM campaign of the first or last touch, and per Klaviyo flow or campaign credited by Klaviyo.';
COMMENT ON COLUMN campaign_performance.attribution IS 'utm_first_touch, utm_last_touch, klaviyo_flow or klaviyo_campaign: an order counts once under each that names a campaign.';

GRANT SELECT ON order_attributions, attributed_orders, revenue_by_channel, customer_acquisition,
    campaign_performance TO crm_analyst;
