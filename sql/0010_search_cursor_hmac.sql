-- Search cursors signed with a keyed HMAC; search_customers builds its statement without replace().
-- depends: 0007_search_speed 0008_deferred_indexes
--
-- Before: the cursor's "signature" was a bare md5 of the search anyone could compute, and the
-- statement was assembled by replace() over text that already held quoted cursor values, so a
-- cursor value containing the placeholder spliced the query text into SQL. Now cursor values
-- never enter the statement text (they are bound with EXECUTE ... USING), the statement is
-- composed with format() only, and cursors carry an HMAC-SHA256 under a server-side key that
-- crm_analyst cannot read (docs/search.md#cursor-signing).

-- ------------------------------------------------------------ private schema and the key
-- Nothing here is readable by crm_analyst: no USAGE on the schema, no grant on the table.
-- Rotating the key (UPDATE ... SET key = <32 fresh random bytes>) invalidates every cursor.
CREATE SCHEMA IF NOT EXISTS crm_private;
REVOKE ALL ON SCHEMA crm_private FROM PUBLIC;

CREATE TABLE IF NOT EXISTS crm_private.search_cursor_key (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    key        bytea NOT NULL CHECK (length(key) >= 32),
    created_at timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON crm_private.search_cursor_key FROM PUBLIC;

-- pgcrypto is not in the embedded server, so the key is 256 bits hashed from three v4 uuids
-- (366 bits from the server's strong random source).
INSERT INTO crm_private.search_cursor_key (key)
SELECT sha256(convert_to(gen_random_uuid()::text || gen_random_uuid()::text
                         || gen_random_uuid()::text, 'UTF8'))
ON CONFLICT (singleton) DO NOTHING;

-- HMAC-SHA256 (RFC 2104) from the core sha256(): pgcrypto's hmac() is not available.
CREATE OR REPLACE FUNCTION crm_private.hmac_sha256(key bytea, message bytea) RETURNS bytea
LANGUAGE plpgsql IMMUTABLE STRICT
SET search_path = pg_catalog
AS $$
DECLARE
    block bytea := CASE WHEN length(key) > 64 THEN sha256(key) ELSE key END;
    ipad  bytea;
    opad  bytea;
BEGIN
    block := block || decode(repeat('00', 64 - length(block)), 'hex');
    ipad := block;
    opad := block;
    FOR i IN 0 .. 63 LOOP
        ipad := set_byte(ipad, i, get_byte(block, i) # 54);  -- 0x36
        opad := set_byte(opad, i, get_byte(block, i) # 92);  -- 0x5c
    END LOOP;
    RETURN sha256(opad || sha256(ipad || message));
END;
$$;
REVOKE ALL ON FUNCTION crm_private.hmac_sha256(bytea, bytea) FROM PUBLIC;

-- ----------------------------------------------------------------- sealing and opening
-- The only readers of the key: SECURITY DEFINER, owned by the migrating role, search_path
-- pinned so a caller's objects cannot stand in for the ones used here. They sign or verify
-- a cursor; they never return the key.

-- A cursor: base64url(payload) '.' base64url(hmac(payload)); payload = [search_id, keys...].
-- PARALLEL RESTRICTED: the page statement calls it, and an unmarked (unsafe) function there
-- would keep the whole search from parallel scans and sorts.
CREATE OR REPLACE FUNCTION search_cursor_seal(search_id text, keys jsonb) RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER PARALLEL RESTRICTED
SET search_path = pg_catalog, crm_private, pg_temp
AS $$
DECLARE
    payload bytea := convert_to((jsonb_build_array(search_id) || keys)::text, 'UTF8');
    secret  bytea := (SELECT k.key FROM crm_private.search_cursor_key k);
BEGIN
    IF secret IS NULL THEN  -- rotate with UPDATE, never DELETE (docs/search.md#cursor-signing)
        RAISE EXCEPTION 'the search cursor key is missing from crm_private.search_cursor_key'
            USING ERRCODE = '55000';
    END IF;
    RETURN translate(encode(payload, 'base64'), E'+/\n', '-_') || '.'
           || translate(encode(crm_private.hmac_sha256(secret, payload), 'base64'), E'+/\n', '-_');
END;
$$;

-- The sort keys of a cursor this server issued for this search, or the function's own error.
CREATE OR REPLACE FUNCTION search_cursor_open(page_cursor text, search_id text, n_keys integer)
RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, crm_private, pg_temp
AS $$
DECLARE
    payload  bytea;
    mac      bytea;
    expected bytea;
    doc      jsonb;
BEGIN
    BEGIN
        IF page_cursor !~ '^[A-Za-z0-9_=-]+\.[A-Za-z0-9_=-]+$' THEN
            RAISE EXCEPTION USING ERRCODE = '22023';
        END IF;
        payload := decode(translate(split_part(page_cursor, '.', 1), '-_', '+/'), 'base64');
        mac := decode(translate(split_part(page_cursor, '.', 2), '-_', '+/'), 'base64');
    EXCEPTION WHEN OTHERS THEN
        RAISE EXCEPTION 'invalid page cursor' USING ERRCODE = '22023';
    END;
    SELECT crm_private.hmac_sha256(k.key, payload) INTO expected
    FROM crm_private.search_cursor_key k;
    IF mac IS DISTINCT FROM expected THEN
        RAISE EXCEPTION 'invalid page cursor: bad signature (tampered, forged or from another '
                        'server)' USING ERRCODE = '22023';
    END IF;
    doc := convert_from(payload, 'UTF8')::jsonb;  -- signed by us, so well-formed
    IF jsonb_typeof(doc) <> 'array' OR doc ->> 0 IS DISTINCT FROM search_id
       OR jsonb_array_length(doc) <> n_keys + 1 THEN
        RAISE EXCEPTION 'page cursor does not belong to this search' USING ERRCODE = '22023';
    END IF;
    RETURN doc - 0;
END;
$$;

REVOKE ALL ON FUNCTION search_cursor_seal(text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION search_cursor_open(text, text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION search_cursor_seal(text, jsonb) TO crm_analyst;
GRANT EXECUTE ON FUNCTION search_cursor_open(text, text, integer) TO crm_analyst;

-- ------------------------------------------------------------------ filter values
-- A date or number filter value as text, or the filter's own clear error (22023) instead of
-- whatever cast error (22007, 22008, 22009, 22P02, 22003, ...) the statement would raise later.
CREATE OR REPLACE FUNCTION customer_filter_value(filters jsonb, key text, kind text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    value jsonb := filters -> key;
    v     text := value #>> '{}';
BEGIN
    BEGIN
        IF jsonb_typeof(value) NOT IN ('string', 'number') THEN
            RAISE EXCEPTION USING ERRCODE = '22023';
        ELSIF kind = 'numeric' THEN
            PERFORM v::numeric;
        ELSE
            PERFORM v::timestamptz;
            IF v ~ '^\d{4}-\d{2}-\d{2}$' THEN  -- an upper bound adds a day
                PERFORM (v::date + 1)::timestamptz;
            END IF;
        END IF;
    EXCEPTION WHEN data_exception THEN
        RAISE EXCEPTION 'filter "%" must be %, not %', key,
            CASE kind WHEN 'numeric' THEN 'a number' ELSE 'an ISO date or timestamp' END,
            left(value::text, 100) USING ERRCODE = '22023';
    END;
    RETURN v;
END;
$$;

-- As 0004, with every date and number value checked by customer_filter_value.
CREATE OR REPLACE FUNCTION customer_filter_clause(filters jsonb) RETURNS text
LANGUAGE plpgsql STABLE AS $$
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
        parts := parts || format('c.created_at >= %L::timestamptz',
                                 customer_filter_value(f, 'created_from', 'timestamptz'));
    END IF;
    IF f ? 'created_to' THEN
        parts := parts || customer_filter_upper_bound(
            'c.created_at', customer_filter_value(f, 'created_to', 'timestamptz'));
    END IF;
    IF f ? 'last_order_from' THEN
        parts := parts || format('m.last_order_date >= %L::timestamptz',
                                 customer_filter_value(f, 'last_order_from', 'timestamptz'));
    END IF;
    IF f ? 'last_order_to' THEN
        parts := parts || customer_filter_upper_bound(
            'm.last_order_date', customer_filter_value(f, 'last_order_to', 'timestamptz'));
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
        parts := parts || format('m.lifetime_value >= %L::numeric',
                                 customer_filter_value(f, 'min_lifetime_value', 'numeric'));
    END IF;
    IF f ? 'max_churn_probability' THEN
        parts := parts || format('m.churn_probability <= %L::numeric',
                                 customer_filter_value(f, 'max_churn_probability', 'numeric'));
    END IF;
    RETURN array_to_string(parts, ' AND ');
END;
$$;
COMMENT ON FUNCTION customer_filter_clause(jsonb) IS
    'WHERE clause over customers c / customer_metrics m for search and export filters; docs/search.md.';


-- --------------------------------------------------------------- fuzzy search
-- Same matching, filters, sort and fast paths as 0007 (docs/search.md). Differences: cursor
-- values are bound parameters ($1 = the cursor's keys as jsonb, $2 = the search id), the
-- statement is composed with format() from fixed templates (the join kind is a format
-- argument, not a replace() placeholder), and cursors are sealed/opened by the functions above.
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
    q           text := nullif(lower(btrim(query)), '');
    digits      text := regexp_replace(coalesce(query, ''), '[^0-9]', '', 'g');
    like_prefix text := replace(replace(replace(lower(btrim(query)), '\', '\\'), '%', '\%'),
                                '_', '\_') || '%';
    sort_spec   text;
    item        text;
    field       text;
    descending  boolean;
    key_exprs   text[] := '{}';
    key_types   text[] := '{}';
    key_desc    boolean[] := '{}';
    match_sql   text := 'true';
    score_sql   text := '0::numeric';
    order_sql   text;
    keyset_sql  text := 'true';
    cursor_keys jsonb;
    search_id   text;
    ors         text[] := '{}';
    ands        text[];
    filter_sql  text;
    b_inner     text;
    b_outer     text;
    -- the filtered, matched rows; %1$s is the join kind (JOIN or LEFT JOIN, below)
    b_template  CONSTANT text := $b$
            SELECT c.id, c.full_name, c.email, c.email_lowercase, c.phone_normalized, c.status,
                   c.customer_type, c.tags, c.created_at, m.total_orders, m.last_order_date,
                   m.lifetime_value, m.churn_probability, m.engagement_score, %2$s AS score
            FROM customers c
            %1$s customer_metrics m ON m.customer_id = c.id
            WHERE %3$s AND %4$s
        $b$;
    -- one page of b plus one look-ahead row (it only tells whether there is a next page)
    page_template CONSTANT text := $q$
        WITH b AS (%1$s), page AS (
            SELECT b.*, row_number() OVER (ORDER BY %3$s) AS rn,
                   jsonb_build_array(%2$s) AS keys
            FROM (SELECT b.* FROM b WHERE %4$s ORDER BY %3$s LIMIT %5$s) b
        )
        SELECT id, full_name, email, phone_normalized, status, customer_type, tags, created_at,
               total_orders, last_order_date, lifetime_value, churn_probability,
               engagement_score, score,
               (SELECT search_cursor_seal($2, p2.keys) FROM page p2
                WHERE p2.rn = %6$s AND EXISTS (SELECT 1 FROM page p3 WHERE p3.rn = %6$s + 1))
        FROM page
        WHERE rn <= %6$s
        ORDER BY rn
        $q$;
    n_inner     integer;
    lowest      numeric;
BEGIN
    IF page_size IS NULL OR page_size < 1 OR page_size > 1000 THEN
        RAISE EXCEPTION 'page_size must be between 1 and 1000' USING ERRCODE = '22023';
    END IF;
    sort_spec := coalesce(nullif(btrim(sort), ''), CASE WHEN q IS NULL THEN '-created_at'
                                                       ELSE '-score' END);

    IF q IS NOT NULL THEN
        -- % and <% use the trigram GIN indexes on full_name / email_lowercase / phone_normalized.
        -- Email conditions only when the query could be (part of) an address (no blank).
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
    -- binds a cursor to its search: a cursor replayed with another query, filter or sort fails
    search_id := left(encode(sha256(convert_to(
        jsonb_build_array(q, coalesce(filters, '{}'::jsonb), sort_spec)::text, 'UTF8')), 'hex'),
        32);

    IF page_cursor IS NOT NULL AND page_cursor <> '' THEN
        cursor_keys := search_cursor_open(page_cursor, search_id, array_length(key_exprs, 1));
        -- (k1 > v1) OR (k1 = v1 AND k2 < v2) OR ... with each key's own direction; vi is the
        -- bound parameter ($1 ->> i-1), never text in the statement
        FOR i IN 1 .. array_length(key_exprs, 1) LOOP
            ands := '{}';
            FOR j IN 1 .. i - 1 LOOP
                ands := ands || format('%s = ($1 ->> %s)::%s', key_exprs[j], j - 1, key_types[j]);
            END LOOP;
            ands := ands || format('%s %s ($1 ->> %s)::%s', key_exprs[i],
                                   CASE WHEN key_desc[i] THEN '<' ELSE '>' END,
                                   i - 1, key_types[i]);
            ors := ors || ('(' || array_to_string(ands, ' AND ') || ')');
        END LOOP;
        keyset_sql := format('(%s %s ($1 ->> 0)::%s AND (%s))', key_exprs[1],
                             CASE WHEN key_desc[1] THEN '<=' ELSE '>=' END,
                             key_types[1], array_to_string(ors, ' OR '));
    END IF;

    filter_sql := customer_filter_clause(filters);
    b_inner := format(b_template, 'JOIN', score_sql, filter_sql, match_sql);
    b_outer := format(b_template, 'LEFT JOIN', score_sql, filter_sql, match_sql);

    -- A listing sorted by a metric, descending: customers without metrics (key -1) come last.
    -- If the inner join alone fills the page with keys above -1, it is the page, and the index
    -- on the metric key (0007) makes it an index scan that stops after the page.
    IF key_desc[1] AND key_exprs[1] IN ('coalesce(b.lifetime_value, -1)',
                                        'coalesce(b.churn_probability, -1)',
                                        'coalesce(b.engagement_score, -1)') THEN
        EXECUTE format('SELECT count(*), min(k) FROM (SELECT %s AS k FROM (%s) b WHERE %s '
                       'ORDER BY %s LIMIT %s) s', key_exprs[1], b_inner,
                       keyset_sql, order_sql, page_size + 1)
            INTO n_inner, lowest
            USING cursor_keys, search_id;
        IF n_inner = page_size + 1 AND lowest > -1 THEN
            RETURN QUERY EXECUTE format(page_template, b_inner, array_to_string(key_exprs, ', '),
                                        order_sql, keyset_sql, page_size + 1, page_size)
                USING cursor_keys, search_id;
            RETURN;
        END IF;
    END IF;
    RETURN QUERY EXECUTE format(page_template, b_outer, array_to_string(key_exprs, ', '),
                                order_sql, keyset_sql, page_size + 1, page_size)
        USING cursor_keys, search_id;
END;
$$;
COMMENT ON FUNCTION search_customers(text, jsonb, text, integer, text) IS
    'Fuzzy customer search: trigram match on name/email/phone, filters, sort, HMAC-signed keyset '
    'pages; docs/search.md.';
