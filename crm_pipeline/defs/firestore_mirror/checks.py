"""Data-quality checks of the Firestore mirror."""

import dagster as dg

from crm_pipeline.db.resource import PostgresResource
from crm_pipeline.defs.firestore_mirror.assets import firestore_customer_mirror
from crm_pipeline.defs.firestore_mirror.resources import FirestoreResource
from crm_pipeline.firestore.mirror import check_mirror_consistency


@dg.asset_check(asset=firestore_customer_mirror, description="Firestore matches PostgreSQL.")
def firestore_customer_mirror_consistent(
    postgres: PostgresResource, firestore: FirestoreResource
) -> dg.AssetCheckResult:
    """Counts and content hashes agree (all customers when cheap, else a random sample).

    Drift is repaired by the `repair_firestore_mirror` job.
    """
    report = check_mirror_consistency(postgres.get_engine(), firestore.get_client())
    return dg.AssetCheckResult(
        passed=report.ok,
        severity=dg.AssetCheckSeverity.WARN,
        metadata=report.as_metadata(),
    )
