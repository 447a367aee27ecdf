"""Assets that write the admin app's Firestore read model from PostgreSQL."""

import dagster as dg
from google.api_core import exceptions as gexc

from crm_pipeline.db.resource import PostgresResource
from crm_pipeline.defs.firestore_mirror.resources import FirestoreResource
from crm_pipeline.defs.pipeline.executor import CPU_BOUND
from crm_pipeline.firestore.lost import FirestoreEmulatorLost, ensure_emulator
from crm_pipeline.firestore.mirror import sync_dashboard, sync_mirror


@dg.asset(
    op_tags=CPU_BOUND,
    group_name="mirror",
    kinds={"firestore", "postgres"},
    deps=[dg.AssetKey("customer_metrics"), dg.AssetKey("customer_segments")],
)
def firestore_customer_mirror(
    context: dg.AssetExecutionContext, postgres: PostgresResource, firestore: FirestoreResource
) -> dg.MaterializeResult:
    """One Firestore document per live customer for the detail page, rewritten only on change."""
    client = firestore.get_client()
    try:
        try:
            summary = sync_mirror(
                postgres.get_engine(), client, firestore.mirror_settings(), run_id=context.run_id
            )
        except (gexc.GoogleAPICallError, gexc.RetryError) as exc:
            ensure_emulator(client, exc)  # reads and deletes meeting a dead emulator
            raise
        if summary.failed:
            ensure_emulator(client)
    except FirestoreEmulatorLost as exc:
        raise dg.Failure(description=str(exc)) from exc
    succeeded = summary.written + summary.deleted
    if summary.failed and not succeeded:
        raise dg.Failure(
            description=(
                f"Every Firestore write failed ({summary.failed} customers); is Firestore "
                "reachable and the project right? Details in customer_sync_logs for run "
                f"{summary.run_id}."
            ),
            metadata=summary.as_metadata(),
        )
    if summary.failed:
        context.log.warning(
            "%d customers failed to mirror and will be retried by a later run: %s",
            summary.failed,
            ", ".join(summary.failed_ids[:10]),
        )
    return dg.MaterializeResult(metadata=summary.as_metadata())


@dg.asset(
    op_tags=CPU_BOUND,
    group_name="mirror",
    kinds={"firestore", "postgres"},
    deps=[dg.AssetKey("customer_stats"), dg.AssetKey("customer_segments")],
)
def firestore_dashboard_mirror(
    postgres: PostgresResource, firestore: FirestoreResource
) -> dg.MaterializeResult:
    """The dashboard's stats cards (stats/current) and segment counts (segments/{name})."""
    summary = sync_dashboard(postgres.get_engine(), firestore.get_client())
    return dg.MaterializeResult(
        metadata={
            "documents_written": summary.written,
            "segments": summary.segments,
            "segments_deleted": summary.deleted,
        }
    )
