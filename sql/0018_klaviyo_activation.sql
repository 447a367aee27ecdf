-- Reverse sync to Klaviyo (docs/activation.md): what was last pushed per customer, the CRM's
-- own lists and their members, and the trigger events sent, so a re-run sends only changes and
-- a retried run never fires an event twice. customer_sync_logs gains a target (firestore or
-- klaviyo) so staff see Klaviyo pushes beside mirror writes.

-- ------------------------------------------------------------ klaviyo_profile_state
CREATE TABLE klaviyo_profile_state (
    customer_id        uuid PRIMARY KEY REFERENCES customers (id) ON DELETE CASCADE,
    klaviyo_profile_id text,
    payload_hash       text,
    pushed_at          timestamptz,
    failed_hash        text,
    last_error         text,
    updated_at         timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE klaviyo_profile_state IS
    'Per customer: hash of the CRM properties last accepted by Klaviyo and the profile id it answered; a customer whose payload hashes the same is not re-sent; failed_hash: a payload Klaviyo refused (per-profile import error), not re-sent until it changes.';

-- ------------------------------------------------------------ klaviyo_lists
CREATE TABLE klaviyo_lists (
    segment_name text PRIMARY KEY,
    list_id      text NOT NULL UNIQUE,
    list_name    text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE klaviyo_lists IS
    'Klaviyo lists the CRM created ("CRM: <segment_name>"); only these are ever changed.';

CREATE TABLE klaviyo_list_members (
    segment_name       text NOT NULL REFERENCES klaviyo_lists (segment_name) ON DELETE CASCADE,
    klaviyo_profile_id text NOT NULL,
    customer_id        uuid,
    added_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (segment_name, klaviyo_profile_id)
);
COMMENT ON TABLE klaviyo_list_members IS
    'Profiles the CRM added to its lists and Klaviyo accepted; membership syncs by difference against customer_segments.';

-- ------------------------------------------------------------ klaviyo_trigger_events
CREATE TABLE klaviyo_trigger_events (
    unique_id    text PRIMARY KEY,
    customer_id  uuid NOT NULL,
    metric_name  text NOT NULL,
    segment_name text,
    status       text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'baseline', 'failed')),
    properties   jsonb NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    sent_at      timestamptz,
    last_error   text
);
COMMENT ON TABLE klaviyo_trigger_events IS
    'One row per segment entry or new customer; unique_id is sent to Klaviyo so a retried send is recorded once. baseline: entries found by the first sync, recorded without sending.';
CREATE INDEX klaviyo_trigger_events_pending_idx ON klaviyo_trigger_events (created_at)
    WHERE status IN ('pending', 'failed');

-- ------------------------------------------------------------ consent provenance
ALTER TABLE customers
    ADD COLUMN IF NOT EXISTS email_consent_updated_at timestamptz,
    ADD COLUMN IF NOT EXISTS email_consent_source text,
    ADD COLUMN IF NOT EXISTS sms_consent_updated_at timestamptz,
    ADD COLUMN IF NOT EXISTS sms_consent_source text;
COMMENT ON COLUMN customers.email_consent_source IS
    'Who last withdrew email consent outside the source records (klaviyo_subscriptions, klaviyo_suppression, klaviyo_unsubscribed_event, klaviyo_webhook).';

-- Klaviyo's SMS unsubscribes land as activities too (mapping/klaviyo.py METRIC_ACTIVITY)
ALTER TABLE customer_activities DROP CONSTRAINT IF EXISTS customer_activities_activity_type_check;
ALTER TABLE customer_activities ADD CONSTRAINT customer_activities_activity_type_check CHECK (
    activity_type IN ('page_view', 'product_view', 'add_to_cart', 'checkout_started', 'purchase',
                      'email_open', 'email_click', 'email_unsubscribe', 'sms_unsubscribe',
                      'sms_click', 'active_on_site', 'note', 'other'));

-- ------------------------------------------------------------ customer_sync_logs target
ALTER TABLE customer_sync_logs
    ADD COLUMN target text NOT NULL DEFAULT 'firestore' CHECK (target IN ('firestore', 'klaviyo')),
    ADD COLUMN klaviyo_status text CHECK (klaviyo_status IN ('success', 'failed', 'skipped'));
ALTER TABLE customer_sync_logs DROP CONSTRAINT IF EXISTS customer_sync_logs_operation_check;
ALTER TABLE customer_sync_logs ADD CONSTRAINT customer_sync_logs_operation_check CHECK (
    operation IN ('upsert', 'delete', 'redact', 'repair', 'klaviyo_profile', 'klaviyo_list_add',
                  'klaviyo_list_remove', 'klaviyo_event', 'klaviyo_sync'));
CREATE INDEX customer_sync_logs_klaviyo_idx ON customer_sync_logs (created_at)
    WHERE target = 'klaviyo';

GRANT SELECT ON klaviyo_profile_state, klaviyo_lists, klaviyo_list_members, klaviyo_trigger_events
    TO crm_analyst;
