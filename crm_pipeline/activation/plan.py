"""What a Klaviyo sync would write, computed without writing anything.

`build_plan` reads the customers, their pushed hashes, the CRM's lists and the trigger events
recorded so far; the plan counts what the sync would send (the `crm-pipeline activation plan`
command and the asset's metadata show these counts). Applying it is crm_pipeline/activation/sync.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from crm_pipeline.activation import state
from crm_pipeline.activation.payloads import ProfileRow, profile_rows


@dataclass
class Membership:
    """A segment's list: the members it should have (customer -> profile id, None while the
    profile is not known yet) and the members the CRM put there."""

    segment: str
    list_id: str | None
    desired: dict[str, str | None]
    recorded: dict[str, str | None]

    def to_add(self) -> list[tuple[str, str]]:
        """(profile id, customer id) to add: desired members whose profile is known."""
        have = set(self.recorded)
        return sorted(
            (pid, cid) for cid, pid in self.desired.items() if pid is not None and pid not in have
        )

    def to_remove(self) -> list[str]:
        keep = {pid for pid in self.desired.values() if pid is not None}
        # a desired customer whose profile id is unknown keeps a recorded membership
        keep |= {pid for pid, cid in self.recorded.items() if cid in self.desired}
        return sorted(pid for pid in self.recorded if pid not in keep)

    def adds_planned(self) -> int:
        """Adds the sync would make, counting members whose profile the push will create."""
        have_customers = {cid for cid in self.recorded.values() if cid}
        return sum(
            1
            for cid, pid in self.desired.items()
            if (pid is None and cid not in have_customers) or (pid and pid not in self.recorded)
        )


@dataclass
class ActivationPlan:
    segments: list[str]
    customers: int = 0
    profiles: list[ProfileRow] = field(default_factory=list)
    rows: dict[str, ProfileRow] = field(default_factory=dict)
    memberships: dict[str, Membership] = field(default_factory=dict)
    new_triggers: list[Any] = field(default_factory=list)
    baseline: bool = False
    pending_events: int = 0

    def counts(self) -> dict[str, int]:
        adds = sum(m.adds_planned() for m in self.memberships.values())
        removes = sum(len(m.to_remove()) for m in self.memberships.values())
        fresh = 0 if self.baseline else len(self.new_triggers)
        return {
            "customers": self.customers,
            "profiles_to_push": len(self.profiles),
            "lists_to_create": sum(1 for m in self.memberships.values() if m.list_id is None),
            "list_members_to_add": adds,
            "list_members_to_remove": removes,
            "events_to_send": fresh + self.pending_events,
            "baseline_triggers": len(self.new_triggers) if self.baseline else 0,
        }

    def lines(self) -> list[str]:
        counts = self.counts()
        out = [
            f"customers Klaviyo can identify: {counts['customers']}",
            f"profiles to push (payload changed): {counts['profiles_to_push']}",
            f"CRM lists to create: {counts['lists_to_create']}",
        ]
        for name, m in sorted(self.memberships.items()):
            out.append(f"  CRM: {name}: +{m.adds_planned()} -{len(m.to_remove())} members")
        out.append(f"trigger events to send: {counts['events_to_send']}")
        if self.baseline:
            out.append(
                f"first sync: {counts['baseline_triggers']} existing entries recorded as the "
                "baseline, not sent"
            )
        return out


def build_plan(conn: sa.Connection, segments: list[str]) -> ActivationPlan:
    """Everything the next sync would write, read in one transaction."""
    plan = ActivationPlan(segments=list(segments))
    lists = state.crm_lists(conn)
    desired: dict[str, dict[str, str | None]] = {s: {} for s in segments}
    for row in profile_rows(conn):
        plan.customers += 1
        plan.rows[row.customer_id] = row
        if row.changed:
            plan.profiles.append(row)
        if row.suppressed:  # Klaviyo suppressed the address: never put it on a CRM list
            continue
        for name in row.segments:
            if name in desired:
                desired[name][row.customer_id] = row.klaviyo_profile_id
    for name in segments:
        plan.memberships[name] = Membership(
            name, lists.get(name), desired[name], state.list_members(conn, name)
        )
    plan.baseline = not state.has_trigger_history(conn)
    plan.new_triggers = state.new_triggers(conn, list(segments))
    plan.pending_events = state.pending_count(conn)
    return plan
