"""The resources every domain shares, bound once for the whole code location.

Every setting is bound to its variable unconditionally with the `env("NAME")` sentinel and read
when a run uses the resource (crm_pipeline/env_binding.py says why not `dg.EnvVar`).
"""

from __future__ import annotations

import dagster as dg

from crm_pipeline.db.resource import PostgresResource
from crm_pipeline.defs.firestore_mirror.resources import FirestoreResource
from crm_pipeline.defs.klaviyo.resources import KlaviyoResource
from crm_pipeline.defs.shopify.resources import ShopifyResource
from crm_pipeline.env_binding import env


def resources() -> dict[str, dg.ConfigurableResource]:
    """The bindings of the code location; the CLI resolves the same ones outside a run."""
    return {
        # unset: the embedded server under CRM_HOME
        "postgres": PostgresResource(dsn=env("CRM_DATABASE_URL")),
        # SHOPIFY_API_URL / KLAVIYO_API_URL: the sandbox, where credentials are optional
        "shopify": ShopifyResource(
            shop=env("SHOPIFY_SHOP"),
            access_token=env("SHOPIFY_ACCESS_TOKEN"),
            api_version=env("SHOPIFY_API_VERSION"),
            api_url=env("SHOPIFY_API_URL"),
        ),
        "klaviyo": KlaviyoResource(
            api_key=env("KLAVIYO_API_KEY"),
            api_url=env("KLAVIYO_API_URL"),
            predictive_analytics=env("KLAVIYO_PREDICTIVE_ANALYTICS"),
            sync_enabled=env("KLAVIYO_SYNC_ENABLED"),
        ),
        # unset: production Firestore with application-default credentials
        "firestore": FirestoreResource(
            project=env("GOOGLE_CLOUD_PROJECT"), emulator_host=env("FIRESTORE_EMULATOR_HOST")
        ),
    }


defs = dg.Definitions(resources=resources())
