-- Analytics: RFM segment map, customer filter + fuzzy search functions, segment distribution, crm_analyst role.
-- depends: 0002_analyst_views

-- ------------------------------------------------------------ rfm_segment_map
-- The classic RFM grid: recency score (1-5) x the rounded mean of frequency and monetary scores
-- (1-5) -> segment. A view over VALUES rather than a CASE so analysts can read it; a view rather
-- than a table so it is part of the schema, not data (truncating data never loses it).
CREATE OR REPLACE VIEW rfm_segment_map (r_score, fm_score, segment) AS
SELECT r::smallint, fm::smallint, segment FROM (VALUES
    (5, 1, 'new'),            (5, 2, 'potential_loyalist'), (5, 3, 'potential_loyalist'),
    (5, 4, 'champions'),      (5, 5, 'champions'),
    (4, 1, 'promising'),      (4, 2, 'potential_loyalist'), (4, 3, 'potential_loyalist'),
    (4, 4, 'loyal'),          (4, 5, 'champions'),
    (3, 1, 'about_to_sleep'), (3, 2, 'about_to_sleep'),     (3, 3, 'needs_attention'),
    (3, 4, 'loyal'),          (3, 5, 'loyal'),
    (2, 1, 'hibernating'),    (2, 2, 'hibernating'),        (2, 3, 'at_risk'),
    (2, 4, 'at_risk'),        (2, 5, 'cannot_lose'),
    (1, 1, 'lost'),           (1, 2, 'lost'),               (1, 3, 'hibernating'),
    (1, 4, 'at_risk'),        (1, 5, 'cannot_lose')
) AS grid (r, fm, segment);
COMMENT ON VIEW rfm_segment_map IS
    'RFM grid used by customer_segments: (recency score, frequency+monetary score) -> segment; docs/metrics.md.';

CREATE INDEX IF NOT EXISTS customer_metrics_computed_at_idx ON customer_metrics (computed_at);
CREATE INDEX IF NOT EXISTS orders_updated_at_idx ON orders (updated_at);
CREATE INDEX IF NOT EXISTS customer_activities_created_at_idx ON customer_activities (created_at);
CREATE INDEX IF NOT EXISTS customers_updated_at_idx ON customers (updated_at);

-- ------------------------------------------------------------- customer filter
-- A jsonb value that is a string or an array of strings, as text[].
CREATE OR REPLACE FUNCTION jsonb_text_list(value jsonb) RETURNS text[]
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE jsonb_typeof(value)
        WHEN 'array' THEN ARRAY(SELECT jsonb_array_elements_text(value))
        WHEN 'null' THEN NULL
        ELSE ARRAY[value #>> '{}']
    END
$$;

-- The inclusive upper bound of a date range: a bare date covers its whole day.
CREATE OR REPLACE FUNCTION customer_filter_upper_bound(expr text, value text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN value ~ '^\d{4}-\d{2}-\d{2}$'
        THEN format('%s < (%L::date + 1)::timestamptz', expr, value)
        ELSE format('%s <= %L::timestamptz', expr, value)
    END
$$;

-- The WHERE clause (over customers c, customer_metrics m) for the filters search and export share.
-- Every value is quoted with %L; unknown keys are an error rather than silently ignored.
CREATE OR REPLACE FUNCTION customer_filter_clause(filters jsonb) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    f     jsonb := coalesce(filters, '{}'::jsonb);
    parts text[] := ARRAY['c.deleted_at IS NULL', 'c.merged_into IS NULL'];
    k     text;
BEGIN
    IF jsonb_typeof(f) <> 'object' THEN
        RAISE EXCEPTION 'filters must be a JSON object' USING ERRCODE = '22023';
    END IF;
    FOR k IN SELECT jsonb_object_keys(f) LOOP
        IF k NOT IN ('status', 'customer_type', 'source', 'tags', 'tags_any', 'created_from',
                     'created_to', 'last_order_from', 'last_order_to', 'country', 'attributes',
                     'segment', 'min_lifetime_value', 'max_churn_probability') THEN
            RAISE EXCEPTION 'unknown filter "%"', k USING ERRCODE = '22023';
        END IF;
        IF jsonb_typeof(f -> k) = 'null' THEN
            f := f - k;
        END IF;
    END LOOP;

    IF f ? 'status' THEN
        parts := parts || format('c.status = ANY (%L::text[])', jsonb_text_list(f -> 'status'));
    END IF;
    IF f ? 'customer_type' THEN
        parts := parts || format('c.customer_type = ANY (%L::text[])',
                                 jsonb_text_list(f -> 'customer_type'));
    END IF;
    IF f ? 'source' THEN
        parts := parts || format(
            'EXISTS (SELECT 1 FROM customer_sources fs WHERE fs.customer_id = c.id '
            'AND fs.deleted_at IS NULL AND fs.source = ANY (%L::text[]))',
            jsonb_text_list(f -> 'source'));
    END IF;
    IF f ? 'tags' THEN
        parts := parts || format('c.tags @> %L::text[]', jsonb_text_list(f -> 'tags'));
    END IF;
    IF f ? 'tags_any' THEN
        parts := parts || format('c.tags && %L::text[]', jsonb_text_list(f -> 'tags_any'));
    END IF;
    IF f ? 'created_from' THEN
        parts := parts || format('c.created_at >= %L::timestamptz', f ->> 'created_from');
    END IF;
    IF f ? 'created_to' THEN
        parts := parts || customer_filter_upper_bound('c.created_at', f ->> 'created_to');
    END IF;
    IF f ? 'last_order_from' THEN
        parts := parts || format('m.last_order_date >= %L::timestamptz', f ->> 'last_order_from');
    END IF;
    IF f ? 'last_order_to' THEN
        parts := parts || customer_filter_upper_bound('m.last_order_date', f ->> 'last_order_to');
    END IF;
    IF f ? 'country' THEN
        parts := parts || format(
            'EXISTS (SELECT 1 FROM customer_addresses fa WHERE fa.customer_id = c.id '
            'AND (fa.country_code = ANY (%L::text[]) OR lower(fa.country) = ANY (%L::text[])))',
            (SELECT array_agg(upper(v)) FROM unnest(jsonb_text_list(f -> 'country')) v),
            (SELECT array_agg(lower(v)) FROM unnest(jsonb_text_list(f -> 'country')) v));
    END IF;
    IF f ? 'attributes' THEN
        IF jsonb_typeof(f -> 'attributes') <> 'object' THEN
            RAISE EXCEPTION 'filter "attributes" must be a JSON object' USING ERRCODE = '22023';
        END IF;
        parts := parts || format('c.custom_attributes @> %L::jsonb', f -> 'attributes');
    END IF;
    IF f ? 'segment' THEN
        parts := parts || format(
            'EXISTS (SELECT 1 FROM customer_segments fg WHERE fg.customer_id = c.id '
            'AND fg.segment_name = ANY (%L::text[]))', jsonb_text_list(f -> 'segment'));
    END IF;
    IF f ? 'min_lifetime_value' THEN
        parts := parts || format('m.lifetime_value >= %L::numeric', f ->> 'min_lifetime_value');
    END IF;
    IF f ? 'max_churn_probability' THEN
        parts := parts || format('m.churn_probability <= %L::numeric',
                                 f ->> 'max_churn_probability');
    END IF;
    RETURN array_to_string(parts, ' AND ');
END;
$$;
COMMENT ON FUNCTION customer_filter_clause(jsonb) IS
    'WHERE clause over customers c / customer_metrics m for search and export filters; docs/search.md.';

-- Ids of the live customers matching the filters (export streams customer_360 joined to this).
CREATE OR REPLACE FUNCTION filter_customers(filters jsonb DEFAULT '{}'::jsonb)
RETURNS TABLE (customer_id uuid)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN QUERY EXECUTE format(
        'SELECT c.id FROM customers c LEFT JOIN customer_metrics m ON m.customer_id = c.id WHERE %s',
        customer_filter_clause(filters));
END;
$$;

-- --------------------------------------------------------------- fuzzy search
-- Fuzzy customer search with filters, multi-column sort and keyset pagination (docs/search.md).
-- sort: comma-separated fields, '-' prefix for descending; the customer id is always the last
-- key so the order is total. The cursor is base64 JSON of the last row's sort keys plus a hash
-- of (query, filters, sort) so a cursor cannot be replayed against a different search.
CREATE OR REPLACE FUNCTION search_customers(
    query       text DEFAULT NULL,
    filters     jsonb DEFAULT '{}'::jsonb,
    sort        text DEFAULT NULL,
    page_size   integer DEFAULT 25,
    page_cursor text DEFAULT NULL
)
RETURNS TABLE (
    customer_id       uuid,
    full_name         text,
    email             text,
    phone             text,
    status            text,
    customer_type     text,
    tags              text[],
    created_at        timestamptz,
    total_orders      integer,
    last_order_date   timestamptz,
    lifetime_value    numeric,
    churn_probability numeric,
    engagement_score  numeric,
    score             numeric,
    next_cursor       text
)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    q          text := nullif(lower(btrim(query)), '');
    digits     text := regexp_replace(coalesce(query, ''), '[^0-9]', '', 'g');
    like_prefix text := replace(replace(replace(lower(btrim(query)), '\', '\\'), '%', '\%'),
                                '_', '\_') || '%';
    sort_spec  text;
    item       text;
    field      text;
    descending boolean;
    key_exprs  text[] := '{}';
    key_types  text[] := '{}';
    key_desc   boolean[] := '{}';
    match_sql  text := 'true';
    score_sql  text := '0::numeric';
    order_sql  text;
    keyset_sql text := 'true';
    cursor_keys jsonb;
    signature  text;
    ors        text[] := '{}';
    ands       text[];
    i          integer;
    j          integer;
BEGIN
    IF page_size IS NULL OR page_size < 1 OR page_size > 1000 THEN
        RAISE EXCEPTION 'page_size must be between 1 and 1000' USING ERRCODE = '22023';
    END IF;
    sort_spec := coalesce(nullif(btrim(sort), ''), CASE WHEN q IS NULL THEN '-created_at'
                                                       ELSE '-score' END);

    IF q IS NOT NULL THEN
        -- % and <% use the trigram GIN indexes on full_name / email_lowercase / phone_normalized.
        -- Email conditions only when the query could be (part of) an address (no blank):
        -- testing every name query against emails too doubles the rows to recheck for nothing.
        IF q LIKE '%@%' THEN
            match_sql := format('(c.email_lowercase %% %1$L OR %1$L <%% c.email_lowercase '
                                'OR c.email_lowercase LIKE %2$L)', q, like_prefix);
        ELSIF q ~ '\s' THEN
            match_sql := format('(c.full_name %% %1$L OR %1$L <%% c.full_name)', q);
        ELSE
            match_sql := format(
                '(c.full_name %% %1$L OR %1$L <%% c.full_name OR %1$L <%% c.email_lowercase '
                'OR c.email_lowercase LIKE %2$L)', q, like_prefix);
        END IF;
        score_sql := format(
            'round(greatest(similarity(coalesce(c.full_name, ''''), %1$L), '
            'word_similarity(%1$L, coalesce(c.full_name, '''')), '
            'similarity(coalesce(c.email_lowercase, ''''), %1$L), '
            'word_similarity(%1$L, coalesce(c.email_lowercase, '''')), '
            'CASE WHEN c.email_lowercase = %1$L THEN 1 ELSE 0 END)::numeric, 4)', q);
        IF length(digits) >= 4 THEN
            match_sql := format('(%s OR c.phone_normalized LIKE %L)', match_sql,
                                '%' || digits || '%');
            score_sql := format('greatest(%s, CASE WHEN c.phone_normalized LIKE %L THEN 1 '
                                'ELSE 0 END)', score_sql, '%' || digits || '%');
        END IF;
    END IF;

    FOREACH item IN ARRAY string_to_array(sort_spec, ',') LOOP
        item := btrim(item);
        CONTINUE WHEN item = '';
        descending := left(item, 1) = '-';
        field := lower(ltrim(item, '+-'));
        -- missing values sort as the lowest value so keys are never null
        key_exprs := key_exprs || CASE field
            WHEN 'score' THEN 'b.score'
            WHEN 'relevance' THEN 'b.score'
            WHEN 'full_name' THEN 'coalesce(b.full_name, '''')'
            WHEN 'name' THEN 'coalesce(b.full_name, '''')'
            WHEN 'email' THEN 'coalesce(b.email_lowercase, '''')'
            WHEN 'status' THEN 'b.status'
            WHEN 'customer_type' THEN 'b.customer_type'
            WHEN 'created_at' THEN 'b.created_at'
            WHEN 'last_order_date' THEN 'coalesce(b.last_order_date, ''-infinity''::timestamptz)'
            WHEN 'total_orders' THEN 'coalesce(b.total_orders, -1)'
            WHEN 'lifetime_value' THEN 'coalesce(b.lifetime_value, -1)'
            WHEN 'churn_probability' THEN 'coalesce(b.churn_probability, -1)'
            WHEN 'engagement_score' THEN 'coalesce(b.engagement_score, -1)'
        END;
        IF key_exprs[array_length(key_exprs, 1)] IS NULL THEN
            RAISE EXCEPTION 'unknown sort field "%"', field USING ERRCODE = '22023';
        END IF;
        key_types := key_types || CASE
            WHEN field IN ('score', 'relevance', 'total_orders', 'lifetime_value',
                           'churn_probability', 'engagement_score') THEN 'numeric'
            WHEN field IN ('created_at', 'last_order_date') THEN 'timestamptz'
            ELSE 'text' END;
        key_desc := key_desc || descending;
    END LOOP;
    key_exprs := key_exprs || 'b.id'::text;
    key_types := key_types || 'uuid'::text;
    key_desc := key_desc || false;

    order_sql := (SELECT string_agg(e || CASE WHEN d THEN ' DESC' ELSE ' ASC' END, ', ' ORDER BY n)
                  FROM unnest(key_exprs, key_desc) WITH ORDINALITY AS t(e, d, n));
    signature := left(md5(coalesce(q, '') || '|' || coalesce(filters, '{}'::jsonb)::text || '|'
                          || sort_spec), 12);

    IF page_cursor IS NOT NULL AND page_cursor <> '' THEN
        BEGIN
            cursor_keys := convert_from(decode(translate(page_cursor, '-_', '+/'), 'base64'),
                                        'UTF8')::jsonb;
        EXCEPTION WHEN OTHERS THEN
            RAISE EXCEPTION 'invalid page cursor' USING ERRCODE = '22023';
        END;
        IF jsonb_typeof(cursor_keys) <> 'array' OR cursor_keys ->> 0 IS DISTINCT FROM signature
           OR jsonb_array_length(cursor_keys) <> array_length(key_exprs, 1) + 1 THEN
            RAISE EXCEPTION 'page cursor does not belong to this search' USING ERRCODE = '22023';
        END IF;
        -- (k1 > v1) OR (k1 = v1 AND k2 < v2) OR ... with each key's own direction
        FOR i IN 1 .. array_length(key_exprs, 1) LOOP
            ands := '{}';
            FOR j IN 1 .. i - 1 LOOP
                ands := ands || format('%s = %L::%s', key_exprs[j], cursor_keys ->> j, key_types[j]);
            END LOOP;
            ands := ands || format('%s %s %L::%s', key_exprs[i],
                                   CASE WHEN key_desc[i] THEN '<' ELSE '>' END,
                                   cursor_keys ->> i, key_types[i]);
            ors := ors || ('(' || array_to_string(ands, ' AND ') || ')');
        END LOOP;
        keyset_sql := '(' || array_to_string(ors, ' OR ') || ')';
    END IF;

    RETURN QUERY EXECUTE format($q$
        WITH b AS (
            SELECT c.id, c.full_name, c.email, c.email_lowercase, c.phone_normalized, c.status,
                   c.customer_type, c.tags, c.created_at, m.total_orders, m.last_order_date,
                   m.lifetime_value, m.churn_probability, m.engagement_score, %1$s AS score
            FROM customers c
            LEFT JOIN customer_metrics m ON m.customer_id = c.id
            WHERE %2$s AND %3$s
        ), page AS (
            SELECT b.*, row_number() OVER (ORDER BY %7$s) AS rn, count(*) OVER () AS n_page,
                   jsonb_build_array(%4$L, %5$s) AS keys
            FROM (SELECT b.* FROM b WHERE %6$s ORDER BY %7$s LIMIT %8$s) b
        )
        SELECT id, full_name, email, phone_normalized, status, customer_type, tags, created_at,
               total_orders, last_order_date, lifetime_value, churn_probability,
               engagement_score, score,
               CASE WHEN n_page > %9$s THEN
                   translate(replace(encode(convert_to(
                       (SELECT p2.keys FROM page p2 ORDER BY p2.rn OFFSET %9$s - 1 LIMIT 1)::text,
                       'UTF8'), 'base64'), E'\n', ''), '+/', '-_')
               END
        FROM page
        WHERE rn <= %9$s
        ORDER BY rn
        $q$,
        score_sql, customer_filter_clause(filters), match_sql, signature,
        array_to_string(key_exprs, ', '), keyset_sql, order_sql, page_size + 1, page_size)
    -- the extra row only tells whether there is a next page
    ;
END;
$$;
COMMENT ON FUNCTION search_customers(text, jsonb, text, integer, text) IS
    'Fuzzy customer search: trigram match on name/email/phone, filters, sort, keyset pages; docs/search.md.';

-- ------------------------------------------------------ segment distribution
CREATE OR REPLACE VIEW customer_segment_distribution AS
SELECT
    split_part(s.segment_name, ':', 1) AS segment_family,
    s.segment_name,
    s.segment_type,
    count(*) AS customers,
    round(count(*)::numeric / nullif((SELECT count(*) FROM customers c
                                      WHERE c.deleted_at IS NULL AND c.merged_into IS NULL), 0),
          4) AS share_of_customers
FROM customer_segments s
JOIN customers c ON c.id = s.customer_id AND c.deleted_at IS NULL AND c.merged_into IS NULL
GROUP BY 1, 2, 3;
COMMENT ON VIEW customer_segment_distribution IS 'How many live customers hold each segment.';

-- ------------------------------------------------------------ webhook summary
CREATE OR REPLACE VIEW webhook_events_summary AS
SELECT id, source, topic, delivery_id, shop_domain, received_at, triggered_at, status, attempts,
       next_attempt_at, last_error, processed_at, subject_key, outcome
FROM webhook_events;
COMMENT ON VIEW webhook_events_summary IS 'webhook_events without headers and payloads (for crm_analyst).';

-- ---------------------------------------------------------------- crm_analyst
-- Read-only analysts: SELECT on every table and view, nothing else, and never the raw webhook
-- headers/payloads (which carry PII and secrets). No password here: an admin grants LOGIN or
-- membership (GRANT crm_analyst TO alice) outside the repo.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'crm_analyst') THEN
        CREATE ROLE crm_analyst NOLOGIN;
    END IF;
END;
$$;

GRANT USAGE ON SCHEMA public TO crm_analyst;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO crm_analyst;
REVOKE SELECT ON webhook_events FROM crm_analyst;
GRANT SELECT (id, source, topic, delivery_id, shop_domain, received_at, triggered_at, status,
              attempts, next_attempt_at, last_error, processed_at, subject_key, outcome)
    ON webhook_events TO crm_analyst;
-- tables and views created later by the migration owner are readable too
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO crm_analyst;
