-- Wake `crm-pipeline worker` as soon as a delivery lands: one NOTIFY per inserting statement
-- (the receiver lands a whole group commit in one INSERT), delivered when it commits. The payload
-- is empty: a listener only learns "look at the queue", so nothing about a delivery leaks to any
-- session that may LISTEN. The worker also polls, so a missed notification only costs a poll.
CREATE OR REPLACE FUNCTION notify_webhook_events_landed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('crm_webhook_events', '');
    RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS webhook_events_landed ON webhook_events;
CREATE TRIGGER webhook_events_landed
    AFTER INSERT ON webhook_events
    FOR EACH STATEMENT EXECUTE FUNCTION notify_webhook_events_landed();
