-- Firestore mirror bookkeeping: what each live customer's mirrored document hashes to, and retries.
-- depends: 0002_analyst_views

-- No foreign key to customers: a row must outlive a hard-deleted customer so the mirror still
-- knows to delete that customer's document.
CREATE TABLE firestore_mirror_state (
    customer_id     uuid PRIMARY KEY,
    content_hash    text,
    address_ids     bigint[] NOT NULL DEFAULT '{}',
    order_ids       uuid[] NOT NULL DEFAULT '{}',
    activity_ids    bigint[] NOT NULL DEFAULT '{}',
    mirrored_at     timestamptz,
    status          text NOT NULL CHECK (status IN ('mirrored', 'failed')),
    retry_count     integer NOT NULL DEFAULT 0,
    last_error      text,
    next_attempt_at timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE firestore_mirror_state IS
    'One row per customer document in Firestore: its content hash, subdocument ids, retry state.';
COMMENT ON COLUMN firestore_mirror_state.content_hash IS
    'sha256 of the canonical JSON of the document and its subcollections as last written; null '
    'when the last write failed (so the next run rewrites it).';
COMMENT ON COLUMN firestore_mirror_state.address_ids IS
    'Ids of the addresses/orders/activities subdocuments written, so stale ones can be deleted '
    'without listing Firestore.';
COMMENT ON COLUMN firestore_mirror_state.next_attempt_at IS
    'A failed customer is retried by the first run at or after this time.';
CREATE INDEX firestore_mirror_state_failed_idx ON firestore_mirror_state (next_attempt_at)
    WHERE status = 'failed';

-- Value formats of the Firestore documents (docs/firestore-mirror.md), as SQL so a batch of
-- documents is built set-based in one query. Plain SQL functions: the planner inlines them.
CREATE OR REPLACE FUNCTION mirror_ts(ts timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
COMMENT ON FUNCTION mirror_ts(timestamptz) IS
    'Canonical UTC text of a timestamp for the mirror (becomes a Firestore timestamp).';

CREATE OR REPLACE FUNCTION mirror_money(amount numeric) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN amount IS NULL OR amount IN ('NaN', 'Infinity', '-Infinity') THEN NULL
            ELSE round(amount, 2)::text END;
COMMENT ON FUNCTION mirror_money(numeric) IS
    'Money as a string with exactly 2 decimals (no binary floating point); NaN becomes null.';

CREATE OR REPLACE FUNCTION mirror_float(x numeric) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN x IS NULL OR x IN ('NaN', 'Infinity', '-Infinity') THEN NULL
            ELSE x::double precision END;
COMMENT ON FUNCTION mirror_float(numeric) IS 'A score or rate as a double; NaN and infinities become null.';
