"""The receiver fixtures of the webhook tests: the worker tests post signed actions through it."""

from crm_pipeline_tests.webhooks.conftest import client as client  # noqa: F401 - a fixture
