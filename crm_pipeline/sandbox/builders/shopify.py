"""Shopify side of one chunk: account attributes, the purchase process, orders with line items
and refunds, and the customers.jsonl / orders.jsonl / deleted_customers.jsonl records."""

from __future__ import annotations

from typing import Any

import numpy as np

from crm_pipeline.sandbox import pools
from crm_pipeline.sandbox.builders.base import (
    ADDRESS_ID_BASE,
    COMPANIES,
    CUSTOMER_ID_BASE,
    CUSTOMER_STATES,
    DAY,
    EMAIL_CONSENT,
    HISTORY,
    INVALID_EMAILS,
    INVALID_PHONES,
    LINE_ITEM_ID_BASE,
    MAX_ORDERS_PER_PERSON,
    ORDER_ID_BASE,
    REFUND_ID_BASE,
    YEAR,
    _email_variant,
    dumps,
    money,
    pools_source_names,
    shopify_times,
)
from crm_pipeline.sandbox.builders.odds import (
    ADDRESS_COMPANY,
    ADDRESS_COUNT_ODDS,
    ADDRESS_LINE2_ODDS,
    ADDRESS_OTHER_NAME,
    ADDRESS_SAME_COUNTRY,
    ADDRESS_WITH_PHONE,
    BUYER_SHARE,
    CONFIRMED_OPT_IN,
    CUSTOMER_FUTURE_UPDATE,
    CUSTOMER_NOTE,
    CUSTOMER_STATE_ODDS,
    EMAIL_CONSENT_ODDS,
    FINANCIAL_STATUS_CUTS,
    FULFILLMENT_CUTS,
    GUEST_TWO_ORDERS,
    INVALID_EMAIL,
    LAMBDA_SHAPE,
    LIFETIME_MEAN_YEARS,
    LINE_ITEM_COUNT_ODDS,
    NEGATIVE_TOTAL,
    NO_EMAIL,
    ORDER_EMAIL_ODDS,
    ORDER_IN_FUTURE,
    OVER_REFUND,
    PHONE_KIND_ODDS,
    QUANTITY_ODDS,
    RECENT_ORDER_PENDING,
    REFUNDED_CANCELLED,
    REFUNDED_UNFULFILLED,
    SMS_CONSENT_FROM_SHOPIFY,
    SMS_CONSENT_ODDS,
    TAG_COUNT_ODDS,
    TAX_EXEMPT,
    VERIFIED_EMAIL,
)
from crm_pipeline.sandbox.builders.persons import PersonBuilder


class ShopifyBuilder(PersonBuilder):
    """Shopify customers and orders of a chunk (REST shape, docs/reference.md section 5)."""

    def shopify_attributes(self) -> None:
        """Account-level attributes and the latent purchase process of Shopify persons."""
        p, rng = self.plan, self.rng
        s = p.shopify
        self.is_deleted = np.zeros(s, dtype=bool)
        self.is_deleted[p.live :] = True
        self.has_email = rng.random(s) >= NO_EMAIL
        self.invalid_email = self.has_email & (rng.random(s) < INVALID_EMAIL) & ~self.is_deleted
        # phone kinds: 0 none, 1 e164, 2 national, 3 international, 4 invalid
        self.phone_kind = rng.choice(5, size=s, p=PHONE_KIND_ODDS)
        self.phone_kind[~self.has_email] = 1
        us_gb = np.isin(self.country[:s], [0, 1, 2])
        self.phone_kind[(self.phone_kind == 2) & ~us_gb] = 1
        self.phone_kind[(self.phone_kind == 3) & ~us_gb] = 1
        self.n_addr = rng.choice(4, size=s, p=ADDRESS_COUNT_ODDS)
        # national numbers only parse with a region, which the default address provides
        self.phone_kind[(self.phone_kind == 2) & (self.n_addr == 0)] = 1
        self.customer_id = (CUSTOMER_ID_BASE + self.pidx[:s] * 37 + rng.integers(0, 37, s)).astype(
            np.int64
        )
        age_years = (self.ref - self.created[:s]) / YEAR
        buyer = rng.random(s) < BUYER_SHARE
        lam = rng.gamma(LAMBDA_SHAPE, self.lam_scale, s)
        lifetime = rng.exponential(LIFETIME_MEAN_YEARS, s)
        span = np.minimum(lifetime, age_years)
        repeats = rng.poisson(lam * span)
        self.n_orders = np.where(buyer, np.minimum(1 + repeats, MAX_ORDERS_PER_PERSON), 0)
        self.lam, self.lifetime, self.span = lam, lifetime, span

    def orders(self) -> None:
        """Order rows (customers' and guests'), line items and refunds, as flat arrays."""
        p, rng, cat = self.plan, self.rng, self.catalog
        s = p.shopify
        g_counts = np.where(rng.random(p.guests) < GUEST_TWO_ORDERS, 2, 1)
        counts = np.concatenate([self.n_orders, g_counts])
        owner = np.repeat(np.arange(s + p.guests), counts)
        n = len(owner)
        self.order_owner = owner
        cust_owner = owner < s
        first_of = np.zeros(n, dtype=bool)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        first_of[starts[counts > 0]] = True
        created_c = self.created[:s]
        span_s = (self.span * YEAR).astype(np.int64)
        t = np.empty(n, dtype=np.int64)
        o_c = np.where(cust_owner, owner, 0)
        base_t = created_c[o_c]
        first_t = base_t + rng.exponential(2 * DAY, n).astype(np.int64)
        rep_t = base_t + (rng.random(n) * span_s[o_c]).astype(np.int64)
        t[:] = np.where(first_of, first_t, rep_t)
        guest_t = self.ref - (rng.random(n) * HISTORY).astype(np.int64)
        t = np.where(cust_owner, t, guest_t)
        t = np.minimum(t, self.ref - 60)
        future = rng.random(n) < ORDER_IN_FUTURE
        t = np.where(future, self.ref + (rng.integers(1, 300, n) * DAY), t)
        order = np.lexsort((t, owner))
        t = t[order]
        future = future[order]
        self.order_time = t
        self.order_future = future
        j = np.arange(n) - np.repeat(starts, counts)
        guest_pidx = p.base + p.shopify + p.klaviyo_only + np.arange(p.guests)
        owner_pidx = np.concatenate([self.pidx[:s], guest_pidx])[owner]
        self.order_seq = owner_pidx * 1000 + j
        self.order_id = ORDER_ID_BASE + self.order_seq
        # line items
        n_items = rng.choice([1, 2, 3, 4], size=n, p=LINE_ITEM_COUNT_ODDS)
        self.item_start = np.concatenate([[0], np.cumsum(n_items)[:-1]])
        self.n_items = n_items
        ni = int(n_items.sum())
        pop = 1.0 / (np.arange(len(cat)) + 5.0)
        self.item_product = rng.choice(len(cat), size=ni, p=pop / pop.sum())
        self.item_qty = rng.choice([1, 2, 3], size=ni, p=QUANTITY_ODDS)
        prices = np.array([pr.price_cents for pr in cat], dtype=np.int64)
        line_total = prices[self.item_product] * self.item_qty
        total = np.add.reduceat(line_total, self.item_start) if n else np.zeros(0, np.int64)
        # statuses: 0 paid, 1 refunded, 2 partially_refunded, 3 pending, 4 voided
        u = rng.random(n)
        fs = np.select([u < cut for cut in FINANCIAL_STATUS_CUTS], [1, 2, 3, 4], 0)
        recent = t > self.ref - 3 * DAY
        fs = np.where(recent & (rng.random(n) < RECENT_ORDER_PENDING) & (fs == 0), 3, fs)
        fs = np.where(future & (fs != 0), 0, fs)
        cancelled = (fs == 4) | ((fs == 1) & (rng.random(n) < REFUNDED_CANCELLED))
        refund_t = np.minimum(t + rng.integers(2 * DAY, 30 * DAY, n), self.ref - 30)
        refund_t = np.maximum(refund_t, t + 60)
        first_price = prices[self.item_product[self.item_start]] if n else total
        refund_amt = np.where(fs == 1, total, np.where(fs == 2, first_price, 0))
        fs = np.where((fs == 2) & (refund_amt >= total), 1, fs)
        over = (fs == 1) & (rng.random(n) < OVER_REFUND)
        refund_amt = np.where(over, total * 3 // 2 + 500, refund_amt)
        negative = rng.random(n) < NEGATIVE_TOTAL
        total = np.where(negative, -total, total)
        self.invalid_orders = int(negative.sum())
        # fulfillment: 0 none, 1 fulfilled, 2 partial
        fu = rng.random(n)
        ff = np.where(fu < FULFILLMENT_CUTS[0], 1, np.where(fu < FULFILLMENT_CUTS[1], 2, 0))
        ff = np.where((fs == 3) | (fs == 4) | recent | future, 0, ff)
        ff = np.where((fs == 1) & (rng.random(n) < REFUNDED_UNFULFILLED), 0, ff)
        updated = t + rng.integers(0, 5 * DAY, n)
        has_refund = (fs == 1) | (fs == 2)
        updated = np.where(has_refund, np.maximum(updated, refund_t), updated)
        updated = np.where(future, t + 3600, np.minimum(updated, self.ref - 1))
        updated = np.maximum(updated, t)
        self.order_total = total
        self.order_fs = fs
        self.order_ff = ff
        self.order_cancelled = cancelled
        self.order_refund_t = refund_t
        self.order_refund_amt = refund_amt
        self.order_has_refund = has_refund
        self.order_updated = updated
        self.order_email_kind = rng.choice(4, size=n, p=ORDER_EMAIL_ODDS)
        self.order_source = rng.integers(0, len(pools_source_names()), n)
        net = np.where(
            cancelled | (fs >= 3),
            0,
            np.maximum(
                0, np.abs(total) * np.where(negative, -1, 1) - np.where(has_refund, refund_amt, 0)
            ),
        )
        self.order_net = net
        cust_mask = cust_owner
        self.spent = np.bincount(owner[cust_mask], weights=net[cust_mask], minlength=s).astype(
            np.int64
        )
        self.last_order_updated = np.full(s, 0, dtype=np.int64)
        valid_t = cust_mask & ~future
        np.maximum.at(self.last_order_updated, owner[valid_t], updated[valid_t])
        self.first_order_t = np.full(s, -1, dtype=np.int64)
        self.last_order_t = np.full(s, -1, dtype=np.int64)
        self.last_order_id = np.full(s, -1, dtype=np.int64)
        if n:
            is_last = np.ones(n, dtype=bool)
            is_last[:-1] = owner[1:] != owner[:-1]
            is_first = np.ones(n, dtype=bool)
            is_first[1:] = owner[1:] != owner[:-1]
            lm = is_last & cust_mask
            fm = is_first & cust_mask
            self.last_order_t[owner[lm]] = t[lm]
            self.last_order_id[owner[lm]] = self.order_id[lm]
            self.first_order_t[owner[fm]] = t[fm]
        self.summary.orders = n
        self.summary.guest_orders = int((~cust_mask).sum())
        self.summary.line_items = ni
        self.summary.refunds = int(has_refund.sum())
        self.summary.invalid_orders = self.invalid_orders

    def _address_rows(self) -> None:
        rng, s = self.rng, self.plan.shopify
        na = int(self.n_addr.sum())
        self.addr_start = np.concatenate([[0], np.cumsum(self.n_addr)[:-1]])
        owner = np.repeat(np.arange(s), self.n_addr)
        same_country = rng.random(na) < ADDRESS_SAME_COUNTRY
        country = np.where(same_country, self.country[:s][owner], self.country[:s][owner])
        clen = np.array([len(c.cities) for c in pools.COUNTRIES])
        self.addr_country = country.tolist()
        self.addr_city = (rng.random(na) * clen[country]).astype(np.int64).tolist()
        self.addr_street = rng.integers(0, pools.STREETS_PER_LOCALE, na).tolist()
        self.addr_zip = rng.integers(0, pools.STREETS_PER_LOCALE, na).tolist()
        self.addr_line2 = rng.choice(6, size=na, p=ADDRESS_LINE2_ODDS).tolist()
        self.addr_line2_n = rng.integers(1, 40, na).tolist()
        self.addr_company = np.where(
            rng.random(na) < ADDRESS_COMPANY, rng.integers(0, 6, na), -1
        ).tolist()
        self.addr_other_name = (rng.random(na) < ADDRESS_OTHER_NAME).tolist()
        self.addr_other_first = rng.integers(0, 10_000, na).tolist()
        self.addr_with_phone = (rng.random(na) < ADDRESS_WITH_PHONE).tolist()

    def customers_json(self) -> tuple[list[bytes], list[bytes]]:
        """Live customer records and deleted-customer stubs."""
        p, rng, s = self.plan, self.rng, self.plan.shopify
        self._address_rows()
        tags_n = rng.choice(4, size=s, p=TAG_COUNT_ODDS).tolist()
        tag_pick = rng.integers(0, len(pools.CUSTOMER_TAGS), (s, 3)).tolist()
        note_pick = np.where(rng.random(s) < CUSTOMER_NOTE, rng.integers(0, 8, s), -1).tolist()
        state = rng.choice(4, size=s, p=CUSTOMER_STATE_ODDS).tolist()
        verified = (rng.random(s) < VERIFIED_EMAIL).tolist()
        tax_exempt = (rng.random(s) < TAX_EXEMPT).tolist()
        ec_state = rng.choice(4, size=s, p=EMAIL_CONSENT_ODDS)
        self.ec_state = ec_state
        ec_level = (rng.random(s) < CONFIRMED_OPT_IN).tolist()
        created = self.created[:s]
        consent_t = created + (rng.random(s) * (self.ref - created)).astype(np.int64)
        sms_state = rng.choice(4, size=s, p=SMS_CONSENT_ODDS).tolist()
        sms_from = (rng.random(s) < SMS_CONSENT_FROM_SHOPIFY).tolist()
        invalid_tpl = rng.integers(0, len(INVALID_EMAILS), s).tolist()
        invalid_phone = rng.integers(0, len(INVALID_PHONES), s).tolist()
        upd = np.maximum(created, self.last_order_updated)
        upd = np.where(ec_state != 1, np.maximum(upd, consent_t), upd)
        upd = np.minimum(np.maximum(upd, created + rng.integers(0, 30 * DAY, s)), self.ref - 1)
        future = rng.random(s) < CUSTOMER_FUTURE_UPDATE
        upd = np.where(future, self.ref + rng.integers(1, 365, s) * DAY, upd)
        created_s = shopify_times(created)
        updated_s = shopify_times(upd)
        consent_s = shopify_times(consent_t)
        deleted_at = np.minimum(upd + rng.integers(DAY, 200 * DAY, s), self.ref - 1)
        deleted_s = shopify_times(deleted_at)
        cities = [c.cities for c in pools.COUNTRIES]
        countries = pools.COUNTRIES
        self._bind_lists()
        ids = self.customer_id.tolist()
        n_orders = self.n_orders.tolist()
        spent = self.spent.tolist()
        last_oid = self.last_order_id.tolist()
        has_email = self.has_email.tolist()
        invalid_email = self.invalid_email.tolist()
        phone_kind = self.phone_kind.tolist()
        n_addr = self.n_addr.tolist()
        addr_start = self.addr_start.tolist()
        ec_state_l = ec_state.tolist()
        customers: list[bytes] = []
        deleted: list[bytes] = []
        self.shopify_email: list[str | None] = [None] * s
        self.shopify_phone: list[str | None] = [None] * s
        for i in range(s):
            cid = ids[i]
            first, last = self.name(i)
            email = self.email(i) if has_email[i] else None
            self.shopify_email[i] = email
            if invalid_email[i]:
                local, _, domain = (email or "x@y").partition("@")
                email = INVALID_EMAILS[invalid_tpl[i]].format(local=local, domain=domain)
            pk = phone_kind[i]
            if pk == 0:
                phone = None
            elif pk == 1:
                phone = self.phone_e164(i)
            elif pk == 2:
                phone = self.phone_national(i)
            elif pk == 3:
                phone = self.phone_international(i)
            else:
                phone = INVALID_PHONES[invalid_phone[i]]
            self.shopify_phone[i] = phone
            if i >= p.live:
                deleted.append(dumps({"id": cid, "deleted_at": deleted_s[i]}))
                continue
            addresses = []
            a0 = addr_start[i]
            for k in range(n_addr[i]):
                a = a0 + k
                ci = self.addr_country[a]
                country = countries[ci]
                city = cities[ci][self.addr_city[a]]
                lp = self.locales[ci]
                af, al = first, last
                if self.addr_other_name[a]:
                    af = lp.first[self.addr_other_first[a] % len(lp.first)]
                line2 = self.addr_line2[a]
                addresses.append(
                    {
                        "id": ADDRESS_ID_BASE + (self.pidx_l[i] * 4 + k) * 3,
                        "customer_id": cid,
                        "first_name": af,
                        "last_name": al,
                        "company": COMPANIES[self.addr_company[a]]
                        if self.addr_company[a] >= 0
                        else None,
                        "address1": lp.streets[self.addr_street[a]],
                        "address2": None
                        if line2 == 0
                        else f"{('Apt', 'Suite', 'Unit', 'Floor', 'Room')[line2 - 1]} "
                        f"{self.addr_line2_n[a]}",
                        "city": city.name,
                        "province": city.province,
                        "country": country.name,
                        "zip": lp.postcodes[self.addr_zip[a]],
                        "phone": phone if self.addr_with_phone[a] and pk in (1, 2, 3) else None,
                        "name": f"{af} {al}",
                        "province_code": city.province_code,
                        "country_code": country.code,
                        "country_name": country.name,
                        "default": k == 0,
                    }
                )
            tags = sorted({pools.CUSTOMER_TAGS[x] for x in tag_pick[i][: tags_n[i]]})
            es = ec_state_l[i]
            rec: dict[str, Any] = {
                "id": cid,
                "email": email,
                "created_at": created_s[i],
                "updated_at": updated_s[i],
                "first_name": first,
                "last_name": last,
                "orders_count": n_orders[i],
                "state": CUSTOMER_STATES[state[i]],
                "total_spent": money(spent[i]),
                "last_order_id": last_oid[i] if last_oid[i] >= 0 else None,
                "note": pools.CUSTOMER_NOTES[note_pick[i]] if note_pick[i] >= 0 else None,
                "verified_email": verified[i] and email is not None,
                "multipass_identifier": None,
                "tax_exempt": tax_exempt[i],
                "tags": ", ".join(tags),
                "currency": "USD",
                "phone": phone,
                "addresses": addresses,
                "tax_exemptions": [],
                "email_marketing_consent": None
                if email is None
                else {
                    "state": EMAIL_CONSENT[es],
                    "opt_in_level": "confirmed_opt_in"
                    if ec_level[i] and es == 0
                    else "single_opt_in",
                    "consent_updated_at": None if es == 1 else consent_s[i],
                },
                "sms_marketing_consent": None
                if phone is None
                else {
                    "state": EMAIL_CONSENT[sms_state[i]],
                    "opt_in_level": "single_opt_in",
                    "consent_updated_at": None if sms_state[i] == 1 else consent_s[i],
                    "consent_collected_from": "SHOPIFY" if sms_from[i] else "OTHER",
                },
                "admin_graphql_api_id": f"gid://shopify/Customer/{cid}",
            }
            if addresses:
                rec["default_address"] = addresses[0]
            customers.append(dumps(rec))
        self.summary.customers = p.live
        self.summary.deleted_customers = p.deleted
        self.summary.invalid_customers = int(self.invalid_email[: p.live].sum())
        return customers, deleted

    def orders_json(self) -> list[bytes]:
        """Order records in Shopify REST shape."""
        p, s, cat = self.plan, self.plan.shopify, self.catalog
        n = len(self.order_owner)
        created_s = shopify_times(self.order_time)
        updated_s = shopify_times(self.order_updated)
        refund_s = shopify_times(self.order_refund_t)
        owner = self.order_owner.tolist()
        ids = self.order_id.tolist()
        seqs = self.order_seq.tolist()
        total = self.order_total.tolist()
        fs = self.order_fs.tolist()
        ff = self.order_ff.tolist()
        cancelled = self.order_cancelled.tolist()
        has_refund = self.order_has_refund.tolist()
        refund_amt = self.order_refund_amt.tolist()
        email_kind = self.order_email_kind.tolist()
        source = self.order_source.tolist()
        item_start = self.item_start.tolist()
        n_items = self.n_items.tolist()
        item_product = self.item_product.tolist()
        item_qty, cust_ids = self.item_qty.tolist(), self.customer_id.tolist()
        price_s = [money(pr.price_cents) for pr in cat]
        guest_base = p.base + p.shopify + p.klaviyo_only
        fs_names = ("paid", "refunded", "partially_refunded", "pending", "voided")
        ff_names = (None, "fulfilled", "partial")
        sources, journeys = pools_source_names(), self.order_journey
        out: list[bytes] = []
        for o in range(n):
            w = owner[o]
            oid = ids[o]
            if w < s:
                email = self.shopify_email[w]
                ek = email_kind[o]
                if email is not None and ek:
                    email = None if ek == 3 else _email_variant(email, ek)
                if self.invalid_email[w]:
                    email = None
                customer = {"id": cust_ids[w]}
            else:
                gp = guest_base + (w - s)
                customer = None
                domain = pools.EMAIL_DOMAINS[gp % len(pools.EMAIL_DOMAINS)]
                email = None if email_kind[o] == 3 else f"guest{gp * 7 + 3}@{domain}"
            lis = []
            li0 = item_start[o]
            li_base = LINE_ITEM_ID_BASE + seqs[o] * 8
            for k in range(n_items[o]):
                pr = cat[item_product[li0 + k]]
                lis.append(
                    {
                        "id": li_base + k,
                        "product_id": pr.id,
                        "title": pr.title,
                        "vendor": pr.vendor,
                        "product_type": pr.product_type,
                        "quantity": item_qty[li0 + k],
                        "price": price_s[item_product[li0 + k]],
                    }
                )
            refunds = []
            if has_refund[o]:
                if fs[o] == 1:
                    rli = [{"line_item_id": li["id"], "quantity": li["quantity"]} for li in lis]
                else:
                    rli = [{"line_item_id": lis[0]["id"], "quantity": 1}]
                refunds.append(
                    {
                        "id": REFUND_ID_BASE + seqs[o] * 4,
                        "order_id": oid,
                        "created_at": refund_s[o],
                        "transactions": [
                            {"amount": money(refund_amt[o]), "kind": "refund", "status": "success"}
                        ],
                        "refund_line_items": rli,
                    }
                )
            tp = money(total[o])
            out.append(
                dumps(
                    {
                        "id": oid,
                        "email": email,
                        "created_at": created_s[o],
                        "updated_at": updated_s[o],
                        "cancelled_at": updated_s[o] if cancelled[o] else None,
                        "cancel_reason": "customer" if cancelled[o] else None,
                        "financial_status": fs_names[fs[o]],
                        "fulfillment_status": ff_names[ff[o]],
                        "total_price": tp,
                        "subtotal_price": tp,
                        "total_tax": "0.00",
                        "currency": "USD",
                        "source_name": sources[source[o]],
                        "customer_journey_summary": journeys[o],
                        "customer": customer,
                        "line_items": lis,
                        "refunds": refunds,
                    }
                )
            )
        return out
