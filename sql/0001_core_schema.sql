-- Core CRM schema: one resolved customer per person, the source records that feed it,
-- orders, activities, segments, the webhook queue and the quarantine (CONTRACT.md section 3).

CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE EXTENSION IF NOT EXISTS citext;

-- Keeps updated_at honest without every writer remembering to set it.
CREATE OR REPLACE FUNCTION set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW IS DISTINCT FROM OLD THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END;
$$;

-- ---------------------------------------------------------------- customers
CREATE TABLE customers (
    id                      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email                   text,
    email_lowercase         text GENERATED ALWAYS AS (lower(btrim(email))) STORED,
    phone                   text,
    phone_normalized        text CHECK (phone_normalized ~ '^\+[1-9][0-9]{6,14}$'),
    first_name              text,
    last_name               text,
    full_name               text GENERATED ALWAYS AS (
                                nullif(btrim(coalesce(first_name, '') || ' ' || coalesce(last_name, '')), '')
                            ) STORED,
    status                  text NOT NULL DEFAULT 'active'
                            CHECK (status IN ('active', 'inactive', 'vip', 'blocked', 'pending')),
    status_set_by           text NOT NULL DEFAULT 'system' CHECK (status_set_by IN ('system', 'manual')),
    customer_type           text NOT NULL DEFAULT 'registered'
                            CHECK (customer_type IN ('guest', 'registered', 'wholesale', 'affiliate')),
    tags                    text[] NOT NULL DEFAULT '{}',
    manual_tags             text[] NOT NULL DEFAULT '{}',
    notes                   text,
    internal_notes          text,
    custom_attributes       jsonb NOT NULL DEFAULT '{}'::jsonb,
    accepts_email_marketing boolean NOT NULL DEFAULT false,
    accepts_sms_marketing   boolean NOT NULL DEFAULT false,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    deleted_at              timestamptz,
    last_active_at          timestamptz,
    source_updated_at       timestamptz,
    redacted_at             timestamptz,
    merged_into             uuid REFERENCES customers (id) ON DELETE SET NULL
);

COMMENT ON TABLE customers IS
    'One row per resolved person across Shopify, Klaviyo and manual imports. Soft-deleted rows keep deleted_at.';
COMMENT ON COLUMN customers.email_lowercase IS 'lower(trim(email)); unique among non-deleted customers; the first identity key.';
COMMENT ON COLUMN customers.phone_normalized IS 'E.164 form of phone (phonenumbers); the second identity key.';
COMMENT ON COLUMN customers.status_set_by IS 'manual when staff set the status (block/unblock): pipelines never override it.';
COMMENT ON COLUMN customers.tags IS 'Effective tags: source tags plus manual_tags.';
COMMENT ON COLUMN customers.manual_tags IS 'Tags added by staff in the admin app; survive every source pull.';
COMMENT ON COLUMN customers.internal_notes IS 'Staff-only notes; written only by admin actions, never by a source pull.';
COMMENT ON COLUMN customers.custom_attributes IS 'Free-form attributes, including Klaviyo properties and predictive_analytics under "klaviyo".';
COMMENT ON COLUMN customers.source_updated_at IS 'Newest updated_at seen from any source record; only-newer-wins guard.';
COMMENT ON COLUMN customers.redacted_at IS 'Set when a GDPR redaction erased this person''s PII; the row stays to stop resurrection.';
COMMENT ON COLUMN customers.merged_into IS 'Set when this customer was merged into another (Shopify customers/merge).';
COMMENT ON COLUMN customers.last_active_at IS 'Latest order, email interaction or site activity.';

CREATE UNIQUE INDEX customers_email_lowercase_live_key
    ON customers (email_lowercase) WHERE deleted_at IS NULL AND email_lowercase IS NOT NULL;
CREATE INDEX customers_phone_normalized_idx ON customers (phone_normalized) WHERE deleted_at IS NULL;
CREATE INDEX customers_status_idx ON customers (status) WHERE deleted_at IS NULL;
CREATE INDEX customers_created_at_idx ON customers (created_at);
CREATE INDEX customers_last_active_at_idx ON customers (last_active_at);
CREATE INDEX customers_tags_gin ON customers USING gin (tags);
CREATE INDEX customers_custom_attributes_gin ON customers USING gin (custom_attributes jsonb_path_ops);
CREATE INDEX customers_full_name_trgm ON customers USING gin (full_name gin_trgm_ops);
CREATE INDEX customers_email_trgm ON customers USING gin (email_lowercase gin_trgm_ops);
CREATE INDEX customers_phone_trgm ON customers USING gin (phone_normalized gin_trgm_ops);
CREATE INDEX customers_status_type_created_idx ON customers (status, customer_type, created_at);
CREATE TRIGGER customers_set_updated_at BEFORE UPDATE ON customers
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- --------------------------------------------------------- customer_sources
CREATE TABLE customer_sources (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id       uuid NOT NULL REFERENCES customers (id) ON DELETE CASCADE
                      DEFERRABLE INITIALLY DEFERRED,
    source            text NOT NULL CHECK (source IN ('shopify', 'klaviyo', 'manual')),
    external_id       text NOT NULL,
    source_data       jsonb NOT NULL DEFAULT '{}'::jsonb,
    profile           jsonb NOT NULL DEFAULT '{}'::jsonb,
    content_hash      text,
    source_updated_at timestamptz,
    sync_status       text NOT NULL DEFAULT 'synced'
                      CHECK (sync_status IN ('synced', 'pending', 'error', 'deleted', 'redacted')),
    last_synced_at    timestamptz NOT NULL DEFAULT now(),
    deleted_at        timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source, external_id)
);
COMMENT ON TABLE customer_sources IS 'Every source record linked to the customer it resolved to.';
COMMENT ON COLUMN customer_sources.source_data IS 'The source record as last received (REST shape for Shopify, JSON:API for Klaviyo).';
COMMENT ON COLUMN customer_sources.profile IS 'The record mapped to our field names (normalised email/phone, consent, tags); survivorship reads it.';
COMMENT ON COLUMN customer_sources.content_hash IS 'md5 of source_data; an unchanged record is skipped on re-pull.';
COMMENT ON COLUMN customer_sources.source_updated_at IS 'updated_at of the record in its source; older records never overwrite newer.';
COMMENT ON COLUMN customer_sources.deleted_at IS 'When the source reported the record deleted (reconcile or webhook).';
CREATE INDEX customer_sources_customer_idx ON customer_sources (customer_id);
CREATE INDEX customer_sources_klaviyo_link_idx ON customer_sources ((profile ->> 'link_shopify_id'))
    WHERE source = 'klaviyo';
CREATE TRIGGER customer_sources_set_updated_at BEFORE UPDATE ON customer_sources
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- ------------------------------------------------------- customer_addresses
CREATE TABLE customer_addresses (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id   uuid NOT NULL REFERENCES customers (id) ON DELETE CASCADE
                  DEFERRABLE INITIALLY DEFERRED,
    source        text NOT NULL CHECK (source IN ('shopify', 'klaviyo', 'manual')),
    external_id   text NOT NULL,
    source_external_id text,
    address_type  text NOT NULL DEFAULT 'both' CHECK (address_type IN ('shipping', 'billing', 'both')),
    is_default    boolean NOT NULL DEFAULT false,
    first_name    text,
    last_name     text,
    company       text,
    address1      text,
    address2      text,
    city          text,
    province      text,
    province_code text,
    country       text,
    country_code  text CHECK (country_code IS NULL OR country_code ~ '^[A-Z]{2}$'),
    zip           text,
    phone         text,
    latitude      double precision CHECK (latitude IS NULL OR latitude BETWEEN -90 AND 90),
    longitude     double precision CHECK (longitude IS NULL OR longitude BETWEEN -180 AND 180),
    timezone      text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source, external_id)
);
COMMENT ON TABLE customer_addresses IS 'Postal addresses per customer; Shopify addresses by id, Klaviyo location keyed by profile id.';
COMMENT ON COLUMN customer_addresses.external_id IS 'Shopify address id, or the Klaviyo profile id for its location.';
COMMENT ON COLUMN customer_addresses.source_external_id IS 'The source record (customer_sources.external_id) that carries this address.';
CREATE INDEX customer_addresses_customer_idx ON customer_addresses (customer_id);
CREATE INDEX customer_addresses_owner_idx ON customer_addresses (source, source_external_id);
CREATE TRIGGER customer_addresses_set_updated_at BEFORE UPDATE ON customer_addresses
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- ------------------------------------------------------------------ orders
CREATE TABLE orders (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    customer_id        uuid REFERENCES customers (id) ON DELETE SET NULL,
    source             text NOT NULL CHECK (source IN ('shopify', 'klaviyo', 'manual')),
    external_id        text NOT NULL,
    customer_external_id text,
    email              text,
    created_at         timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    source_updated_at  timestamptz,
    cancelled_at       timestamptz,
    financial_status   text CHECK (financial_status IN (
                           'pending', 'authorized', 'partially_paid', 'paid', 'partially_refunded',
                           'refunded', 'voided', 'expired', 'unknown')),
    fulfillment_status text CHECK (fulfillment_status IN (
                           'fulfilled', 'partial', 'unfulfilled', 'restocked', 'scheduled', 'on_hold')),
    total_price        numeric(14, 2) NOT NULL DEFAULT 0 CHECK (total_price >= 0),
    total_refunded     numeric(14, 2) NOT NULL DEFAULT 0 CHECK (total_refunded >= 0),
    currency           text,
    content_hash       text,
    UNIQUE (source, external_id)
);
COMMENT ON TABLE orders IS 'Orders from Shopify (and manual records); customer_id is null for guest orders without a match.';
COMMENT ON COLUMN orders.customer_external_id IS 'The source customer id as sent, kept so late-arriving customers can be linked.';
COMMENT ON COLUMN orders.total_refunded IS 'Sum of refund transactions, capped at total_price (refunds over the total are quarantined).';
CREATE INDEX orders_customer_created_idx ON orders (customer_id, created_at);
CREATE INDEX orders_created_at_idx ON orders (created_at);
CREATE INDEX orders_customer_external_idx ON orders (source, customer_external_id);
CREATE TRIGGER orders_set_updated_at BEFORE UPDATE ON orders
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE order_line_items (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id          uuid NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    external_id       text NOT NULL,
    product_id        text,
    title             text,
    vendor            text,
    product_type      text,
    quantity          integer NOT NULL DEFAULT 1 CHECK (quantity >= 0),
    refunded_quantity integer NOT NULL DEFAULT 0 CHECK (refunded_quantity >= 0),
    price             numeric(14, 2) NOT NULL DEFAULT 0 CHECK (price >= 0),
    UNIQUE (order_id, external_id)
);
COMMENT ON TABLE order_line_items IS 'Line items of orders; vendor and product_type feed favourite brand and category.';
CREATE INDEX order_line_items_product_idx ON order_line_items (product_id);

-- --------------------------------------------------------- customer_metrics
CREATE TABLE customer_metrics (
    customer_id               uuid PRIMARY KEY REFERENCES customers (id) ON DELETE CASCADE,
    total_orders              integer NOT NULL DEFAULT 0 CHECK (total_orders >= 0),
    completed_orders          integer NOT NULL DEFAULT 0 CHECK (completed_orders >= 0),
    cancelled_orders          integer NOT NULL DEFAULT 0 CHECK (cancelled_orders >= 0),
    returned_orders           integer NOT NULL DEFAULT 0 CHECK (returned_orders >= 0),
    total_spent               numeric(14, 2) NOT NULL DEFAULT 0,
    total_refunded            numeric(14, 2) NOT NULL DEFAULT 0,
    net_revenue               numeric(14, 2) NOT NULL DEFAULT 0,
    average_order_value       numeric(14, 2) NOT NULL DEFAULT 0,
    lifetime_value            numeric(14, 2) NOT NULL DEFAULT 0,
    items_purchased           integer NOT NULL DEFAULT 0,
    favorite_category         text,
    favorite_brand            text,
    first_order_date          timestamptz,
    last_order_date           timestamptz,
    days_since_last_order     integer,
    email_opens               integer NOT NULL DEFAULT 0,
    email_clicks              integer NOT NULL DEFAULT 0,
    email_received            integer NOT NULL DEFAULT 0,
    open_rate                 numeric(6, 4),
    click_rate                numeric(6, 4),
    engagement_score          numeric(5, 2) CHECK (engagement_score BETWEEN 0 AND 100),
    churn_probability         numeric(6, 4) CHECK (churn_probability BETWEEN 0 AND 1),
    predicted_purchases_90d   numeric(10, 4),
    predicted_next_order_date date,
    predicted_ltv             numeric(14, 2),
    scoring_method            text,
    as_of                     timestamptz,
    computed_at               timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE customer_metrics IS 'Derived per-customer metrics and predictive scores; definitions in docs/metrics.md.';
COMMENT ON COLUMN customer_metrics.as_of IS 'The point in time the metrics describe (backfills pass an earlier as_of).';
COMMENT ON COLUMN customer_metrics.scoring_method IS 'mbg_nbd (default) or bg_nbd when the model fit was used, heuristic on fallback.';

-- ------------------------------------------------------ customer_activities
CREATE TABLE customer_activities (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id   uuid NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    activity_type text NOT NULL CHECK (activity_type IN (
                      'page_view', 'product_view', 'add_to_cart', 'checkout_started', 'purchase',
                      'email_open', 'email_click', 'email_unsubscribe', 'sms_click', 'active_on_site',
                      'note', 'other')),
    occurred_at   timestamptz NOT NULL,
    session_id    text,
    utm_source    text,
    utm_medium    text,
    utm_campaign  text,
    ip_address    text,
    user_agent    text,
    properties    jsonb NOT NULL DEFAULT '{}'::jsonb,
    source        text NOT NULL CHECK (source IN ('shopify', 'klaviyo', 'manual')),
    external_id   text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source, external_id)
);
COMMENT ON TABLE customer_activities IS 'Engagement events (Klaviyo events, admin-recorded activities); idempotent on (source, external_id).';
CREATE INDEX customer_activities_customer_time_idx ON customer_activities (customer_id, occurred_at DESC);
CREATE INDEX customer_activities_type_time_idx ON customer_activities (activity_type, occurred_at);

-- -------------------------------------------------------- customer_segments
CREATE TABLE customer_segments (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id  uuid NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    segment_name text NOT NULL,
    segment_type text NOT NULL CHECK (segment_type IN ('behavioral', 'demographic', 'value', 'custom')),
    confidence   numeric(4, 3) NOT NULL DEFAULT 1 CHECK (confidence BETWEEN 0 AND 1),
    assigned_by  text NOT NULL DEFAULT 'system' CHECK (assigned_by IN ('system', 'manual', 'ml')),
    assigned_at  timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    UNIQUE (customer_id, segment_name)
);
COMMENT ON TABLE customer_segments IS 'Current segment assignments; removed rows move to customer_segment_history.';
COMMENT ON COLUMN customer_segments.expires_at IS 'System segments expire; the next segmentation run removes expired rows.';
CREATE INDEX customer_segments_name_idx ON customer_segments (segment_name);

CREATE TABLE customer_segment_history (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id  uuid NOT NULL,
    segment_name text NOT NULL,
    segment_type text NOT NULL,
    confidence   numeric(4, 3),
    assigned_by  text NOT NULL,
    assigned_at  timestamptz NOT NULL,
    expires_at   timestamptz,
    removed_at   timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE customer_segment_history IS 'Every segment assignment that ended, with when it started and ended.';
CREATE INDEX customer_segment_history_customer_idx ON customer_segment_history (customer_id, removed_at);

CREATE OR REPLACE FUNCTION archive_segment_assignment() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO customer_segment_history
        (customer_id, segment_name, segment_type, confidence, assigned_by, assigned_at, expires_at)
    VALUES (OLD.customer_id, OLD.segment_name, OLD.segment_type, OLD.confidence, OLD.assigned_by,
            OLD.assigned_at, OLD.expires_at);
    RETURN OLD;
END;
$$;
CREATE TRIGGER customer_segments_archive AFTER DELETE ON customer_segments
    FOR EACH ROW EXECUTE FUNCTION archive_segment_assignment();

-- ------------------------------------------------------- customer_sync_logs
CREATE TABLE customer_sync_logs (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id      uuid,
    run_id           text,
    operation        text NOT NULL CHECK (operation IN ('upsert', 'delete', 'redact', 'repair')),
    postgres_status  text NOT NULL DEFAULT 'success' CHECK (postgres_status IN ('success', 'failed', 'skipped')),
    firestore_status text NOT NULL CHECK (firestore_status IN ('success', 'failed', 'skipped', 'pending')),
    error_message    text,
    retry_count      integer NOT NULL DEFAULT 0,
    data_snapshot    jsonb,
    created_at       timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE customer_sync_logs IS 'One row per customer per mirror operation; data_snapshot only for failures.';
CREATE INDEX customer_sync_logs_customer_idx ON customer_sync_logs (customer_id, created_at DESC);
CREATE INDEX customer_sync_logs_failed_idx ON customer_sync_logs (created_at) WHERE firestore_status = 'failed';

-- ---------------------------------------------------------- webhook_events
CREATE TABLE webhook_events (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source          text NOT NULL CHECK (source IN ('shopify', 'klaviyo', 'manual')),
    topic           text NOT NULL,
    delivery_id     text NOT NULL,
    shop_domain     text,
    received_at     timestamptz NOT NULL DEFAULT now(),
    triggered_at    timestamptz,
    headers         jsonb NOT NULL DEFAULT '{}'::jsonb,
    payload         jsonb NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'processing', 'done', 'failed', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    processed_at    timestamptz,
    subject_key     text,
    outcome         text,
    UNIQUE (source, delivery_id)
);
COMMENT ON TABLE webhook_events IS 'Durable landing of every webhook delivery; the queue process_webhooks drains.';
COMMENT ON COLUMN webhook_events.delivery_id IS 'X-Shopify-Webhook-Id, Klaviyo-Webhook-Id:item index, or X-Crm-Action-Id.';
COMMENT ON COLUMN webhook_events.triggered_at IS 'X-Shopify-Triggered-At (or the event time): deliveries apply in this order per customer.';
COMMENT ON COLUMN webhook_events.subject_key IS 'The customer the delivery is about (source:external id); orders processing per person.';
COMMENT ON COLUMN webhook_events.outcome IS 'What processing did: applied, stale (older than applied data), unknown_topic, ...';
CREATE INDEX webhook_events_queue_idx ON webhook_events (next_attempt_at)
    WHERE status IN ('pending', 'failed');
CREATE INDEX webhook_events_subject_idx ON webhook_events (subject_key, triggered_at);

-- ------------------------------------------------------ quarantined_records
CREATE TABLE quarantined_records (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    origin      text NOT NULL CHECK (origin IN ('import file', 'webhook', 'api pull')),
    source      text CHECK (source IN ('shopify', 'klaviyo', 'manual')),
    record_kind text NOT NULL,
    external_id text,
    origin_detail text,
    run_id      text,
    record      jsonb NOT NULL,
    reasons     text[] NOT NULL CHECK (cardinality(reasons) > 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    resolved_at timestamptz
);
COMMENT ON TABLE quarantined_records IS 'Records that failed validation, kept whole with every reason; see docs/quarantine.md.';
COMMENT ON COLUMN quarantined_records.origin_detail IS 'File name, webhook delivery id or stream name the record came from.';
CREATE INDEX quarantined_records_open_idx ON quarantined_records (created_at) WHERE resolved_at IS NULL;
CREATE UNIQUE INDEX quarantined_records_open_key
    ON quarantined_records (origin, source, record_kind, external_id, md5(record::text))
    NULLS NOT DISTINCT WHERE resolved_at IS NULL;

-- ------------------------------------------------------ ingestion state
CREATE TABLE sync_state (
    stream       text PRIMARY KEY,
    cursor_value timestamptz,
    details      jsonb NOT NULL DEFAULT '{}'::jsonb,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE sync_state IS 'Incremental cursor per source stream; advanced only after the data up to it is loaded.';
CREATE TRIGGER sync_state_set_updated_at BEFORE UPDATE ON sync_state
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE UNLOGGED TABLE reconcile_seen (
    run_id      text NOT NULL,
    source      text NOT NULL,
    external_id text NOT NULL,
    PRIMARY KEY (run_id, source, external_id)
);
COMMENT ON TABLE reconcile_seen IS 'Scratch: ids seen by a full pull, to soft-delete what disappeared at the end of the run.';

CREATE TABLE redaction_tombstones (
    identity_hash text PRIMARY KEY,
    kind          text NOT NULL CHECK (kind IN ('email', 'phone', 'shopify_id', 'klaviyo_id')),
    customer_id   uuid,
    redacted_at   timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE redaction_tombstones IS
    'sha256 of identities erased under GDPR: a later pull of the same person is refused, not resurrected.';
