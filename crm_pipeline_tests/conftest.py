"""Test-session services: a real PostgreSQL and the real Firestore emulator, started here."""

pytest_plugins = [
    "crm_pipeline_tests.fixtures.postgres",
    "crm_pipeline_tests.fixtures.firestore",
    "crm_pipeline_tests.fixtures.pipeline",
]
