"""The Firestore mirror's definitions; resources (`postgres`, `firestore`) are bound centrally."""

from __future__ import annotations

import dagster as dg

from crm_pipeline.defs.firestore_mirror.assets import (
    firestore_customer_mirror,
    firestore_dashboard_mirror,
)
from crm_pipeline.defs.firestore_mirror.checks import firestore_customer_mirror_consistent
from crm_pipeline.defs.firestore_mirror.jobs import repair_firestore_mirror

defs = dg.Definitions(
    assets=[firestore_customer_mirror, firestore_dashboard_mirror],
    asset_checks=[firestore_customer_mirror_consistent],
    jobs=[repair_firestore_mirror],
)
