"""Klaviyo side of one chunk: profiles (primary, duplicate, Klaviyo-only), their events, and the
persons truth file; reads the Shopify builder's orders for Placed Order events and predictions."""

from __future__ import annotations

from typing import Any

import numpy as np

from crm_pipeline.sandbox import pools
from crm_pipeline.sandbox.builders.base import (
    BASE62,
    CROCKFORD,
    DAY,
    HISTORY,
    M_ACTIVE,
    M_CART,
    M_CLICK,
    M_OPEN,
    M_ORDER,
    M_VIEW,
    METRICS,
    YEAR,
    _email_variant,
    _encode,
    _scramble,
    _subset_offsets,
    dumps,
    klaviyo_times,
    person_id,
)
from crm_pipeline.sandbox.builders.journeys import JourneyBuilder
from crm_pipeline.sandbox.builders.odds import (
    ACTIVE_ON_SITE,
    CART_PER_VIEW,
    CLICK_PER_OPEN,
    CONSENT_FLIP,
    DUPLICATE_BY_EMAIL,
    DUPLICATE_PROFILE,
    ENGAGEMENT_SHAPE,
    HAS_PROFILE,
    JOB_TITLE,
    KLAVIYO_ONLY_CONSENT_ODDS,
    KLAVIYO_ONLY_PHONE_ONLY,
    KLAVIYO_ONLY_WITH_PHONE,
    LOCATION_FROM_ADDRESS,
    LOCATION_FROM_COUNTRY,
    OPENS_PER_YEAR,
    ORGANIZATION,
    PRODUCT_VIEWS,
    PROFILE_EMAIL_VARIANT_CUTS,
    PROFILE_EXTERNAL_ID,
    PROFILE_EXTRA_PHONE,
    PROFILE_HAS_NAME,
    PROFILE_LINK_CUTS,
    PROFILE_SHOPIFY_PHONE,
)


class KlaviyoBuilder(JourneyBuilder):
    """Klaviyo profiles and events of a chunk (JSON:API shape, docs/reference.md section 5)."""

    def profiles(self) -> None:
        """Profile rows: which person, which identifiers, primary or duplicate."""
        p, rng = self.plan, self.rng
        s = p.shopify
        shop_valid_phone = np.isin(self.phone_kind, [1, 2, 3])
        has_profile = (rng.random(s) < HAS_PROFILE) & ~self.invalid_email
        u = rng.random(s)
        # link kinds: 0 email, 1 phone only, 2 other email + external_id
        kind = np.where(
            (u < PROFILE_LINK_CUTS[0]) & shop_valid_phone,
            1,
            np.where(u < PROFILE_LINK_CUTS[1], 2, 0),
        )
        kind = np.where(~self.has_email, np.where(shop_valid_phone, 1, 2), kind)
        ev = rng.random(s)
        email_variant = np.where(
            ev < PROFILE_EMAIL_VARIANT_CUTS[0],
            0,
            np.where(ev < PROFILE_EMAIL_VARIANT_CUTS[1], 1, 2),
        )
        ext = (kind == 2) | (rng.random(s) < PROFILE_EXTERNAL_ID)
        with_phone = (
            (kind == 1)
            | (shop_valid_phone & (rng.random(s) < PROFILE_SHOPIFY_PHONE))
            | (rng.random(s) < PROFILE_EXTRA_PHONE)
        )
        dup = has_profile & (rng.random(s) < DUPLICATE_PROFILE)
        dup_kind = np.where(
            (kind == 0) & ((rng.random(s) < DUPLICATE_BY_EMAIL) | ~shop_valid_phone), 0, 1
        )
        dup = dup & ((dup_kind == 0) | shop_valid_phone)
        # rows: (person, slot, kind) where kind 0..2 as above, 3 dup email, 4 dup phone,
        # 5 klaviyo-only email, 6 klaviyo-only phone
        sp = np.nonzero(has_profile)[0]
        dp = np.nonzero(dup)[0]
        k_n = p.klaviyo_only
        kp = np.arange(s, s + k_n)
        k_phone_only = rng.random(k_n) < KLAVIYO_ONLY_PHONE_ONLY
        person = np.concatenate([sp, dp, kp])
        slot = np.concatenate([np.zeros(len(sp)), np.ones(len(dp)), np.zeros(k_n)]).astype(np.int64)
        rkind = np.concatenate([kind[sp], 3 + dup_kind[dp], np.where(k_phone_only, 6, 5)])
        order = np.lexsort((slot, person))
        self.prof_person = person[order]
        self.prof_slot = slot[order]
        self.prof_kind = rkind[order]
        self.email_variant = email_variant
        self.ext = ext
        self.with_phone = with_phone
        self.k_with_phone = rng.random(k_n) < KLAVIYO_ONLY_WITH_PHONE
        n = len(person)
        pp = self.prof_person
        pc = self.created[pp]
        jitter = rng.normal(0, 20 * DAY, n).astype(np.int64)
        created = np.clip(pc + jitter, self.ref - HISTORY - 60 * DAY, self.ref - 3600)
        created = np.where(self.prof_slot == 1, created + rng.integers(DAY, 300 * DAY, n), created)
        created = np.minimum(created, self.ref - 3600)
        self.prof_created = created
        seq = (self.pidx[pp] * 2 + self.prof_slot).astype(np.uint64)
        hi = _scramble(seq, 40, 0x9E3779B1, 0x5BD1E995)
        lo = rng.integers(0, 1 << 40, n, dtype=np.int64).astype(np.uint64)
        ms = (created * 1000 + rng.integers(0, 1000, n)).astype(np.uint64)
        self.prof_id = _encode([(ms, 10), (hi, 8), (lo, 8)], CROCKFORD)
        self.prof_seq = seq
        self.summary.profiles = n
        self.summary.klaviyo_only_profiles = k_n
        self.summary.duplicate_profiles = len(dp)

    def events(self) -> list[bytes]:
        """Klaviyo events per profile, including Placed Order for linked Shopify orders."""
        rng, s = self.rng, self.plan.shopify
        n = len(self.prof_person)
        created = self.prof_created
        life = np.maximum(self.ref - created, 3600)
        engage = rng.gamma(ENGAGEMENT_SHAPE, 1.0 / ENGAGEMENT_SHAPE, n)
        n_open = rng.poisson(OPENS_PER_YEAR * engage * np.minimum(life / YEAR, 3) / 1.5)
        n_click = rng.binomial(n_open, CLICK_PER_OPEN)
        n_view = rng.poisson(PRODUCT_VIEWS * engage)
        n_cart = rng.binomial(n_view, CART_PER_VIEW)
        n_active = rng.poisson(ACTIVE_ON_SITE * engage)
        rows = np.arange(n)
        # opens
        o_row = np.repeat(rows, n_open)
        o_t = created[o_row] + (rng.random(len(o_row)) * life[o_row]).astype(np.int64)
        # clicks: a subset of each profile's opens, a little later
        open_starts = np.concatenate([[0], np.cumsum(n_open)[:-1]])
        ci = np.repeat(open_starts, n_click) + _subset_offsets(rng, n_open, n_click)
        c_row = o_row[ci]
        c_t = np.minimum(o_t[ci] + rng.exponential(1800, len(ci)).astype(np.int64), self.ref - 1)
        v_row = np.repeat(rows, n_view)
        v_t = created[v_row] + (rng.random(len(v_row)) * life[v_row]).astype(np.int64)
        pop = 1.0 / (np.arange(len(self.catalog)) + 5.0)
        v_prod = rng.choice(len(self.catalog), size=len(v_row), p=pop / pop.sum())
        view_starts = np.concatenate([[0], np.cumsum(n_view)[:-1]])
        ai = np.repeat(view_starts, n_cart) + _subset_offsets(rng, n_view, n_cart)
        a_row = v_row[ai]
        a_t = np.minimum(v_t[ai] + rng.exponential(600, len(ai)).astype(np.int64), self.ref - 1)
        a_prod = v_prod[ai]
        s_row = np.repeat(rows, n_active)
        s_t = created[s_row] + (rng.random(len(s_row)) * life[s_row]).astype(np.int64)
        # placed orders: every non-future order of the person, on their primary profile
        prim = (self.prof_slot == 0) & (self.prof_person < s)
        row_of_person = np.full(s, -1, dtype=np.int64)
        row_of_person[self.prof_person[prim]] = rows[prim]
        cust_orders = (self.order_owner < s) & ~self.order_future
        oidx = np.nonzero(cust_orders)[0]
        oidx = oidx[row_of_person[self.order_owner[oidx]] >= 0]
        p_row = row_of_person[self.order_owner[oidx]]
        p_t = self.order_time[oidx]
        ev_row = np.concatenate([o_row, c_row, v_row, a_row, s_row, p_row])
        ev_t = np.concatenate([o_t, c_t, v_t, a_t, s_t, p_t])
        ev_m = np.concatenate(
            [
                np.full(len(o_row), M_OPEN),
                np.full(len(c_row), M_CLICK),
                np.full(len(v_row), M_VIEW),
                np.full(len(a_row), M_CART),
                np.full(len(s_row), M_ACTIVE),
                np.full(len(p_row), M_ORDER),
            ]
        )
        ev_x = np.concatenate(
            [
                np.zeros(len(o_row) + len(c_row), np.int64),
                v_prod,
                a_prod,
                np.zeros(len(s_row), np.int64),
                oidx,
            ]
        )
        ev_t = np.minimum(ev_t, self.ref - 1)
        order = np.lexsort((ev_m, ev_t, ev_row))
        ev_row, ev_t, ev_m, ev_x = ev_row[order], ev_t[order], ev_m[order], ev_x[order]
        ne = len(ev_row)
        counts = np.bincount(ev_row, minlength=n)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        e_in_row = np.arange(ne) - np.repeat(starts, counts)
        key = (self.prof_seq[ev_row] << np.uint64(20)) | e_in_row.astype(np.uint64)
        ev_ids = _encode([(_scramble(key, 64, 0x2545F4914F6CDD1D, 0x14057B7EF767814F), 11)], BASE62)
        self.last_event = np.full(n, -1, dtype=np.int64)
        if ne:
            np.maximum.at(self.last_event, ev_row, ev_t)
        ev_dt = klaviyo_times(ev_t)
        week = ((ev_t - (self.ref - HISTORY)) // (7 * DAY)).tolist()
        utm = rng.integers(0, len(pools.UTM_SOURCES), ne).tolist()
        utm_m = rng.integers(0, len(pools.UTM_MEDIUMS), ne).tolist()
        metric_ids = [m for m, _ in METRICS]
        themes = pools.CAMPAIGN_THEMES
        prices = [pr.price_cents / 100 for pr in self.catalog]
        prof_id = self.prof_id
        order_ids = self.order_id.tolist()
        credits = self.order_klaviyo_credit
        totals = self.order_total.tolist()
        li_start = self.item_start.tolist()
        li_n = self.n_items.tolist()
        li_prod = self.item_product.tolist()
        cat = self.catalog
        out: list[bytes] = []
        rows_l, ts_l, m_l, x_l = ev_row.tolist(), ev_t.tolist(), ev_m.tolist(), ev_x.tolist()
        for e in range(ne):
            m = m_l[e]
            x = x_l[e]
            if m <= M_CLICK:
                wk = week[e]
                theme, subject = themes[wk % len(themes)]
                props: dict[str, Any] = {
                    "Subject": subject,
                    "Campaign Name": f"{theme} #{wk + 1}",
                    "$message": f"C{wk:04d}",
                    "utm_source": "klaviyo",
                    "utm_medium": "email",
                    "utm_campaign": f"{theme.lower().replace(' ', '-')}-{wk + 1}",
                }
                if m == M_CLICK:
                    props["URL"] = f"https://shop.example.com/?utm_campaign=c{wk}"
            elif m <= M_CART:
                pr = cat[x]
                props = {
                    "ProductID": pr.id,
                    "ProductName": pr.title,
                    "Brand": pr.vendor,
                    "Categories": [pr.product_type],
                    "Price": prices[x],
                }
                if m == M_CART:
                    props["$value"] = prices[x]
                    props["Quantity"] = 1
            elif m == M_ACTIVE:
                props = {
                    "page": "https://shop.example.com/",
                    "utm_source": pools.UTM_SOURCES[utm[e]],
                    "utm_medium": pools.UTM_MEDIUMS[utm_m[e]],
                }
            else:
                items = [cat[li_prod[li_start[x] + k]] for k in range(li_n[x])]
                props = {
                    "OrderId": str(order_ids[x]),
                    "$value": totals[x] / 100,
                    "ItemNames": [it.title for it in items],
                    "Brands": sorted({it.vendor for it in items}),
                    "Categories": sorted({it.product_type for it in items}),
                }
                if credits[x] is not None:
                    props["$attribution"] = credits[x]
            eid = ev_ids[e]
            props["$event_id"] = str(order_ids[x]) if m == M_ORDER else eid
            out.append(
                dumps(
                    {
                        "type": "event",
                        "id": eid,
                        "attributes": {
                            "timestamp": ts_l[e],
                            "datetime": ev_dt[e],
                            "event_properties": props,
                        },
                        "relationships": {
                            "profile": {"data": {"type": "profile", "id": prof_id[rows_l[e]]}},
                            "metric": {"data": {"type": "metric", "id": metric_ids[m]}},
                        },
                    }
                )
            )
        self.summary.events = ne
        return out

    def profiles_json(self) -> list[bytes]:
        """Profile records in Klaviyo JSON:API shape (after events, for last_event_date)."""
        rng, s = self.rng, self.plan.shopify
        n = len(self.prof_person)
        created = self.prof_created
        updated = created + (rng.random(n) * (self.ref - 1 - created)).astype(np.int64)
        updated = np.maximum(updated, created)
        created_s = klaviyo_times(created)
        updated_s = klaviyo_times(updated)
        last_ev = self.last_event
        last_ev_s = klaviyo_times(np.maximum(last_ev, 0))
        has_name = (rng.random(n) < PROFILE_HAS_NAME).tolist()
        loc_pick = rng.random(n).tolist()
        title_pick = rng.random(n).tolist()
        consent_flip = (rng.random(n) < CONSENT_FLIP).tolist()
        k_consent = rng.choice(3, size=n, p=KLAVIYO_ONLY_CONSENT_ODDS).tolist()
        person = self.prof_person.tolist()
        slot = self.prof_slot.tolist()
        kind = self.prof_kind.tolist()
        ext = self.ext.tolist()
        with_phone = self.with_phone.tolist()
        email_variant = self.email_variant.tolist()
        k_with_phone = self.k_with_phone.tolist()
        ec_state = self.ec_state.tolist()
        cust_ids = self.customer_id.tolist()
        n_addr = self.n_addr.tolist()
        # predictive analytics from the person's order history and latent purchase process
        lam = self.lam
        p_alive = np.exp(-np.maximum(self.ref - self.last_order_t, 0) / (self.lifetime * YEAR))
        pred_orders = np.round(lam * p_alive, 2).tolist()
        churn = np.round(1 - p_alive, 3).tolist()
        n_orders = self.n_orders.tolist()
        spent = self.spent.tolist()
        first_t = self.first_order_t.tolist()
        last_t = self.last_order_t.tolist()
        next_t = klaviyo_times(
            np.maximum(self.last_order_t, 0) + (YEAR / np.maximum(lam, 0.05)).astype(np.int64)
        )
        cities = [c.cities for c in pools.COUNTRIES]
        out: list[bytes] = []
        for r in range(n):
            i = person[r]
            k = kind[r]
            first, last = self.name(i)
            if not has_name[r] and k >= 5:
                first = last = None
            email: str | None = None
            phone: str | None = None
            external_id: str | None = None
            if i < s:
                base_email = self.shopify_email[i]
                if k == 0:
                    email = _email_variant(base_email or "", email_variant[i])
                elif k == 2:
                    email = self.work_email(i)
                elif k == 3:
                    email = (base_email or "").upper()
                if k in (0, 1, 2) and ext[i]:
                    external_id = str(cust_ids[i])
                if k in (1, 4) or (k != 3 and with_phone[i]):
                    phone = self.phone_e164(i)
                source = "Shopify"
                es = ec_state[i]
                consent = ("SUBSCRIBED", "NEVER_SUBSCRIBED", "UNSUBSCRIBED", "NEVER_SUBSCRIBED")[es]
                if consent_flip[r]:
                    consent = "NEVER_SUBSCRIBED"
            else:
                if k == 5:
                    email = self.email(i)
                if k == 6 or k_with_phone[i - s]:
                    phone = self.phone_e164(i)
                source = "Newsletter Popup" if k == 5 else "SMS Keyword"
                consent = ("SUBSCRIBED", "UNSUBSCRIBED", "NEVER_SUBSCRIBED")[k_consent[r]]
            location = None
            lp_val = loc_pick[r]
            if i < s and n_addr[i] > 0 and lp_val < LOCATION_FROM_ADDRESS:
                a = int(self.addr_start[i])
                ci = self.addr_country[a]
                city = cities[ci][self.addr_city[a]]
                location = {
                    "address1": self.locales[ci].streets[self.addr_street[a]],
                    "address2": None,
                    "city": city.name,
                    "region": city.province,
                    "country": pools.COUNTRIES[ci].name,
                    "zip": self.locales[ci].postcodes[self.addr_zip[a]],
                    "timezone": city.timezone,
                    "latitude": city.latitude,
                    "longitude": city.longitude,
                    "ip": None,
                }
            elif lp_val < LOCATION_FROM_COUNTRY:
                ci = self._country[i]
                city = cities[ci][int(lp_val * 1000) % len(cities[ci])]
                location = {
                    "address1": None,
                    "address2": None,
                    "city": city.name,
                    "region": city.province,
                    "country": pools.COUNTRIES[ci].name,
                    "zip": None,
                    "timezone": city.timezone,
                    "latitude": city.latitude,
                    "longitude": city.longitude,
                    "ip": None,
                }
            subscribed = consent == "SUBSCRIBED"
            subs: dict[str, Any] = {
                "email": {
                    "marketing": {
                        "can_receive_email_marketing": subscribed and email is not None,
                        "consent": consent if email is not None else "NEVER_SUBSCRIBED",
                        "consent_timestamp": updated_s[r]
                        if consent != "NEVER_SUBSCRIBED"
                        else None,
                        "method": "FORM" if source != "Shopify" else "SHOPIFY",
                        "suppression": [],
                    }
                },
                "sms": None
                if phone is None
                else {
                    "marketing": {
                        "can_receive_sms_marketing": subscribed,
                        "consent": consent,
                        "consent_timestamp": updated_s[r]
                        if consent != "NEVER_SUBSCRIBED"
                        else None,
                        "method": "TEXT" if source == "SMS Keyword" else "SHOPIFY",
                    }
                },
            }
            pa = None
            if i < s and slot[r] == 0 and n_orders[i] > 0:
                no = n_orders[i]
                hist = spent[i] / 100
                aov = round(hist / no, 2)
                po = pred_orders[i]
                pa = {
                    "historic_clv": round(hist, 2),
                    "predicted_clv": round(po * aov, 2),
                    "total_clv": round(hist + po * aov, 2),
                    "historic_number_of_orders": no,
                    "predicted_number_of_orders": po,
                    "average_days_between_orders": round(
                        (last_t[i] - first_t[i]) / DAY / (no - 1), 1
                    )
                    if no > 1
                    else None,
                    "average_order_value": aov,
                    "churn_probability": churn[i],
                    "expected_date_of_next_order": next_t[i] if no > 1 else None,
                }
            props: dict[str, Any] = {"$source": source}
            if i < s:
                props["Accepts Marketing"] = subscribed
            out.append(
                dumps(
                    {
                        "type": "profile",
                        "id": self.prof_id[r],
                        "attributes": {
                            "email": email,
                            "phone_number": phone,
                            "external_id": external_id,
                            "anonymous_id": None,
                            "first_name": first,
                            "last_name": last,
                            "organization": None if title_pick[r] > ORGANIZATION else "Acme Corp",
                            "title": None if title_pick[r] > JOB_TITLE else "Buyer",
                            "image": None,
                            "created": created_s[r],
                            "updated": updated_s[r],
                            "last_event_date": last_ev_s[r] if last_ev[r] >= 0 else None,
                            "location": location,
                            "properties": props,
                            "subscriptions": subs,
                            "predictive_analytics": pa,
                        },
                    }
                )
            )
        return out

    def truth(self) -> list[bytes]:
        """Which person each live Shopify customer and each Klaviyo profile belongs to."""
        p = self.plan
        recs: list[bytes] = []
        ids = self.customer_id.tolist()
        for i in range(p.live):
            recs.append(
                dumps(
                    {
                        "source": "shopify",
                        "external_id": str(ids[i]),
                        "person_id": person_id(self.pidx_l[i]),
                    }
                )
            )
        for r, i in enumerate(self.prof_person.tolist()):
            recs.append(
                dumps(
                    {
                        "source": "klaviyo",
                        "external_id": self.prof_id[r],
                        "person_id": person_id(self.pidx_l[i]),
                    }
                )
            )
        return recs
