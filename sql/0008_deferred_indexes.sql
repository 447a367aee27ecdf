-- Initial backfills drop the search and analyst indexes of an empty table and build them once
-- at the end (crm_pipeline/db/bulk_indexes.py): building a GIN trigram index over a loaded
-- table costs a fraction of maintaining it row by row. The definitions wait here, so a load
-- that dies halfway still gets its indexes back on the next load or migration.
CREATE TABLE IF NOT EXISTS deferred_indexes (
    index_name  text PRIMARY KEY,
    table_name  text NOT NULL,
    definition  text NOT NULL,
    deferred_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE deferred_indexes IS
    'Indexes dropped for an initial bulk load, rebuilt when it ends (or by the next load if it died).';
