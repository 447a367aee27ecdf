"""Assets that write the admin app's Firestore read model from PostgreSQL."""

import dagster as dg
from google.api_core import exceptions as gexc

from crm_pipeline.changes.mode import refresh_is_full
from crm_pipeline.changes.refresh import refresh_mirror
from crm_pipeline.db.resource import PostgresResource
from crm_pipeline.defs.firestore_mirror.resources import FirestoreResource
from crm_pipeline.defs.pipeline.executor import CPU_BOUND
from crm_pipeline.firestore.lost import FirestoreEmulatorLost, ensure_emulator
from crm_pipeline.firestore.mirror import sync_dashboard


@dg.asset(
    op_tags=CPU_BOUND,
    group_name="mirror",
    kinds={"firestore", "postgres"},
    # klaviyo_consent: consent withdrawn in Klaviyo shows in the same run
    deps=[
        dg.AssetKey("customer_metrics"),
        dg.AssetKey("customer_segments"),
        dg.AssetKey("klaviyo_consent"),
    ],
)
def firestore_customer_mirror(
    context: dg.AssetExecutionContext, postgres: PostgresResource, firestore: FirestoreResource
) -> dg.MaterializeResult:
    """One Firestore document per live customer for the detail page, rewritten only on change.

    Incremental and webhook runs build only the touched customers' documents (change log).
    """
    client = firestore.get_client()
    try:
        try:
            refreshed = refresh_mirror(
                postgres.get_engine(),
                client,
                firestore.mirror_settings(),
                run_id=context.run_id,
                full=refresh_is_full(context.run.job_name, context.run.tags, default_full=True),
            )
            summary = refreshed.summary
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
    return dg.MaterializeResult(
        metadata={
            **summary.as_metadata(),
            "mode": "full" if refreshed.full else "incremental",
            "customers_touched": len(refreshed.window.customer_ids),
            "changes_pruned": refreshed.pruned,
        }
    )


@dg.asset(
    op_tags=CPU_BOUND,
    group_name="mirror",
    kinds={"firestore", "postgres"},
    deps=[dg.AssetKey("customer_stats"), dg.AssetKey("customer_segments")],
)
def firestore_dashboard_mirror(
    postgres: PostgresResource, firestore: FirestoreResource
) -> dg.MaterializeResult:
    """The dashboard: stats cards, the day's growth point, segment counts, the activity feed."""
    summary = sync_dashboard(postgres.get_engine(), firestore.get_client())
    return dg.MaterializeResult(
        metadata={
            "documents_written": summary.written,
            "segments": summary.segments,
            "segments_deleted": summary.deleted,
            "history_day": summary.history_day,
            "activity_written": summary.activity_written,
            "activity_deleted": summary.activity_deleted,
        }
    )
