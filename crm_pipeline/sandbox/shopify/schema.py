"""Documents parsed and validated against the Admin schema of one API version, cached.

The pipeline sends the same few documents thousands of times, so the verdict for a
(version, text) pair is kept; errors come out in Shopify's answer shape.
"""

from __future__ import annotations

import functools
import re

from graphql import DocumentNode, GraphQLError, GraphQLSchema, parse, validate

from crm_pipeline.shopify_admin_schema import schema as admin_schema

_UNDEFINED_FIELD = re.compile(r"^Cannot query field '(\w+)' on type '(\w+)'\.")


def shopify_error(error: GraphQLError) -> dict:
    """A graphql-core error as Shopify words the common ones (`undefinedField` and its code)."""
    out = error.formatted
    m = _UNDEFINED_FIELD.match(error.message)
    if m:
        field, type_name = m.groups()
        out["message"] = f"Field '{field}' doesn't exist on type '{type_name}'"
        out["extensions"] = {"code": "undefinedField", "typeName": type_name, "fieldName": field}
    return out


@functools.lru_cache(maxsize=512)
def checked(version: str, text: str) -> tuple[DocumentNode | None, tuple[GraphQLError, ...]]:
    """(document, ()) when `text` is valid for `version`; (None, errors) when it is not."""
    try:
        document = parse(text)
    except GraphQLError as exc:
        return None, (exc,)
    errors = validate(schema_for(version), document)
    return (None, tuple(errors)) if errors else (document, ())


def schema_for(version: str) -> GraphQLSchema:
    """The Admin schema of `version` (raises `UnknownApiVersion` when none is shipped)."""
    return admin_schema(version)
