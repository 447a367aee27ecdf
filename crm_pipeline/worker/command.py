"""What `crm-pipeline worker` runs: the worker bound to the code location's own resources."""

from __future__ import annotations

import logging
import os

from crm_pipeline.worker.loop import Worker, WorkerSettings

log = logging.getLogger(__name__)


def run_worker(settings: WorkerSettings, dagster_events: bool = True) -> None:
    """Run until SIGTERM/SIGINT with the database, Firestore and Dagster instance of section 1."""
    import dagster as dg

    from crm_pipeline.db.engine import make_engine
    from crm_pipeline.db.migrate import migrate
    from crm_pipeline.db.server import database_dsn
    from crm_pipeline.defs.resources import resources
    from crm_pipeline.instance import prepare_dagster_home

    dsn = database_dsn()
    migrate(dsn)
    # resolved as Dagster resolves them at launch (env("NAME") bindings read at use)
    firestore = resources()["firestore"].process_config_and_initialize()
    instance: dg.DagsterInstance | None = None
    if dagster_events:
        if not os.environ.get("DAGSTER_HOME"):
            prepare_dagster_home()
        instance = dg.DagsterInstance.get()
    engine = make_engine(dsn)
    try:
        Worker(
            engine,
            dsn,
            firestore.get_client(),
            firestore.mirror_settings(),
            instance=instance,
            settings=settings,
        ).serve()
    finally:
        engine.dispose()
        if instance is not None:
            instance.dispose()
