-- Incremental runs cost what changed (issue 18 item 2).
--
-- customer_changes is an append-only log of the customers each transaction touched, written by
-- statement-level triggers in the same transaction as the change, so no path (pulls, webhooks,
-- staff actions, imports, merges, deletes, GDPR redactions) can forget to record it.
-- Consumers (crm_pipeline/changes) read the log by transaction id below a safe horizon (every
-- transaction older than it has ended, so no late commit can appear below it) and keep their
-- progress in change_consumers; rows every consumer has passed are pruned.
-- Writers that derive data from the log itself (the segment refresh) set
-- crm.record_changes = 'off' locally so a refresh does not feed itself.

CREATE TABLE IF NOT EXISTS customer_changes (
    change_id bigserial PRIMARY KEY,
    customer_id uuid NOT NULL,
    -- the writing transaction's top-level id (pg_current_xact_id as bigint): the consumers'
    -- cursor, because change_id order is not commit order
    txid bigint NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    changed_at timestamptz NOT NULL DEFAULT now(),
    origin text NOT NULL
);
CREATE INDEX IF NOT EXISTS customer_changes_txid_idx ON customer_changes (txid);
COMMENT ON TABLE customer_changes IS
    'Customers touched per transaction (append-only, pruned once every consumer passed them).';

CREATE TABLE IF NOT EXISTS change_consumers (
    consumer text PRIMARY KEY,
    -- every change with txid < horizon has been processed by this consumer
    horizon bigint NOT NULL DEFAULT 0,
    customers_last_run integer NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE change_consumers IS
    'How far each consumer of customer_changes (metrics, segments, mirror, ...) has read.';

CREATE OR REPLACE FUNCTION record_customer_changes() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_origin text := coalesce(nullif(current_setting('crm.change_origin', true), ''), TG_TABLE_NAME);
BEGIN
    IF current_setting('crm.record_changes', true) = 'off' THEN
        RETURN NULL;
    END IF;
    IF TG_TABLE_NAME = 'customers' THEN
        IF TG_OP = 'DELETE' THEN
            INSERT INTO customer_changes (customer_id, origin)
            SELECT DISTINCT id, v_origin FROM old_rows;
        ELSE
            INSERT INTO customer_changes (customer_id, origin)
            SELECT DISTINCT id, v_origin FROM new_rows;
        END IF;
    ELSIF TG_OP = 'INSERT' THEN
        INSERT INTO customer_changes (customer_id, origin)
        SELECT DISTINCT customer_id, v_origin FROM new_rows WHERE customer_id IS NOT NULL;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO customer_changes (customer_id, origin)
        SELECT DISTINCT customer_id, v_origin FROM old_rows WHERE customer_id IS NOT NULL;
    ELSE
        -- a row moved between customers (a merge re-pointing orders) touches both
        INSERT INTO customer_changes (customer_id, origin)
        SELECT customer_id, v_origin FROM new_rows WHERE customer_id IS NOT NULL
        UNION
        SELECT customer_id, v_origin FROM old_rows WHERE customer_id IS NOT NULL;
    END IF;
    RETURN NULL;
END $$;

DO $$
DECLARE
    tbl text;
BEGIN
    FOREACH tbl IN ARRAY ARRAY['customers', 'customer_sources', 'customer_addresses', 'orders',
                               'customer_activities', 'customer_segments']
    LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %I', tbl || '_changes_ins', tbl);
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %I', tbl || '_changes_upd', tbl);
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %I', tbl || '_changes_del', tbl);
        EXECUTE format('CREATE TRIGGER %I AFTER INSERT ON %I REFERENCING NEW TABLE AS new_rows '
                       'FOR EACH STATEMENT EXECUTE FUNCTION record_customer_changes()',
                       tbl || '_changes_ins', tbl);
        EXECUTE format('CREATE TRIGGER %I AFTER UPDATE ON %I '
                       'REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows '
                       'FOR EACH STATEMENT EXECUTE FUNCTION record_customer_changes()',
                       tbl || '_changes_upd', tbl);
        EXECUTE format('CREATE TRIGGER %I AFTER DELETE ON %I REFERENCING OLD TABLE AS old_rows '
                       'FOR EACH STATEMENT EXECUTE FUNCTION record_customer_changes()',
                       tbl || '_changes_del', tbl);
    END LOOP;
END $$;

-- ids only, no PII: analysts may see how much changes and through which path
GRANT SELECT ON customer_changes, change_consumers TO crm_analyst;
