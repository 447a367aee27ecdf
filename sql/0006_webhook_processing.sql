-- Webhook processing: claim leases, per-item event-time state for order-independent deltas, refunds applied once, GDPR requests.
-- depends: 0002_analyst_views

-- A claimed delivery records who claimed it and when, so a run that died is detected (lease) and
-- a run that lost its lease cannot mark a delivery another run took over.
ALTER TABLE webhook_events ADD COLUMN IF NOT EXISTS claimed_at timestamptz;
ALTER TABLE webhook_events ADD COLUMN IF NOT EXISTS claimed_by text;
COMMENT ON COLUMN webhook_events.claimed_at IS 'When the current processing claim was taken (lease start).';
COMMENT ON COLUMN webhook_events.claimed_by IS 'Claim token of the run processing the delivery.';
CREATE INDEX IF NOT EXISTS webhook_events_processing_idx ON webhook_events (claimed_at)
    WHERE status = 'processing';
CREATE INDEX IF NOT EXISTS webhook_events_dead_idx ON webhook_events (received_at)
    WHERE status = 'dead';

-- Tag deltas, consent and purchase summaries arrive on their own topics (Shopify 2025-01) and
-- may be processed out of order: each item keeps the event time it was last set at
-- (last-writer-wins per tag), and is folded into `profile` after every write.
ALTER TABLE customer_sources ADD COLUMN IF NOT EXISTS webhook_state jsonb NOT NULL DEFAULT '{}'::jsonb;
COMMENT ON COLUMN customer_sources.webhook_state IS
    'Event-time state from delta webhooks (tags, consent, purchasing summary, state); see docs/webhook-processing.md.';

-- Staff actions are last-writer-wins by the time staff made them (occurred_at), per field.
CREATE TABLE IF NOT EXISTS staff_field_versions (
    customer_id uuid NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    field       text NOT NULL,
    version_at  timestamptz NOT NULL,
    PRIMARY KEY (customer_id, field)
);
COMMENT ON TABLE staff_field_versions IS
    'Time of the newest admin action applied per staff-owned field (internal_notes, status, tag:<t>, segment:<s>).';

CREATE TABLE IF NOT EXISTS order_refunds (
    source            text NOT NULL DEFAULT 'shopify',
    refund_id         text NOT NULL,
    order_id          uuid NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    amount            numeric(14, 2) NOT NULL DEFAULT 0,
    refunded_items    jsonb NOT NULL DEFAULT '[]'::jsonb,
    created_at        timestamptz,
    applied_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, refund_id)
);
COMMENT ON TABLE order_refunds IS 'Refunds applied from refunds/create webhooks; the key makes a refund apply once.';

CREATE TABLE IF NOT EXISTS gdpr_requests (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind             text NOT NULL CHECK (kind IN ('redact', 'data_request')),
    webhook_event_id bigint,
    shop_domain      text,
    customer_id      uuid,
    request_ref      text,
    requested_at     timestamptz,
    completed_at     timestamptz NOT NULL DEFAULT now(),
    export_path      text,
    details          jsonb NOT NULL DEFAULT '{}'::jsonb,
    UNIQUE (kind, webhook_event_id)
);
COMMENT ON TABLE gdpr_requests IS
    'Proof of GDPR requests handled: what was erased (counts only) or where the export was written. No PII.';
