"""Schemas of mapped source records. Check names are the quarantine reasons (docs/quarantine.md)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pandera.pandas as pa

from crm_pipeline.normalize import is_valid_email

# Clocks drift and stores use local times: a day ahead is tolerated, more is an error.
FUTURE_TOLERANCE = timedelta(days=1)


def _not_in_future(now: datetime) -> pa.Check:
    limit = pd.Timestamp(now + FUTURE_TOLERANCE)
    return pa.Check(lambda s: s.isna() | (s <= limit), name="in_future")


def _email_shape() -> pa.Check:
    return pa.Check(
        lambda s: s.isna() | s.map(lambda v: is_valid_email(v) if isinstance(v, str) else True),
        name="invalid_email",
    )


def _non_negative(name: str) -> pa.Check:
    return pa.Check(lambda s: s.isna() | (s >= 0), name=name)


def customer_schema(now: datetime | None = None) -> pa.DataFrameSchema:
    """A Shopify customer, Klaviyo profile or imported row, after mapping."""
    now = now or datetime.now(UTC)
    ts = "datetime64[ns, UTC]"
    return pa.DataFrameSchema(
        {
            "external_id": pa.Column(str, nullable=False),
            "email": pa.Column(object, checks=_email_shape(), nullable=True),
            "source_updated_at": pa.Column(ts, checks=_not_in_future(now), nullable=False),
            "created_at": pa.Column(ts, checks=_not_in_future(now), nullable=True),
        },
        coerce=False,
        name="customer_record",
    )


def order_schema(now: datetime | None = None) -> pa.DataFrameSchema:
    now = now or datetime.now(UTC)
    ts = "datetime64[ns, UTC]"
    return pa.DataFrameSchema(
        {
            "external_id": pa.Column(str, nullable=False),
            "created_at": pa.Column(ts, checks=_not_in_future(now), nullable=False),
            "source_updated_at": pa.Column(ts, checks=_not_in_future(now), nullable=False),
            "total_price": pa.Column(
                float, checks=_non_negative("negative_amount"), nullable=False
            ),
            "total_refunded": pa.Column(float, checks=_non_negative("negative_amount")),
            "line_item_quantity_min": pa.Column(
                float, checks=_non_negative("negative_quantity"), nullable=True
            ),
        },
        checks=[
            pa.Check(
                lambda df: df["total_refunded"] <= df["total_price"] + 0.005,
                name="refund_exceeds_total",
            )
        ],
        name="order_record",
    )


def activity_schema(now: datetime | None = None) -> pa.DataFrameSchema:
    now = now or datetime.now(UTC)
    ts = "datetime64[ns, UTC]"
    return pa.DataFrameSchema(
        {
            "external_id": pa.Column(str, nullable=False),
            "profile_external_id": pa.Column(str, nullable=False),
            "activity_type": pa.Column(str, nullable=False),
            "occurred_at": pa.Column(ts, checks=_not_in_future(now), nullable=False),
        },
        name="activity_record",
    )
