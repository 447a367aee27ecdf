"""Every GraphQL document the pipeline can send is valid for every Shopify schema in the repo.

Documents are collected from the code (every string of the `crm_pipeline.sources.shopify`
package and its modules that parses as a GraphQL operation), so a new query is
checked without being listed here. Schemas are the files in `crm_pipeline/shopify_admin_schema/`,
so adding a newer version's file is all it takes to test it.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import pytest
from graphql import (
    GraphQLError,
    OperationDefinitionNode,
    TypeInfo,
    TypeInfoVisitor,
    Visitor,
    parse,
    validate,
    visit,
)

import crm_pipeline.sources.shopify as shopify_source
from crm_pipeline.sandbox.shopify.bulk import plan_bulk_query
from crm_pipeline.shopify_admin_schema import newest_version, schema, versions

REPO = Path(__file__).resolve().parents[2]
# the search the client puts into a bulk query template's `{filter}`
BULK_FILTER = "(query: \"updated_at:>='2024-01-01T00:00:00Z'\")"


def _modules():
    yield shopify_source
    path = getattr(shopify_source, "__path__", [])
    for info in pkgutil.walk_packages(path, prefix=f"{shopify_source.__name__}."):
        yield importlib.import_module(info.name)


def _is_operation(text: str) -> bool:
    try:
        document = parse(text)
    except GraphQLError:
        return False
    return any(isinstance(d, OperationDefinitionNode) for d in document.definitions)


def pipeline_documents() -> dict[str, str]:
    """name -> document, bulk templates once without and once with their search filter."""
    found: dict[str, str] = {}
    for module in _modules():
        for name, value in vars(module).items():
            if not isinstance(value, str) or not value.lstrip().startswith(
                ("query", "mutation", "{")
            ):
                continue
            if "{filter}" in value:  # a bulk query template (sent inside bulkOperationRunQuery)
                found[f"{name}"] = value.replace("{filter}", "")
                found[f"{name}(filtered)"] = value.replace("{filter}", BULK_FILTER)
            elif _is_operation(value):
                found[name] = value
    return found


DOCUMENTS = pipeline_documents()
BULK = sorted(
    name for name in DOCUMENTS if name.endswith("(filtered)") or f"{name}(filtered)" in DOCUMENTS
)


def test_the_collection_finds_every_kind_of_document() -> None:
    expected = {
        "CUSTOMERS_QUERY", "ORDERS_QUERY", "ORDER_LINE_ITEMS_QUERY",
        "BULK_CUSTOMERS", "BULK_ORDERS", "BULK_RUN", "BULK_NODE", "CURRENT_BULK",
        "WEBHOOKS_QUERY", "WEBHOOK_CREATE", "WEBHOOK_UPDATE", "WEBHOOK_TOPICS_QUERY",
    }  # fmt: skip
    assert expected <= set(DOCUMENTS)
    assert {"BULK_CUSTOMERS", "BULK_ORDERS"} <= set(BULK)


def test_a_schema_file_per_version_and_the_newest_is_the_default() -> None:
    assert {"2024-10", "2025-01"} <= set(versions())
    assert shopify_source.DEFAULT_API_VERSION == newest_version() == versions()[-1]


@pytest.mark.parametrize("version", versions())
@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_every_document_validates_against_every_schema(name: str, version: str) -> None:
    errors = validate(schema(version), parse(DOCUMENTS[name]))
    assert not errors, f"{name} is invalid for API {version}: {[e.message for e in errors]}"


@pytest.mark.parametrize("version", versions())
@pytest.mark.parametrize("name", BULK)
def test_bulk_queries_meet_shopifys_bulk_rules(name: str, version: str) -> None:
    plan = plan_bulk_query(version, DOCUMENTS[name])  # raises BulkQueryError with the reason
    assert plan.kind in ("customers", "orders")


def test_a_field_the_newest_schema_lacks_fails_validation() -> None:
    """The check above has teeth: one unknown field in a real document is caught."""
    broken = DOCUMENTS["CUSTOMERS_QUERY"].replace("verifiedEmail", "verifiedEmail favouriteColour")
    errors = validate(schema(newest_version()), parse(broken))
    assert [e.message for e in errors] == [
        "Cannot query field 'favouriteColour' on type 'Customer'."
    ]


class _Deprecated(Visitor):
    """Collects `Type.field` -> deprecation reason of the fields a document selects."""

    def __init__(self, info: TypeInfo, found: dict[str, str]) -> None:
        super().__init__()
        self.info, self.found = info, found

    def enter_field(self, node, *_) -> None:
        definition, parent = self.info.get_field_def(), self.info.get_parent_type()
        if definition is not None and definition.deprecation_reason:
            self.found[f"{parent.name}.{node.name.value}"] = definition.deprecation_reason


def deprecated_fields(version: str) -> dict[str, str]:
    """`Type.field` -> deprecation reason, for every deprecated field a document selects."""
    found: dict[str, str] = {}
    for text in DOCUMENTS.values():
        info = TypeInfo(schema(version))
        visit(parse(text), TypeInfoVisitor(info, _Deprecated(info, found)))
    return found


@pytest.mark.parametrize("version", versions())
def test_deprecated_fields_in_use_are_listed_with_their_replacements(version: str) -> None:
    guide = (REPO / "docs" / "connecting-shopify.md").read_text()
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `([\w.]+)` \|.*$", guide, re.M)}
    for field, reason in deprecated_fields(version).items():
        assert field in rows, f"{field} (deprecated in {version}) is not in the guide"
        assert version in rows[field] and " ".join(reason.split()) in rows[field]
