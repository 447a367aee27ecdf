"""Search latency on a synthetic customer base in a throwaway embedded PostgreSQL.

    python bench/bench_search.py --customers 200000 --repeat 20

Seeds N customers, metrics and segments with one generate_series INSERT each, runs typical
searches and prints p50/p95/p99 latency per query plus EXPLAIN ANALYZE of the fuzzy name search.
Names are realistic in spread: 10% come from small pools of common names (so "jon smith" has a
few exact hits), the rest from ~3,000 first and ~10,000 last names built from syllables; emails
are first.last / first initial + last / last + first, plus a number, at a handful of domains.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from crm_pipeline.analytics.search import search
from crm_pipeline.db.engine import make_engine
from crm_pipeline.db.migrate import migrate
from crm_pipeline.db.server import EmbeddedPostgres

FIRST = "James Mary John Patricia Robert Jennifer Michael Linda David Elizabeth William Barbara \
Richard Susan Joseph Jessica Thomas Sarah Charles Karen Jon Anna Liam Olivia Noah Emma".split()
LAST = "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez \
Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Harris".split()

ONSETS = "b br c ch cl d dr f fr g gr h j k kl l m n p pr r s sh st t th tr v w z".split()
VOWELS = "a e i o u ai ea ie ou ya".split()
CODAS = ["", "", "n", "r", "l", "s", "th", "m", "rd", "nd", "x", "ck"]
ENDINGS = "son sen ski berg ley ton man well ford ez ini ova er ley wood ard".split()


def syllable_names(n: int, seed: int, endings: list[str]) -> list[str]:
    """n distinct capitalised pseudo-names of 2-3 syllables (deterministic)."""
    import random

    rng = random.Random(seed)
    names: set[str] = set()
    while len(names) < n:
        parts = [rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS)]
        parts.append(rng.choice(ONSETS) + rng.choice(VOWELS))
        if rng.random() < 0.5:
            parts.append(rng.choice(endings) if endings else rng.choice(CODAS))
        names.add("".join(parts).capitalize())
    return sorted(names)


FIRST_POOL = syllable_names(3000, 1, [])
LAST_POOL = syllable_names(10000, 2, ENDINGS)

SEED_SQL = """
INSERT INTO customers (id, email, phone_normalized, first_name, last_name, status, customer_type,
                       tags, custom_attributes, created_at)
SELECT gen_random_uuid(),
       lower(CASE g % 3 WHEN 0 THEN first || '.' || last
                        WHEN 1 THEN left(first, 1) || last ELSE last || '_' || first END
             || g || '@'
             || (ARRAY['gmail.com','yahoo.com','outlook.com','example.com','icloud.com',
                       'corp.io'])[1 + g % 6]),
       '+1' || (2000000000 + g)::text,
       first, last,
       (ARRAY['active','active','active','active','vip','inactive','pending'])[1 + g % 7],
       (ARRAY['registered','guest','wholesale','registered'])[1 + g % 4],
       CASE WHEN g % 5 = 0 THEN ARRAY['promo'] ELSE ARRAY['newsletter'] END,
       jsonb_build_object('plan', CASE WHEN g % 3 = 0 THEN 'gold' ELSE 'silver' END),
       now() - (g % 1000) * interval '1 day'
FROM (
    SELECT g,
           CASE WHEN abs(hashint4(g * 3 + 2)) % 10 = 0
                THEN (CAST(:first AS text[]))[1 + abs(hashint4(g)) % :n_first]
                ELSE (CAST(:first_pool AS text[]))[1 + abs(hashint4(g)) % :n_first_pool] END
               AS first,
           CASE WHEN abs(hashint4(g * 5 + 3)) % 10 = 0
                THEN (CAST(:last AS text[]))[1 + abs(hashint4(g * 7 + 1)) % :n_last]
                ELSE (CAST(:last_pool AS text[]))[1 + abs(hashint4(g * 7 + 1)) % :n_last_pool]
           END AS last
    FROM generate_series(1, :n) g
) s
"""

METRICS_SQL = """
INSERT INTO customer_metrics (customer_id, total_orders, completed_orders, total_spent,
    net_revenue, lifetime_value, last_order_date, engagement_score, churn_probability)
SELECT id, k, k, k * 40.5, k * 40.5, k * 40.5, now() - (h % 400) * interval '1 day',
       (h % 10000) / 100.0, (h % 9973) / 9973.0
FROM (SELECT id, abs(hashtext(id::text)) AS h, abs(hashtext(id::text)) % 6 AS k FROM customers) s
"""

SEGMENTS_SQL = """
INSERT INTO customer_segments (customer_id, segment_name, segment_type)
SELECT customer_id, CASE WHEN engagement_score >= 40 THEN 'engagement:engaged'
                         ELSE 'engagement:dormant' END, 'behavioral'
FROM customer_metrics
"""

QUERIES: list[tuple[str, dict]] = [
    ("fuzzy name 'jon smth'", {"query": "jon smth"}),
    ("word in name 'hernandez'", {"query": "hernandez"}),
    ("email prefix", {"query": "mary.lopez12"}),  # replaced by a seeded address's local part
    ("fuzzy rare name 'braithe moulsen'", {"query": "braithe moulsen"}),
    ("phone digits", {"query": "2000012345"}),
    ("fuzzy + status filter", {"query": "jon smith", "filters": {"status": "vip"}}),
    ("filter vip, sort -lifetime_value", {"filters": {"status": "vip"}, "sort": "-lifetime_value"}),
    (
        "segment + tag, sort -churn",
        {
            "filters": {"segment": "engagement:engaged", "tags": ["promo"]},
            "sort": "-churn_probability",
        },
    ),
    ("no filter, sort -created_at", {}),
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--keep", action="store_true", help="keep the temp cluster")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="crm-bench-search-", dir="/tmp"))
    server = EmbeddedPostgres(root)
    server.start()
    try:
        dsn = server.create_database("bench")
        migrate(dsn)
        engine = make_engine(dsn)
        started = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(
                sa.text(SEED_SQL),
                {
                    "n": args.customers,
                    "first": FIRST,
                    "last": LAST,
                    "n_first": len(FIRST),
                    "n_last": len(LAST),
                    "first_pool": FIRST_POOL,
                    "last_pool": LAST_POOL,
                    "n_first_pool": len(FIRST_POOL),
                    "n_last_pool": len(LAST_POOL),
                },
            )
            conn.execute(sa.text(METRICS_SQL))
            conn.execute(sa.text(SEGMENTS_SQL))
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("VACUUM ANALYZE"))
        print(f"seeded {args.customers:,} customers in {time.perf_counter() - started:.1f}s")

        with engine.connect() as conn:
            local = conn.execute(
                sa.text(
                    "SELECT split_part(email_lowercase, '@', 1) FROM customers"
                    " WHERE email_lowercase LIKE 'mary.lopez%' ORDER BY id LIMIT 1"
                )
            ).scalar()
            rare = conn.execute(
                sa.text(
                    "SELECT lower(full_name) FROM customers WHERE last_name <> ALL(:last)"
                    " ORDER BY id LIMIT 1"
                ),
                {"last": LAST},
            ).scalar()
        queries = [
            (label, {"query": local} if label == "email prefix" and local else kwargs)
            for label, kwargs in QUERIES
        ]
        if rare:  # a real syllable name with its last vowel dropped (a typo)
            typo = rare[:-1] if rare[-1] not in "aeiou" else rare[:-2] + rare[-1]
            queries = [
                (f"fuzzy rare name '{typo}'"[:36], {"query": typo})
                if label.startswith("fuzzy rare")
                else (label, kwargs)
                for label, kwargs in queries
            ]
        print(f"{'query':36} {'rows':>5} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
        for label, kwargs in queries:
            timings, rows = [], 0
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                page = search(engine, page_size=25, **kwargs)
                timings.append((time.perf_counter() - t0) * 1000)
                rows = len(page.rows)
            print(
                f"{label:36} {rows:>5} {statistics.median(timings):>8.1f} "
                f"{percentile(timings, 0.95):>8.1f} {percentile(timings, 0.99):>8.1f}"
            )
        # pages 2..5 of a sorted listing: keyset pages cost the same as the first
        page = search(engine, sort="-lifetime_value", page_size=25)
        timings = []
        for _ in range(4):
            t0 = time.perf_counter()
            page = search(engine, sort="-lifetime_value", page_size=25, cursor=page.next_cursor)
            timings.append((time.perf_counter() - t0) * 1000)
        print(
            f"{'keyset pages 2-5, -lifetime_value':36} {'':>5} {statistics.median(timings):>8.1f}"
        )

        with engine.begin() as conn:
            # the statement search_customers builds for 'jon smth', run directly to EXPLAIN it
            plan = conn.execute(
                sa.text(
                    "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) SELECT c.id FROM customers c"
                    " LEFT JOIN customer_metrics m ON m.customer_id = c.id"
                    " WHERE c.deleted_at IS NULL AND c.merged_into IS NULL"
                    " AND (c.full_name % 'jon smth' OR 'jon smth' <% c.full_name)"
                    " ORDER BY similarity(c.full_name, 'jon smth') DESC, c.id LIMIT 26"
                )
            ).scalars()
            print("\nEXPLAIN ANALYZE (fuzzy name search):")
            print("\n".join(plan))
    finally:
        if not args.keep:
            server.stop()
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"cluster kept in {root}")


if __name__ == "__main__":
    main()
