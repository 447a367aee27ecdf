"""The repair job: find customers whose Firestore document drifted and re-mirror them."""

import dagster as dg

from crm_pipeline.db.resource import PostgresResource
from crm_pipeline.defs.firestore_mirror.resources import FirestoreResource
from crm_pipeline.firestore.mirror import check_mirror_consistency, repair_mirror


class RepairConfig(dg.Config):
    """`sample`: how many random customers to verify; unset checks all when cheap."""

    sample: int | None = None


@dg.op
def repair_drifted_customers(
    context: dg.OpExecutionContext,
    config: RepairConfig,
    postgres: PostgresResource,
    firestore: FirestoreResource,
) -> dg.Output[int]:
    """Re-mirror missing, extra and mismatched documents, then verify again."""
    engine, client = postgres.get_engine(), firestore.get_client()
    before = check_mirror_consistency(engine, client, sample=config.sample)
    drifted = before.drifted_ids
    context.log.info("%d drifted customer documents: %s", len(drifted), ", ".join(drifted[:20]))
    summary = repair_mirror(engine, client, drifted, firestore.mirror_settings())
    after = check_mirror_consistency(engine, client, sample=config.sample)
    if summary.failed:
        raise dg.Failure(
            description=(
                f"{summary.failed} documents could not be repaired; see customer_sync_logs "
                f"for run {summary.run_id}."
            ),
            metadata={"failed_ids": ", ".join(summary.failed_ids[:50])},
        )
    return dg.Output(
        len(drifted),
        metadata={
            "drifted": len(drifted),
            "repaired": summary.written,
            "deleted": summary.deleted,
            "consistent_after": after.ok,
        },
    )


@dg.job(description="Re-mirror customers whose Firestore documents drifted from PostgreSQL.")
def repair_firestore_mirror() -> None:
    repair_drifted_customers()
