"""The one Definitions object: every domain's assets, checks, jobs, schedules and sensors."""

from __future__ import annotations

import os

import dagster as dg

from crm_pipeline.db.resource import PostgresResource
from crm_pipeline.defs.analytics import definitions as analytics
from crm_pipeline.defs.customers import assets as customer_assets
from crm_pipeline.defs.files import import_customers
from crm_pipeline.defs.firestore_mirror import definitions as firestore_mirror
from crm_pipeline.defs.firestore_mirror.resources import FirestoreResource
from crm_pipeline.defs.jobs import jobs, schedules
from crm_pipeline.defs.klaviyo import assets as klaviyo_assets
from crm_pipeline.defs.klaviyo.resources import KlaviyoResource
from crm_pipeline.defs.shopify import assets as shopify_assets
from crm_pipeline.defs.shopify.resources import ShopifyResource
from crm_pipeline.defs.webhooks import definitions as webhooks
from crm_pipeline.sources.shopify import DEFAULT_API_VERSION


def _env(name: str) -> dg.EnvVar | None:
    """Bind an env var (read at launch, hidden in the UI) only when it is set at all."""
    return dg.EnvVar(name) if os.environ.get(name) else None


def resources() -> dict[str, dg.ConfigurableResource]:
    return {
        "postgres": PostgresResource(dsn=_env("CRM_DATABASE_URL")),
        "shopify": ShopifyResource(
            shop=_env("SHOPIFY_SHOP"),
            access_token=_env("SHOPIFY_ACCESS_TOKEN"),
            api_version=os.environ.get("SHOPIFY_API_VERSION") or DEFAULT_API_VERSION,
            api_url=_env("SHOPIFY_API_URL"),
        ),
        "klaviyo": KlaviyoResource(
            api_key=_env("KLAVIYO_API_KEY"), api_url=_env("KLAVIYO_API_URL")
        ),
        "firestore": FirestoreResource(
            project=_env("GOOGLE_CLOUD_PROJECT"), emulator_host=_env("FIRESTORE_EMULATOR_HOST")
        ),
    }


def build_definitions() -> dg.Definitions:
    """Each domain's Definitions, merged, with resources bound once here."""
    ingestion = dg.Definitions(
        assets=dg.load_assets_from_modules([shopify_assets, klaviyo_assets, customer_assets]),
        asset_checks=dg.load_asset_checks_from_modules([customer_assets]),
    )
    return dg.Definitions.merge(
        ingestion,
        analytics.defs,
        firestore_mirror.defs,
        webhooks.defs,
        dg.Definitions(
            jobs=[*jobs(), import_customers], schedules=schedules(), resources=resources()
        ),
    )


defs = build_definitions()
