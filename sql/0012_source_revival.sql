-- A customer soft-deleted because its source records were deleted (a full pull's reconcile or a
-- customers/delete webhook) comes back when one of those records is seen alive again; one
-- deleted by staff, a merge or a GDPR redaction does not (docs/loading.md, "Deletions").
ALTER TABLE customers ADD COLUMN IF NOT EXISTS deleted_by_source boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN customers.deleted_by_source IS
    'deleted_at was set only because the customer''s source records were deleted; a newer observation of a live source record clears it.';

-- Customers soft-deleted before this migration: those whose Shopify/Klaviyo records were deleted
-- and that staff did not delete (no 'deleted' staff version), merge or redact were deleted because
-- of their sources, so a pull that sees them alive repairs an old, wrong reconcile.
UPDATE customers c SET deleted_by_source = true
WHERE c.deleted_at IS NOT NULL AND c.redacted_at IS NULL AND c.merged_into IS NULL
  AND NOT c.deleted_by_source
  AND NOT EXISTS (SELECT 1 FROM staff_field_versions v
                  WHERE v.customer_id = c.id AND v.field = 'deleted')
  AND EXISTS (SELECT 1 FROM customer_sources s
              WHERE s.customer_id = c.id AND s.deleted_at IS NOT NULL
                AND s.source IN ('shopify', 'klaviyo'))
  AND NOT EXISTS (SELECT 1 FROM customer_sources s
                  WHERE s.customer_id = c.id AND s.deleted_at IS NULL
                    AND s.source IN ('shopify', 'manual'));
