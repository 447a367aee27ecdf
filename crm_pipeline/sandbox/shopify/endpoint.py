"""One request to `/admin/api/<version>/graphql.json`, answered as Shopify answers it.

A body that is not a JSON object with a `query` string is 400. A document that does not
parse or validate against the version's schema is 200 with `errors` and no `data`. A valid
one is priced (too expensive: `MAX_COST_EXCEEDED`; bucket empty: `THROTTLED`), executed, and
answered with `data`, any field `errors`, and `extensions.cost`.
"""

from __future__ import annotations

import logging
from typing import Any

from graphql import GraphQLError, OperationType, execute, get_operation_ast

from crm_pipeline.sandbox.shopify import cost
from crm_pipeline.sandbox.shopify.resolvers import ROOT, Context
from crm_pipeline.sandbox.shopify.schema import checked, schema_for, shopify_error
from crm_pipeline.shopify_admin_schema import UnknownApiVersion, versions

log = logging.getLogger(__name__)

BAD_BODY = {"errors": {"query": "Required parameter missing or invalid"}}


def known_version(version: str) -> bool:
    """Whether a schema ships for `version` (other versions are 404, as in Shopify)."""
    return version in versions()


def _field_error(error: GraphQLError) -> dict:
    out = error.formatted
    if not (error.extensions or {}).get("code"):
        if error.original_error is not None and not isinstance(error.original_error, GraphQLError):
            log.error("sandbox resolver failed", exc_info=error.original_error)
            out["extensions"] = {"code": "INTERNAL_SERVER_ERROR"}
    return out


def _throttled(bucket: cost.CostBucket, requested: int) -> dict:
    return {
        "errors": [
            {
                "message": "Throttled",
                "extensions": {
                    "code": "THROTTLED",
                    "documentation": "https://shopify.dev/api/usage/rate-limits",
                },
            }
        ],
        "extensions": bucket.extension(requested, 0, bucket.available()),
    }


def handle_graphql(state: Any, version: str, body: Any, base_url: str) -> tuple[int, dict]:
    """(HTTP status, JSON body) for one GraphQL request against API `version`."""
    if not isinstance(body, dict) or not isinstance(body.get("query"), str):
        return 400, BAD_BODY
    try:
        schema = schema_for(version)
    except UnknownApiVersion:
        return 404, {"errors": "Not Found"}
    document, errors = checked(version, body["query"])
    if errors:
        state.count("shopify_invalid_documents")
        return 200, {"errors": [shopify_error(e) for e in errors]}
    operation = get_operation_ast(document, body.get("operationName"))
    if operation is None:
        msg = "An operation name is required when the document has several operations."
        return 200, {"errors": [{"message": msg}]}
    variables = body.get("variables") or {}
    bucket = state.shopify.bucket
    requested = cost.requested_cost(schema, document, operation, variables)
    if requested > cost.MAX_COST:
        msg = (
            f"Query cost is {requested}, which exceeds the single query max cost limit "
            f"({cost.MAX_COST})."
        )
        error = {"message": msg, "extensions": {"code": "MAX_COST_EXCEEDED", "cost": requested}}
        return 200, {
            "errors": [error],
            "extensions": bucket.extension(requested, 0, bucket.available()),
        }
    if not bucket.take(requested):
        state.count("shopify_throttled")
        return 200, _throttled(bucket, requested)
    result = execute(
        schema,
        document,
        root_value=ROOT,
        context_value=Context(state, base_url, version),
        variable_values=variables,
        operation_name=body.get("operationName"),
    )
    mutation = operation.operation == OperationType.MUTATION
    actual = cost.actual_cost(result.data, mutation) if result.data else 0
    out: dict[str, Any] = {}
    if result.errors:
        out["errors"] = [_field_error(e) for e in result.errors]
    if result.data is not None:
        out["data"] = result.data
    out["extensions"] = bucket.extension(requested, actual, bucket.refund(requested - actual))
    return 200, out
