"""Firestore tests get the emulator fixtures (pytest_plugins belongs in the root conftest only)."""

from crm_pipeline_tests.fixtures.firestore import firestore_client, firestore_emulator  # noqa: F401
