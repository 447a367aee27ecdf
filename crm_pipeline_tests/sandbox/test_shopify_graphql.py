"""The sandbox's Shopify side answers like the real Admin API: by Shopify's published schema.

Raw HTTP here (not the client), so what is checked is what the sandbox answers, whatever the
client would make of it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from crm_pipeline.sandbox.server import SandboxServer
from crm_pipeline.shopify_admin_schema import newest_version, versions
from crm_pipeline_tests.sources.conftest import DELETED, write_store

HEADERS = {"X-Shopify-Access-Token": "shpat_test", "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    root = tmp_path_factory.mktemp("store")
    write_store(root)
    with SandboxServer(Path(root), bulk_seconds=0.05) as server:
        yield server


def _post(server: SandboxServer, body, version: str | None = None) -> httpx.Response:
    url = f"{server.url}/admin/api/{version or newest_version()}/graphql.json"
    if isinstance(body, bytes):
        return httpx.post(url, content=body, headers=HEADERS, timeout=30)
    return httpx.post(url, json=body, headers=HEADERS, timeout=30)


# named like the pipeline's own query: the old by-name dispatcher answered it regardless
UNKNOWN_FIELD = """
query CustomersUpdatedSince($first: Int!) {
  customers(first: $first) { edges { node { id favouriteColour } } }
}"""


def test_a_field_the_schema_lacks_is_refused_with_errors_and_no_data(sandbox) -> None:
    reply = _post(sandbox, {"query": UNKNOWN_FIELD, "variables": {"first": 2}})
    assert reply.status_code == 200
    body = reply.json()
    assert "data" not in body
    [error] = body["errors"]
    assert error["message"] == "Field 'favouriteColour' doesn't exist on type 'Customer'"
    assert error["extensions"] == {
        "code": "undefinedField",
        "typeName": "Customer",
        "fieldName": "favouriteColour",
    }


def test_a_wrong_argument_type_and_a_syntax_error_are_200_with_errors(sandbox) -> None:
    wrong = 'query { customers(first: "two") { edges { node { id } } } }'
    broken = "query { customers(first: 2) { edges { node { id } }"
    for query in (wrong, broken):
        reply = _post(sandbox, {"query": query})
        assert reply.status_code == 200
        assert reply.json()["errors"] and "data" not in reply.json()


@pytest.mark.parametrize("body", [b"{not json", b'{"variables": {}}', b"[1, 2]"])
def test_an_unparseable_body_is_400(sandbox, body: bytes) -> None:
    reply = _post(sandbox, body)
    assert reply.status_code == 400
    assert reply.json() == {"errors": {"query": "Required parameter missing or invalid"}}


def test_unknown_api_versions_are_404_and_known_ones_served(sandbox) -> None:
    query = {"query": "{ customers(first: 1) { nodes { id } } }"}
    assert _post(sandbox, query, "2019-04").status_code == 404
    assert _post(sandbox, query, "unstable").status_code == 404
    for version in versions():
        reply = _post(sandbox, query, version)
        assert reply.status_code == 200
        assert reply.json()["data"]["customers"]["nodes"][0]["id"].startswith("gid://shopify/")


def test_the_version_in_the_path_decides_what_is_valid(sandbox) -> None:
    """CUSTOMERS_PURCHASING_SUMMARY is a topic of 2025-01 but not of 2024-10."""
    create = {
        "query": """mutation($topic: WebhookSubscriptionTopic!, $url: URL!) {
          webhookSubscriptionCreate(topic: $topic, webhookSubscription: {callbackUrl: $url}) {
            webhookSubscription { id topic } userErrors { field message }
          }
        }""",
        "variables": {"topic": "CUSTOMERS_PURCHASING_SUMMARY", "url": "https://x.test/hook"},
    }
    old = _post(sandbox, create, "2024-10").json()
    assert "data" not in old
    assert "CUSTOMERS_PURCHASING_SUMMARY" in old["errors"][0]["message"]
    new = _post(sandbox, create, "2025-01").json()
    assert new["data"]["webhookSubscriptionCreate"]["webhookSubscription"]["topic"] == (
        "CUSTOMERS_PURCHASING_SUMMARY"
    )


def test_nodes_point_lookup_answers_null_for_deleted_customers(sandbox) -> None:
    (deleted,) = DELETED
    ids = [
        "gid://shopify/Customer/1001",
        f"gid://shopify/Customer/{deleted}",
        "gid://shopify/Order/5001",
        "gid://shopify/Customer/999999",
    ]
    query = """query($ids: [ID!]!) {
      nodes(ids: $ids) {
        __typename
        ... on Customer { id updatedAt }
        ... on Order { id lineItems(first: 2) { nodes { title } } }
      }
    }"""
    body = _post(sandbox, {"query": query, "variables": {"ids": ids}}).json()
    assert "errors" not in body, body
    customer, gone, order, missing = body["data"]["nodes"]
    assert customer["__typename"] == "Customer" and customer["id"] == ids[0]
    assert customer["updatedAt"].endswith("Z")
    assert gone is None and missing is None
    assert order["__typename"] == "Order" and order["lineItems"]["nodes"][0]["title"]
    assert body["extensions"]["cost"]["requestedQueryCost"] >= 1


def test_only_selected_fields_are_answered_and_cost_is_reported(sandbox) -> None:
    query = "{ customers(first: 3) { edges { node { id email } } pageInfo { hasNextPage } } }"
    body = _post(sandbox, {"query": query}).json()
    nodes = [e["node"] for e in body["data"]["customers"]["edges"]]
    assert len(nodes) == 3 and all(set(n) == {"id", "email"} for n in nodes)
    cost = body["extensions"]["cost"]
    assert cost["requestedQueryCost"] == 2 + 3 and cost["actualQueryCost"] == 2 + 3


def _bulk(sandbox, query: str) -> dict:
    run = """mutation($q: String!) {
      bulkOperationRunQuery(query: $q) { bulkOperation { id } userErrors { field message } }
    }"""
    body = _post(sandbox, {"query": run, "variables": {"q": query}}).json()
    return body["data"]["bulkOperationRunQuery"]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (
            "{ customers { edges { node { id favouriteColour } } } }",
            "Invalid bulk query: Field 'favouriteColour' doesn't exist on type 'Customer'",
        ),
        ("{ shop { name } }", "Bulk queries must contain at least one connection."),
        (
            """{ orders { edges { node { id
                lineItems { edges { node { id } } }
                metafields { edges { node { id } } }
                fulfillmentOrders { edges { node { id } } }
                events { edges { node { id } } }
                discountApplications { edges { node { index } } }
            } } } }""",
            "Bulk queries cannot contain more than 5 connections.",
        ),
        (
            """{ customers { edges { node { id
                orders { edges { node { id lineItems { edges { node { id } } } } } }
            } } } }""",
            "Bulk queries cannot contain connections with a nesting depth greater than 2.",
        ),
        (  # what the pipeline's bulk orders query asked before: refunds is a list
            """{ orders { edges { node { id
                refunds { id refundLineItems { edges { node { quantity } } } }
            } } } }""",
            "Queries that contain a connection field within a list field are not currently "
            "supported: refunds.refundLineItems.",
        ),
    ],
)
def test_bulk_queries_are_validated_with_shopifys_bulk_rules(sandbox, query, message) -> None:
    result = _bulk(sandbox, query)
    assert result["bulkOperation"] is None
    assert result["userErrors"] == [{"field": ["query"], "message": message}]


def test_a_valid_bulk_query_starts_an_operation(sandbox) -> None:
    result = _bulk(
        sandbox, '{ customers(query: "updated_at:>=2024-01-10") { edges { node { id } } } }'
    )
    assert result["userErrors"] == []
    assert result["bulkOperation"]["id"].startswith("gid://shopify/BulkOperation/")


def test_a_root_field_the_sandbox_does_not_serve_is_an_error_not_null(sandbox) -> None:
    body = _post(sandbox, {"query": "{ shop { name } }"}).json()
    assert body["errors"][0]["extensions"]["code"] == "NOT_IMPLEMENTED"
