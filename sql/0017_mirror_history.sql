-- Complete history in the Firestore mirror: a notes history table, and per-subdocument mirror state
-- so every order, activity and note is written incrementally (docs/firestore-mirror.md).
-- depends: 0003_firestore_mirror 0006_webhook_processing

-- --------------------------------------------------------------- customer_notes
-- Every version of a customer's notes (the source's note) and internal notes (staff), so the
-- admin app can show the history. Internal notes are recorded by the admin-action handler (with
-- the staff actor and the action's time); source notes by a trigger whenever customers.notes
-- changes, whichever path changed it (pulls, webhooks, imports).
CREATE TABLE IF NOT EXISTS customer_notes (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id uuid NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    kind        text NOT NULL CHECK (kind IN ('notes', 'internal_notes')),
    body        text,
    actor       text,
    external_id text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE customer_notes IS
    'History of customers.notes and customers.internal_notes: one row per version (body null = cleared).';
COMMENT ON COLUMN customer_notes.external_id IS
    'note:<action delivery id> for staff edits, so a redelivered action is recorded once.';
CREATE INDEX IF NOT EXISTS customer_notes_customer_time_idx
    ON customer_notes (customer_id, created_at DESC);
CREATE UNIQUE INDEX IF NOT EXISTS customer_notes_external_idx
    ON customer_notes (external_id) WHERE external_id IS NOT NULL;

CREATE OR REPLACE FUNCTION record_customer_notes() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO customer_notes (customer_id, kind, body) VALUES (NEW.id, 'notes', NEW.notes);
    RETURN NULL;
END $$;
COMMENT ON FUNCTION record_customer_notes() IS 'Appends a customers.notes change to customer_notes.';

DROP TRIGGER IF EXISTS customers_notes_inserted ON customers;
CREATE TRIGGER customers_notes_inserted AFTER INSERT ON customers
    FOR EACH ROW WHEN (NEW.notes IS NOT NULL) EXECUTE FUNCTION record_customer_notes();
DROP TRIGGER IF EXISTS customers_notes_changed ON customers;
CREATE TRIGGER customers_notes_changed AFTER UPDATE OF notes ON customers
    FOR EACH ROW WHEN (OLD.notes IS DISTINCT FROM NEW.notes) EXECUTE FUNCTION record_customer_notes();

-- Backfill: staff edits already kept as 'note' activities, then the current notes of everyone.
INSERT INTO customer_notes (customer_id, kind, body, actor, external_id, created_at)
SELECT a.customer_id, 'internal_notes', a.properties ->> 'internal_notes', a.properties ->> 'actor',
       a.external_id, a.occurred_at
FROM customer_activities a
WHERE a.activity_type = 'note' AND a.source = 'manual' AND a.external_id LIKE 'note:%'
ON CONFLICT DO NOTHING;
INSERT INTO customer_notes (customer_id, kind, body, created_at)
SELECT c.id, 'internal_notes', c.internal_notes, coalesce(c.updated_at, c.created_at)
FROM customers c
WHERE c.internal_notes IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM customer_notes n
                  WHERE n.customer_id = c.id AND n.kind = 'internal_notes');
INSERT INTO customer_notes (customer_id, kind, body, created_at)
SELECT c.id, 'notes', c.notes, coalesce(c.updated_at, c.created_at)
FROM customers c
WHERE c.notes IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM customer_notes n WHERE n.customer_id = c.id AND n.kind = 'notes');

GRANT SELECT ON customer_notes TO crm_analyst;

-- ------------------------------------------------- per-subdocument mirror state
-- The history subcollections (orders, activities, notes) are unbounded, so their state is one
-- row per subdocument, read only for customers whose history hash changed.
ALTER TABLE firestore_mirror_state ADD COLUMN IF NOT EXISTS history_hash text;
COMMENT ON COLUMN firestore_mirror_state.history_hash IS
    'md5 over the orders, activities and notes subdocuments as last written (one compare per '
    'customer on a no-change run); null after a failed write.';
COMMENT ON COLUMN firestore_mirror_state.content_hash IS
    'sha256 of the canonical JSON of the customer document and its addresses as last written; '
    'null when the last write failed (so the next run rewrites it).';

CREATE TABLE IF NOT EXISTS firestore_mirror_subdocuments (
    customer_id  uuid NOT NULL,
    collection   text NOT NULL CHECK (collection IN ('orders', 'activities', 'notes')),
    doc_id       text NOT NULL,
    content_hash bytea,
    PRIMARY KEY (customer_id, collection, doc_id)
);
COMMENT ON TABLE firestore_mirror_subdocuments IS
    'One row per history subdocument in Firestore (customers/{id}/orders|activities|notes/{doc_id}).';
COMMENT ON COLUMN firestore_mirror_subdocuments.content_hash IS
    'md5 of the subdocument as built in SQL; null when its write may have failed (rewritten next run).';

-- The recent-20 subdocuments written before this migration become known rows with no hash: the
-- next run rewrites what is still there and deletes what is not.
INSERT INTO firestore_mirror_subdocuments (customer_id, collection, doc_id)
SELECT s.customer_id, 'orders', o::text FROM firestore_mirror_state s, unnest(s.order_ids) o
UNION ALL
SELECT s.customer_id, 'activities', a::text FROM firestore_mirror_state s, unnest(s.activity_ids) a
ON CONFLICT DO NOTHING;
UPDATE firestore_mirror_state SET order_ids = '{}', activity_ids = '{}', history_hash = NULL
WHERE order_ids <> '{}' OR activity_ids <> '{}';
COMMENT ON COLUMN firestore_mirror_state.order_ids IS
    'Unused since 0017 (history subdocuments are in firestore_mirror_subdocuments).';
COMMENT ON COLUMN firestore_mirror_state.activity_ids IS
    'Unused since 0017 (history subdocuments are in firestore_mirror_subdocuments).';
