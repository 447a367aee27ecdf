"""Documents parsed and validated against the Admin schema of one API version, cached.

The pipeline sends the same few documents thousands of times, so the verdict for a
(version, text) pair is kept; errors come out in Shopify's answer shape.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSchema,
    SelectionSetNode,
    parse,
    validate,
)

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


def fragments_of(document: DocumentNode) -> dict[str, FragmentDefinitionNode]:
    """The named fragments of a document."""
    return {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}


def selected_fields(
    schema: GraphQLSchema,
    fragments: dict[str, FragmentDefinitionNode],
    selection_set: SelectionSetNode | None,
    parent: Any,
) -> Iterator[tuple[FieldNode, Any]]:
    """(field node, the type it is selected on) for every field of a validated selection,
    fragments (inline or named) flattened."""
    for sel in selection_set.selections if selection_set else ():
        if isinstance(sel, FieldNode):
            yield sel, parent
            continue
        frag = fragments[sel.name.value] if isinstance(sel, FragmentSpreadNode) else sel
        cond = frag.type_condition
        owner = schema.get_type(cond.name.value) if cond else parent
        yield from selected_fields(schema, fragments, frag.selection_set, owner)
