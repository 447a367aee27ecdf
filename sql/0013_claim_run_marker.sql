-- The run that last claimed a delivery. A processing run skips deliveries it already attempted
-- (so one run never burns a delivery's retries) by this column instead of sending the ids of
-- everything it claimed with every claim: that list grew with the run, without bound.
ALTER TABLE webhook_events ADD COLUMN IF NOT EXISTS last_claimed_by text;
COMMENT ON COLUMN webhook_events.last_claimed_by IS
    'Claim token of the run that last claimed this delivery (kept after it finished).';
