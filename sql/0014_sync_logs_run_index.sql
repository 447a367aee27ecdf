-- Incremental and webhook runs verify the customers their mirror step wrote, found by run_id in
-- customer_sync_logs; without this index every run would scan the whole (ever-growing) log.
CREATE INDEX IF NOT EXISTS customer_sync_logs_run_idx ON customer_sync_logs (run_id)
    WHERE customer_id IS NOT NULL;
