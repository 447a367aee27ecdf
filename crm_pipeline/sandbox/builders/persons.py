"""Persons of one chunk: identity attributes (names, emails, phones, sign-up times) drawn as
arrays, and the per-record accessors the Shopify and Klaviyo builders format them with."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from crm_pipeline.sandbox import pools
from crm_pipeline.sandbox.builders.base import (
    ChunkPlan,
    StoreSummary,
    _draw_age,
    _scramble,
)
from crm_pipeline.sandbox.builders.odds import (
    GB_LANDLINE,
    NAME_FROM_HOME_COUNTRY,
)


class PersonBuilder:
    """The chunk's shared state (plan, random stream, pools, summary) and its persons."""

    def __init__(self, plan: ChunkPlan, seed: int, lam_scale: float, opc: float) -> None:
        self.plan = plan
        self.seed = seed
        self.ref = plan.ref
        self.rng = np.random.default_rng([seed, plan.index])
        self.lam_scale = lam_scale
        self.opc = opc
        self.locales = pools.locale_pools()
        self.catalog = pools.product_catalog()
        moment = datetime.fromtimestamp(plan.ref, UTC)
        self.summary = StoreSummary(seed=seed, reference_time=moment.isoformat())

    # persons --------------------------------------------------------------------------------

    def persons(self) -> None:
        """Identity attributes of Shopify persons (live + deleted) and Klaviyo-only persons."""
        p, rng = self.plan, self.rng
        n = p.shopify + p.klaviyo_only
        self.n_persons = n
        self.pidx = np.arange(p.base, p.base + n, dtype=np.int64)
        weights = np.array([c.weight for c in pools.COUNTRIES])
        self.country = rng.choice(len(weights), size=n, p=weights / weights.sum())
        name_loc = np.where(
            rng.random(n) < NAME_FROM_HOME_COUNTRY, self.country, rng.integers(0, len(weights), n)
        )
        self.name_loc = name_loc
        flen = np.array([len(lp.first) for lp in self.locales])
        llen = np.array([len(lp.last) for lp in self.locales])
        self.first_i = (rng.random(n) * flen[name_loc]).astype(np.int64)
        self.last_i = (rng.random(n) * llen[name_loc]).astype(np.int64)
        self.email_tpl = rng.integers(0, 5, n)
        self.email_dom = rng.integers(0, len(pools.EMAIL_DOMAINS), n)
        self.email_num = _scramble(self.pidx, 27, 7919, 13).astype(np.int64)
        suffix = ((self.pidx * 48271 + 12345) % 100_000_000).astype(np.int64)
        self.phone_suffix = suffix
        self.gb_landline = (rng.random(n) < GB_LANDLINE) & (suffix < 20_000_000)
        self.created = (self.ref - _draw_age(rng, n)).astype(np.int64)

    def name(self, i: int) -> tuple[str, str]:
        lp = self.locales[self._name_loc[i]]
        return lp.first[self._first_i[i]], lp.last[self._last_i[i]]

    def email(self, i: int) -> str:
        lp = self.locales[self._name_loc[i]]
        f, la = lp.first_ascii[self._first_i[i]], lp.last_ascii[self._last_i[i]]
        num = self._email_num[i]
        tpl = self._email_tpl[i]
        if tpl == 0:
            local = f"{f}.{la}{num}"
        elif tpl == 1:
            local = f"{f[:1]}{la}{num}"
        elif tpl == 2:
            local = f"{la}.{f}_{num}"
        elif tpl == 3:
            local = f"{f}{num}"
        else:
            local = f"{f}_{la[:1]}{num}"
        return f"{local}@{pools.EMAIL_DOMAINS[self._email_dom[i]]}"

    def work_email(self, i: int) -> str:
        lp = self.locales[self._name_loc[i]]
        f, la = lp.first_ascii[self._first_i[i]], lp.last_ascii[self._last_i[i]]
        dom = pools.WORK_DOMAINS[self._email_dom[i] % len(pools.WORK_DOMAINS)]
        return f"{f}.{la}.{self._email_num[i]}@{dom}"

    def phone_e164(self, i: int) -> str:
        c = pools.COUNTRIES[self._country[i]]
        s = self._suffix[i]
        if c.code in ("US", "CA"):
            areas = pools.US_AREA_CODES if c.code == "US" else pools.CA_AREA_CODES
            return f"+1{areas[s // 8_000_000]}{2_000_000 + s % 8_000_000}"
        if c.code == "GB":
            if self._gb_landline[i]:
                return f"+4420{70_000_000 + s}"
            return f"+447{400_000_000 + s}"
        # 7 digits keep every number inside a valid mobile range; unique while the store has
        # fewer than 10M persons (the suffix is a bijection of the person number mod 10**7).
        return f"{c.phone_prefix}{self._suffix7[i]:07d}"

    def phone_national(self, i: int) -> str:
        e = self.phone_e164(i)
        if e.startswith("+1"):
            d = e[2:]
            return f"({d[:3]}) {d[3:6]}-{d[6:]}"
        if e.startswith("+4420"):
            d = e[5:]
            return f"020 {d[:4]} {d[4:]}"
        if e.startswith("+447"):
            d = e[3:]
            return f"0{d[:4]} {d[4:]}"
        return e

    def phone_international(self, i: int) -> str:
        e = self.phone_e164(i)
        if e.startswith("+1"):
            return f"+1 {e[2:5]}-{e[5:8]}-{e[8:]}"
        if e.startswith("+44"):
            return f"+44 {e[3:7]} {e[7:]}"
        return e

    # shopify customers and orders -----------------------------------------------------------

    def _bind_lists(self) -> None:
        # Python lists index ~10x faster than numpy arrays inside per-record loops.
        self._name_loc = self.name_loc.tolist()
        self._first_i = self.first_i.tolist()
        self._last_i = self.last_i.tolist()
        self._email_tpl = self.email_tpl.tolist()
        self._email_dom = self.email_dom.tolist()
        self._email_num = self.email_num.tolist()
        self._country = self.country.tolist()
        self._suffix = self.phone_suffix.tolist()
        self._suffix7 = ((self.pidx * 7919 + 4321) % 10_000_000).tolist()
        self._gb_landline = self.gb_landline.tolist()
        self.pidx_l = self.pidx.tolist()
