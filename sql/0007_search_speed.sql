-- Search speed: stricter trigram thresholds, metrics-sorted listings as index scans, keyset bound.
-- depends: 0004_analytics

-- Sorted listings without a query: the sort key expressions of search_customers, so a page is an
-- index scan (merge-appended with the customers that have no metrics) instead of a top-N sort.
CREATE INDEX IF NOT EXISTS customer_metrics_ltv_sort_idx
    ON customer_metrics ((coalesce(lifetime_value, -1::numeric)) DESC, customer_id);
CREATE INDEX IF NOT EXISTS customer_metrics_churn_sort_idx
    ON customer_metrics ((coalesce(churn_probability, -1::numeric)) DESC, customer_id);
CREATE INDEX IF NOT EXISTS customer_metrics_engagement_sort_idx
    ON customer_metrics ((coalesce(engagement_score, -1::numeric)) DESC, customer_id);
CREATE INDEX IF NOT EXISTS customers_created_at_id_idx ON customers (created_at DESC, id)
    WHERE deleted_at IS NULL AND merged_into IS NULL;

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
LANGUAGE plpgsql STABLE
-- stricter than the pg_trgm defaults (0.3 / 0.6), for this function only: fewer heap rechecks
SET pg_trgm.similarity_threshold = 0.4
SET pg_trgm.word_similarity_threshold = 0.7
AS $$
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
    b_sql      text;
    stmt       text;
    n_inner    integer;
    lowest     numeric;
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
        keyset_sql := format('(%s %s %L::%s AND (%s))', key_exprs[1],
                             CASE WHEN key_desc[1] THEN '<=' ELSE '>=' END,
                             cursor_keys ->> 1, key_types[1], array_to_string(ors, ' OR '));
    END IF;

    -- /*join*/ becomes LEFT JOIN, or JOIN where customers without metrics cannot reach the
    -- page (replace(), not format(): the pieces hold % signs of their own)
    b_sql := format($b$
            SELECT c.id, c.full_name, c.email, c.email_lowercase, c.phone_normalized, c.status,
                   c.customer_type, c.tags, c.created_at, m.total_orders, m.last_order_date,
                   m.lifetime_value, m.churn_probability, m.engagement_score, %1$s AS score
            FROM customers c
            /*join*/ customer_metrics m ON m.customer_id = c.id
            WHERE %2$s AND %3$s
        $b$, score_sql, customer_filter_clause(filters), match_sql);
    stmt := format($q$
        WITH b AS (/*b*/), page AS (
            SELECT b.*, row_number() OVER (ORDER BY %4$s) AS rn, count(*) OVER () AS n_page,
                   jsonb_build_array(%1$L, %2$s) AS keys
            FROM (SELECT b.* FROM b WHERE %3$s ORDER BY %4$s LIMIT %5$s) b
        )
        SELECT id, full_name, email, phone_normalized, status, customer_type, tags, created_at,
               total_orders, last_order_date, lifetime_value, churn_probability,
               engagement_score, score,
               CASE WHEN n_page > %6$s THEN
                   translate(replace(encode(convert_to(
                       (SELECT p2.keys FROM page p2 ORDER BY p2.rn OFFSET %6$s - 1 LIMIT 1)::text,
                       'UTF8'), 'base64'), E'\n', ''), '+/', '-_')
               END
        FROM page
        WHERE rn <= %6$s
        ORDER BY rn
        $q$,
        signature, array_to_string(key_exprs, ', '), keyset_sql, order_sql, page_size + 1,
        page_size);
    -- the extra row only tells whether there is a next page

    -- A listing sorted by a metric, descending: customers without metrics (key -1) come last.
    -- If the inner join alone fills the page with keys above -1, it is the page, and the index
    -- on the metric key (0007) makes it an index scan that stops after the page.
    IF key_desc[1] AND key_exprs[1] IN ('coalesce(b.lifetime_value, -1)',
                                        'coalesce(b.churn_probability, -1)',
                                        'coalesce(b.engagement_score, -1)') THEN
        EXECUTE format('SELECT count(*), min(k) FROM (SELECT %s AS k FROM (%s) b WHERE %s '
                       'ORDER BY %s LIMIT %s) s', key_exprs[1], replace(b_sql, '/*join*/', 'JOIN'),
                       keyset_sql, order_sql, page_size + 1)
            INTO n_inner, lowest;
        IF n_inner = page_size + 1 AND lowest > -1 THEN
            RETURN QUERY EXECUTE replace(stmt, '/*b*/', replace(b_sql, '/*join*/', 'JOIN'));
            RETURN;
        END IF;
    END IF;
    RETURN QUERY EXECUTE replace(stmt, '/*b*/', replace(b_sql, '/*join*/', 'LEFT JOIN'));
END;
$$;
COMMENT ON FUNCTION search_customers(text, jsonb, text, integer, text) IS
    'Fuzzy customer search: trigram match on name/email/phone, filters, sort, keyset pages; docs/search.md.';

