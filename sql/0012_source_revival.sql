-- A customer soft-deleted because its source records were deleted (a full pull's reconcile or a
-- customers/delete webhook) comes back when one of those records is seen alive again; one
-- deleted by staff, a merge or a GDPR redaction does not (docs/loading.md, "Deletions").
ALTER TABLE customers ADD COLUMN IF NOT EXISTS deleted_by_source boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN customers.deleted_by_source IS
    'deleted_at was set only because the customer''s source records were deleted; a newer observation of a live source record clears it.';
