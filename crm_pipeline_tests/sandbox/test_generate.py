"""Tests of the sandbox store generator: determinism, REST shapes, planted dirt, ground truth,
and mutate_store for incremental-sync tests."""

from __future__ import annotations

import re
import shutil
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import phonenumbers
import pytest

from crm_pipeline.sandbox.generate import (
    FILES,
    METRICS,
    REFERENCE_TIME,
    cents,
    generate_store,
    mutate_store,
    order_net_spent_cents,
    shopify_time,
)

CUSTOMERS = 2000
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def read(store: Path, key: str) -> list[dict[str, Any]]:
    path = store / (FILES[key] if key in FILES else key)
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("store")
    generate_store(out, CUSTOMERS, seed=7)
    return out


@pytest.fixture(scope="module")
def data(store: Path) -> dict[str, list[dict[str, Any]]]:
    keys = [*FILES, "klaviyo/metrics.jsonl"]
    return {k: read(store, k) for k in keys}


def test_same_seed_same_bytes_different_seed_differs(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate_store(a, 300, seed=3)
    generate_store(b, 300, seed=3)
    generate_store(c, 300, seed=4)
    for rel in [*FILES.values(), "klaviyo/metrics.jsonl", "store.json"]:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert (a / FILES["customers"]).read_bytes() != (c / FILES["customers"]).read_bytes()
    assert (a / FILES["events"]).read_bytes() != (c / FILES["events"]).read_bytes()


def test_workers_do_not_change_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import crm_pipeline.sandbox.generate as gen

    monkeypatch.setattr(gen, "CHUNK_SIZE", 150)
    generate_store(tmp_path / "one", 400, seed=5, workers=1)
    generate_store(tmp_path / "two", 400, seed=5, workers=2)
    for rel in FILES.values():
        assert (tmp_path / "one" / rel).read_bytes() == (tmp_path / "two" / rel).read_bytes()


def test_summary_matches_files(store: Path, data: dict[str, list[dict[str, Any]]]) -> None:
    meta = orjson.loads((store / "store.json").read_bytes())
    assert meta["customers"] == len(data["customers"]) == CUSTOMERS
    assert meta["orders"] == len(data["orders"])
    assert meta["profiles"] == len(data["profiles"])
    assert meta["events"] == len(data["events"])
    assert meta["deleted_customers"] == len(data["deleted"]) > 0
    assert meta["seed"] == 7 and meta["generated_at"] == REFERENCE_TIME.isoformat()
    # volumes the brief asks for
    assert 2.5 <= len(data["orders"]) / CUSTOMERS <= 3.6
    assert 8 <= len(data["events"]) / len(data["profiles"]) <= 13


def test_customers_shape(data: dict[str, list[dict[str, Any]]]) -> None:
    required = {
        "id",
        "email",
        "first_name",
        "last_name",
        "phone",
        "state",
        "tags",
        "note",
        "verified_email",
        "tax_exempt",
        "email_marketing_consent",
        "sms_marketing_consent",
        "addresses",
        "created_at",
        "updated_at",
        "orders_count",
        "total_spent",
        "currency",
    }
    ids = [c["id"] for c in data["customers"]]
    assert len(set(ids)) == len(ids)
    assert all(len(str(i)) == 13 for i in ids)
    address_ids: list[int] = []
    for c in data["customers"]:
        assert required <= c.keys()
        assert c["state"] in {"enabled", "disabled", "invited", "declined"}
        datetime.fromisoformat(c["created_at"])
        assert datetime.fromisoformat(c["updated_at"]) >= datetime.fromisoformat(c["created_at"])
        assert re.fullmatch(r"\d+\.\d\d", c["total_spent"])
        assert c["tags"] == "" or all(t.strip() == t and t for t in c["tags"].split(", "))
        assert len(c["addresses"]) <= 3
        if c["addresses"]:
            assert c["default_address"] in c["addresses"]
            assert c["default_address"]["default"] is True
            assert sum(a["default"] for a in c["addresses"]) == 1
        for a in c["addresses"]:
            assert a["customer_id"] == c["id"]
            assert a["country_code"] and a["city"] and a["address1"]
            address_ids.append(a["id"])
        consent = c["email_marketing_consent"]
        if consent is not None:
            assert consent["state"] in {"subscribed", "not_subscribed", "unsubscribed", "pending"}
        if c["sms_marketing_consent"] is not None:
            assert "consent_collected_from" in c["sms_marketing_consent"]
    assert len(set(address_ids)) == len(address_ids)


def test_orders_shape_and_total_spent(data: dict[str, list[dict[str, Any]]]) -> None:
    orders = data["orders"]
    ids = [o["id"] for o in orders]
    assert len(set(ids)) == len(ids)
    li_ids = [li["id"] for o in orders for li in o["line_items"]]
    assert len(set(li_ids)) == len(li_ids)
    statuses = Counter(o["financial_status"] for o in orders)
    assert set(statuses) == {"paid", "refunded", "partially_refunded", "pending", "voided"}
    assert {o["fulfillment_status"] for o in orders} == {"fulfilled", "partial", None}
    products = {li["product_id"] for o in orders for li in o["line_items"]}
    assert len(products) > 100
    spent: dict[int, int] = defaultdict(int)
    count: Counter[int] = Counter()
    for o in orders:
        assert o["line_items"] and o["currency"] == "USD"
        total = sum(cents(li["price"]) * li["quantity"] for li in o["line_items"])
        assert abs(cents(o["total_price"])) == total
        for r in o["refunds"]:
            assert r["transactions"][0]["kind"] == "refund"
            li = {x["id"] for x in o["line_items"]}
            assert all(x["line_item_id"] in li for x in r["refund_line_items"])
        if o["customer"]:
            spent[o["customer"]["id"]] += order_net_spent_cents(o)
            count[o["customer"]["id"]] += 1
    for c in data["customers"]:
        assert cents(c["total_spent"]) == spent[c["id"]], c["id"]
        assert c["orders_count"] == count[c["id"]]
    # skewed repeat buying: many with 0-1 orders, some heavy buyers
    per_customer = [c["orders_count"] for c in data["customers"]]
    assert sum(n <= 1 for n in per_customer) / len(per_customer) > 0.4
    assert max(per_customer) >= 15
    guests = [o for o in orders if o["customer"] is None]
    assert 0 < len(guests) < 0.1 * len(orders)


def test_klaviyo_shapes(data: dict[str, list[dict[str, Any]]]) -> None:
    profiles, events = data["profiles"], data["events"]
    pids = [p["id"] for p in profiles]
    assert len(set(pids)) == len(pids)
    assert all(re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{26}", p) for p in pids)
    metrics = data["klaviyo/metrics.jsonl"]
    assert {m["attributes"]["name"] for m in metrics} == {name for _, name in METRICS}
    metric_ids = {m["id"] for m in metrics}
    assert all(len(m) == 6 for m in metric_ids)
    for p in profiles:
        a = p["attributes"]
        assert p["type"] == "profile"
        assert a["email"] or a["phone_number"]
        assert a["subscriptions"]["email"]["marketing"]["consent"] in {
            "SUBSCRIBED",
            "UNSUBSCRIBED",
            "NEVER_SUBSCRIBED",
        }
        if a["phone_number"]:
            assert phonenumbers.is_valid_number(phonenumbers.parse(a["phone_number"]))
    with_pa = [p for p in profiles if p["attributes"]["predictive_analytics"]]
    assert len(with_pa) > 0.4 * len(profiles)
    eids = [e["id"] for e in events]
    assert len(set(eids)) == len(eids)
    pid_set = set(pids)
    by_metric: Counter[str] = Counter()
    names = {m["id"]: m["attributes"]["name"] for m in metrics}
    for e in events:
        assert e["relationships"]["profile"]["data"]["id"] in pid_set
        mid = e["relationships"]["metric"]["data"]["id"]
        assert mid in metric_ids
        by_metric[names[mid]] += 1
        props = e["attributes"]["event_properties"]
        assert "$event_id" in props
        assert e["attributes"]["datetime"] <= REFERENCE_TIME.isoformat()
    assert by_metric["Clicked Email"] < by_metric["Opened Email"]
    assert by_metric["Added to Cart"] < by_metric["Viewed Product"]
    order_ids = {str(o["id"]) for o in data["orders"]}
    placed = [
        e for e in events if names[e["relationships"]["metric"]["data"]["id"]] == "Placed Order"
    ]
    assert placed and all(
        e["attributes"]["event_properties"]["OrderId"] in order_ids for e in placed
    )


def test_dirt_is_planted(data: dict[str, list[dict[str, Any]]]) -> None:
    customers, orders, profiles = data["customers"], data["orders"], data["profiles"]
    n = len(customers)
    emails = {c["email"] for c in customers if c["email"]}
    # same person, different casing / whitespace across sources
    variants = [
        p
        for p in profiles
        if (e := p["attributes"]["email"])
        and e not in emails
        and e.strip().lower() in {x.lower() for x in emails}
    ]
    assert 0.05 * len(profiles) < len(variants) < 0.25 * len(profiles)
    assert any(e != e.strip() for p in profiles if (e := p["attributes"]["email"]))
    phones = [c["phone"] for c in customers if c["phone"]]
    assert any(p in {"12345", "n/a", "N/A", "0000000000", "call me", "+1 555"} for p in phones)
    assert any(re.fullmatch(r"\(\d{3}\) \d{3}-\d{4}", p) for p in phones)
    assert any(p.startswith("020 ") or p.startswith("07") for p in phones)
    assert 0.6 < sum(p.startswith(("+1", "+44")) for p in phones) / len(phones)
    no_email = [c for c in customers if not c["email"]]
    assert 0.005 * n < len(no_email) < 0.05 * n and all(c["phone"] for c in no_email)
    assert any(not re.fullmatch(r"[\x00-\x7f]+", c["first_name"]) for c in customers)
    assert any(
        re.search(r"[\u3040-\u30ff\u4e00-\u9fff\uac00-\ud7af]", c["last_name"]) for c in customers
    )
    assert any(not EMAIL_RE.match(c["email"]) for c in customers if c["email"])
    deleted = {d["id"] for d in data["deleted"]}
    assert deleted.isdisjoint(c["id"] for c in customers)
    assert any(o["customer"] and o["customer"]["id"] in deleted for o in orders)
    over = [
        o
        for o in orders
        if o["refunds"]
        and sum(cents(t["amount"]) for r in o["refunds"] for t in r["transactions"])
        > cents(o["total_price"])
    ]
    assert over
    assert any(cents(o["total_price"]) < 0 for o in orders)
    ref = REFERENCE_TIME
    assert any(datetime.fromisoformat(o["created_at"]) > ref for o in orders)
    assert any(datetime.fromisoformat(c["updated_at"]) > ref for c in customers)
    truth = data["truth"]
    per_person = Counter(t["person_id"] for t in truth if t["source"] == "klaviyo")
    assert any(k > 1 for k in per_person.values())  # duplicate Klaviyo profiles


def test_truth_covers_every_record(data: dict[str, list[dict[str, Any]]]) -> None:
    truth = data["truth"]
    keys = [(t["source"], t["external_id"]) for t in truth]
    assert len(set(keys)) == len(keys)
    assert {k for s, k in keys if s == "shopify"} == {str(c["id"]) for c in data["customers"]}
    assert {k for s, k in keys if s == "klaviyo"} == {p["id"] for p in data["profiles"]}
    linked = Counter(t["person_id"] for t in truth)
    shop_persons = {t["person_id"] for t in truth if t["source"] == "shopify"}
    with_profile = sum(1 for p in shop_persons if linked[p] > 1)
    assert 0.7 < with_profile / len(shop_persons) < 0.9
    # two persons never share a (valid) email
    owner: dict[str, str] = {}
    person = {(t["source"], t["external_id"]): t["person_id"] for t in truth}
    for c in data["customers"]:
        if c["email"] and EMAIL_RE.match(c["email"]):
            e = c["email"].strip().lower()
            assert owner.setdefault(e, person["shopify", str(c["id"])]) == owner[e]
    for p in data["profiles"]:
        if e := p["attributes"]["email"]:
            e = e.strip().lower()
            assert owner.setdefault(e, person["klaviyo", p["id"]]) == owner[e]


def _resolve(data: dict[str, list[dict[str, Any]]], exact_email_only: bool) -> dict[Any, Any]:
    """A reference resolver: normalised email, then E.164 phone, then external_id."""
    parent: dict[Any, Any] = {}

    def find(x: Any) -> Any:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a: Any, b: Any) -> None:
        parent[find(a)] = find(b)

    def phone_key(raw: str | None, region: str | None) -> str | None:
        if not raw:
            return None
        try:
            num = phonenumbers.parse(raw, region or "US")
        except phonenumbers.NumberParseException:
            return None
        if not phonenumbers.is_valid_number(num):
            return None
        return phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)

    seen: dict[str, Any] = {}

    def link(node: Any, key: str | None) -> None:
        find(node)
        if key is None:
            return
        if key in seen:
            union(node, seen[key])
        else:
            seen[key] = node

    for c in data["customers"]:
        node = ("shopify", str(c["id"]))
        email = c["email"]
        if exact_email_only:
            link(node, f"e:{email}" if email else None)
            continue
        ok = email and EMAIL_RE.match(email.strip())
        link(node, f"e:{email.strip().lower()}" if ok else None)
        region = (c.get("default_address") or {}).get("country_code")
        pk = phone_key(c["phone"], region)
        link(node, f"p:{pk}" if pk else None)
    for p in data["profiles"]:
        a = p["attributes"]
        node = ("klaviyo", p["id"])
        email = a["email"]
        if exact_email_only:
            link(node, f"e:{email}" if email else None)
            continue
        link(node, f"e:{email.strip().lower()}" if email else None)
        pk = phone_key(a["phone_number"], None)
        link(node, f"p:{pk}" if pk else None)
        if a["external_id"]:
            link(node, None)
            if ("shopify", a["external_id"]) in parent:
                union(node, ("shopify", a["external_id"]))
    return {x: find(x) for x in list(parent)}


def _pair_scores(truth: list[dict[str, Any]], clusters: dict[Any, Any]) -> tuple[float, float]:
    person = {(t["source"], t["external_id"]): t["person_id"] for t in truth}

    def pairs(counter: Counter[Any]) -> int:
        return sum(n * (n - 1) // 2 for n in counter.values())

    predicted = pairs(Counter(clusters.values()))
    actual = pairs(Counter(person.values()))
    both = pairs(Counter((clusters[k], person[k]) for k in person))
    return both / predicted, both / actual


def test_identity_resolution_is_achievable_but_not_trivial(
    data: dict[str, list[dict[str, Any]]],
) -> None:
    precision, recall = _pair_scores(data["truth"], _resolve(data, exact_email_only=False))
    assert precision >= 0.99 and recall >= 0.99, (precision, recall)
    precision, recall = _pair_scores(data["truth"], _resolve(data, exact_email_only=True))
    assert recall < 0.9 or precision < 0.99, (precision, recall)


def test_mutate_store_changes_the_requested_fraction(store: Path, tmp_path: Path) -> None:
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    before = {k: read(copy, k) for k in ("customers", "orders", "profiles")}
    now = datetime(2026, 11, 5, 12, 0, tzinfo=UTC)
    summary = mutate_store(copy, 0.05, seed=11, now=now)
    after = {k: read(copy, k) for k in ("customers", "orders", "profiles")}
    assert len(summary.customers) == round(0.05 * CUSTOMERS)
    stamp = shopify_time(now)
    changed_c = {c["id"] for c in after["customers"] if c["updated_at"] == stamp}
    assert changed_c == set(summary.customers)
    old_c = {c["id"]: c for c in before["customers"]}
    for c in after["customers"]:
        if c["id"] not in changed_c:
            assert c == old_c[c["id"]]
        else:
            assert c["note"] != old_c[c["id"]]["note"] or c["tags"] != old_c[c["id"]]["tags"]
    old_o = {o["id"]: o for o in before["orders"]}
    changed_o = {o["id"] for o in after["orders"] if o != old_o[o["id"]]}
    assert changed_o == set(summary.orders) and changed_o
    assert all(
        o["updated_at"] == stamp and o["customer"]["id"] in changed_c
        for o in after["orders"]
        if o["id"] in changed_o
    )
    old_p = {p["id"]: p for p in before["profiles"]}
    changed_p = {p["id"] for p in after["profiles"] if p != old_p[p["id"]]}
    assert changed_p == set(summary.profiles) and changed_p
    assert all(
        p["attributes"]["updated"].startswith("2026-11-05T12:00:00")
        for p in after["profiles"]
        if p["id"] in changed_p
    )
    assert len(after["orders"]) == len(before["orders"])
    # total_spent stays consistent with the orders
    spent: dict[int, int] = defaultdict(int)
    for o in after["orders"]:
        if o["customer"]:
            spent[o["customer"]["id"]] += order_net_spent_cents(o)
    assert all(cents(c["total_spent"]) == spent[c["id"]] for c in after["customers"])
    # the same seed on the same store gives the same changes
    again = tmp_path / "again"
    shutil.copytree(store, again)
    assert mutate_store(again, 0.05, seed=11, now=now).customers == summary.customers
