-- The webhook receiver's rate-limit windows, shared by every receiver replica (issue 16): with
-- per-process counters N replicas behind a load balancer let N times the configured rate through.
-- One row per budget ("source:shopify", "shop:shopify:<domain>"): the hits counted in the fixed
-- window that ends at window_end. Receivers UPSERT a batch of hits in one statement per round
-- trip (webhook_receiver/ratelimit.py) and forget finished windows now and then.
-- UNLOGGED: the counters are worth nothing after a crash (the table comes back empty, the limits
-- start over), and a commit that wrote only unlogged rows does not wait for a WAL flush.
-- fillfactor 50: the hot rows are updated thousands of times a second; room on the page keeps
-- those updates HOT (no index entry per version).
CREATE UNLOGGED TABLE IF NOT EXISTS webhook_rate_windows (
    bucket text PRIMARY KEY,
    window_end timestamptz NOT NULL,
    hits bigint NOT NULL
) WITH (fillfactor = 50);
COMMENT ON TABLE webhook_rate_windows IS
    'Webhook receiver rate-limit windows shared by all replicas (operational; no customer data).';
