"""The Firestore resource: which project and database, and whether to talk to the emulator."""

from __future__ import annotations

import os

import dagster as dg
from google.auth.credentials import AnonymousCredentials
from google.cloud import firestore

from crm_pipeline.env_binding import resolve
from crm_pipeline.firestore.mirror import MirrorSettings

EMULATOR_PROJECT = "crm-local"


class FirestoreResource(dg.ConfigurableResource):
    """Firestore of the admin app; bind `project=env("GOOGLE_CLOUD_PROJECT")` and, locally,
    `emulator_host=env("FIRESTORE_EMULATOR_HOST")` (crm_pipeline/env_binding.py). Without an
    emulator host (here or in FIRESTORE_EMULATOR_HOST) it uses production Firestore with
    application-default credentials."""

    project: str | None = None
    emulator_host: str | None = None
    database: str = "(default)"
    write_threads: int = 4
    batch_size: int = 5000
    # random customers an incremental or webhook run verifies besides the ones it wrote
    verify_sample: int = 50
    # past this many live customers a full run's check compares counts and a random sample
    # (`check_sample` customers) instead of reading the whole mirror back (checks.check_mode)
    full_check_max_customers: int = 50_000
    check_sample: int = 2_000

    def get_client(self) -> firestore.Client:
        """A client for the configured project and database (the emulator's when a host is set)."""
        configured = resolve(self.project)
        host = resolve(self.emulator_host) or os.environ.get("FIRESTORE_EMULATOR_HOST")
        if not host:
            return firestore.Client(project=configured, database=self.database)
        project = configured or os.environ.get("GOOGLE_CLOUD_PROJECT") or EMULATOR_PROJECT
        client = firestore.Client(
            project=project,
            database=self.database,
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        )
        # The client reads FIRESTORE_EMULATOR_HOST once, in __init__; setting the same attribute
        # honours a configured host without changing the process environment for other code.
        client._emulator_host = host
        return client

    def mirror_settings(self) -> MirrorSettings:
        return MirrorSettings(batch_size=self.batch_size, threads=self.write_threads)
