"""Run a pandera schema lazily and return, per row, every reason it failed."""

from __future__ import annotations

from collections import defaultdict

import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors


def validate_frame(schema: pa.DataFrameSchema, frame: pd.DataFrame) -> dict[int, list[str]]:
    """Row position -> sorted reasons ("column: check"); rows absent from the dict are valid."""
    if frame.empty:
        return {}
    try:
        schema.validate(frame, lazy=True)
        return {}
    except SchemaErrors as exc:
        cases = exc.failure_cases
    reasons: dict[int, set[str]] = defaultdict(set)
    for context, column, check, index in zip(
        cases["schema_context"], cases["column"], cases["check"], cases["index"], strict=True
    ):
        if index is None or pd.isna(index):
            continue
        name = str(check)
        if name.startswith("not_nullable"):
            name = "missing"
        dataframe_level = context == "DataFrameSchema"
        reasons[int(index)].add(name if dataframe_level else f"{column}: {name}")
    return {i: sorted(r) for i, r in reasons.items()}
