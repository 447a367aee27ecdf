"""Consent coming back from Klaviyo: unsubscribes and suppressions withdraw marketing consent.

A customer is opted out of a channel when Klaviyo says so more recently than any source said
yes: the profile's `subscriptions` (consent UNSUBSCRIBED, or an email suppression such as a
hard bounce or a spam complaint), an `Unsubscribed` event, or an unsubscribe delivered by a
Klaviyo system webhook (both land as `email_unsubscribe` / `sms_unsubscribe` activities). The
time and the source of the withdrawal are kept on the customer (`*_consent_updated_at`,
`*_consent_source`). Consent is only ever withdrawn here, never granted: subscribing is the
customer's act. Survivorship (ingest/customers.py) may set the flag from the sources again when
a customer changes; this runs after it in every job, so the newest statement still wins.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa

# Klaviyo metric names that withdraw consent, with the activity they are stored as
OPT_OUT_ACTIVITIES = ("email_unsubscribe", "sms_unsubscribe")

_OPT_OUTS = """
WITH scope AS (
    SELECT id FROM customers
    WHERE deleted_at IS NULL AND (CAST(:ids AS uuid[]) IS NULL OR id = ANY(CAST(:ids AS uuid[])))
), subs AS (
    SELECT s.customer_id, s.source_updated_at,
           s.source_data -> 'attributes' -> 'subscriptions' -> 'email' -> 'marketing' AS email,
           s.source_data -> 'attributes' -> 'subscriptions' -> 'sms' -> 'marketing' AS sms
    FROM customer_sources s JOIN scope ON scope.id = s.customer_id
    WHERE s.source = 'klaviyo' AND s.deleted_at IS NULL
), opt AS (
    SELECT customer_id, 'email' AS channel,
           CASE WHEN jsonb_array_length(coalesce(email -> 'suppression', '[]'::jsonb)) > 0
                THEN 'klaviyo_suppression' ELSE 'klaviyo_subscriptions' END AS source,
           coalesce((email -> 'suppression' -> 0 ->> 'timestamp')::timestamptz,
                    (email ->> 'consent_timestamp')::timestamptz, source_updated_at) AS at
    FROM subs
    WHERE email ->> 'consent' = 'UNSUBSCRIBED'
       OR jsonb_array_length(coalesce(email -> 'suppression', '[]'::jsonb)) > 0
    UNION ALL
    SELECT customer_id, 'sms', 'klaviyo_subscriptions',
           coalesce((sms ->> 'consent_timestamp')::timestamptz, source_updated_at)
    FROM subs WHERE sms ->> 'consent' = 'UNSUBSCRIBED'
    UNION ALL
    SELECT a.customer_id,
           CASE WHEN a.activity_type = 'sms_unsubscribe' THEN 'sms' ELSE 'email' END,
           'klaviyo_unsubscribed_event', a.occurred_at
    FROM customer_activities a JOIN scope ON scope.id = a.customer_id
    WHERE a.source = 'klaviyo' AND a.activity_type = ANY(CAST(:types AS text[]))
), newest AS (
    SELECT DISTINCT ON (customer_id, channel) customer_id, channel, source, at
    FROM opt WHERE at IS NOT NULL ORDER BY customer_id, channel, at DESC
), yes AS (
    -- the newest time any source said yes, per channel
    SELECT p.customer_id,
           max((p.profile ->> 'email_consent_at')::timestamptz)
               FILTER (WHERE p.profile ->> 'accepts_email_marketing' = 'true') AS email_at,
           max((p.source_data -> 'sms_marketing_consent' ->> 'consent_updated_at')::timestamptz)
               FILTER (WHERE p.profile ->> 'accepts_sms_marketing' = 'true') AS sms_at
    FROM customer_sources p JOIN scope ON scope.id = p.customer_id
    WHERE p.deleted_at IS NULL
    GROUP BY p.customer_id
)
UPDATE customers c SET
    accepts_email_marketing = CASE WHEN e.customer_id IS NOT NULL THEN false
                                   ELSE c.accepts_email_marketing END,
    email_consent_updated_at = coalesce(e.at, c.email_consent_updated_at),
    email_consent_source = coalesce(e.source, c.email_consent_source),
    accepts_sms_marketing = CASE WHEN m.customer_id IS NOT NULL THEN false
                                 ELSE c.accepts_sms_marketing END,
    sms_consent_updated_at = coalesce(m.at, c.sms_consent_updated_at),
    sms_consent_source = coalesce(m.source, c.sms_consent_source)
FROM scope
LEFT JOIN yes ON yes.customer_id = scope.id
LEFT JOIN newest e ON e.customer_id = scope.id AND e.channel = 'email'
    AND e.at > coalesce(yes.email_at, '-infinity')
LEFT JOIN newest m ON m.customer_id = scope.id AND m.channel = 'sms'
    AND m.at > coalesce(yes.sms_at, '-infinity')
WHERE c.id = scope.id
  AND ((e.customer_id IS NOT NULL AND c.accepts_email_marketing)
       OR (m.customer_id IS NOT NULL AND c.accepts_sms_marketing))
RETURNING c.id::text
"""


def apply_opt_outs(conn: sa.Connection, customer_ids: Iterable[str] | None = None) -> list[str]:
    """Withdraw consent Klaviyo withdrew (all customers, or only these); the ids changed."""
    ids = None if customer_ids is None else sorted(set(customer_ids))
    if ids == []:
        return []
    rows = conn.execute(sa.text(_OPT_OUTS), {"ids": ids, "types": list(OPT_OUT_ACTIVITIES)})
    return [r[0] for r in rows]
