"""Shopify Admin GraphQL client: bulk and incremental pulls of customers and orders, webhooks.

Everything is fetched through the official `shopify` SDK's session and GraphQL endpoint and
handed out in the REST resource shape (numeric ids, snake_case, `tags` as "a, b", money as
strings), the shape of `customers.jsonl`/`orders.jsonl` and of Shopify's webhook payloads, so one
mapping downstream serves API pulls, webhooks and files alike.
"""

from __future__ import annotations

import functools
import http.client
import json
import logging
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson
import shopify

from crm_pipeline.shopify_admin_schema import newest_version
from crm_pipeline.sources.errors import (
    BadRequest,
    BulkOperationFailed,
    RateLimited,
    RetriableSourceError,
    SourceError,
    Timeout,
)
from crm_pipeline.sources.http import DEFAULT_POLICY, RetryPolicy, error_for_status

log = logging.getLogger(__name__)

# the newest Admin API version whose published schema ships in crm_pipeline/shopify_admin_schema
# (every document below is validated against it in tests)
DEFAULT_API_VERSION = newest_version()

# the SDK keeps the active session in class and thread-local state: switch it under a lock
_SESSION_LOCK = threading.Lock()

_BLOCK = 1 << 20
_TRANSPORT_ERRORS = (
    urllib.error.URLError,
    http.client.HTTPException,
    ConnectionError,
    TimeoutError,
    socket.timeout,
)

# ---------------------------------------------------------------------------------------------
# Queries (validated against Shopify's published schemas: test_shopify_documents.py)
# ---------------------------------------------------------------------------------------------

_ADDRESS = """id firstName lastName company address1 address2 city province provinceCode
  country countryCodeV2 zip phone name latitude longitude"""

_CUSTOMER = f"""
  id email firstName lastName phone state tags note verifiedEmail taxExempt
  emailMarketingConsent {{ marketingState marketingOptInLevel consentUpdatedAt }}
  smsMarketingConsent {{
    marketingState marketingOptInLevel consentUpdatedAt consentCollectedFrom
  }}
  addresses {{ {_ADDRESS} }}
  defaultAddress {{ {_ADDRESS} }}
  createdAt updatedAt numberOfOrders amountSpent {{ amount currencyCode }}
  multipassIdentifier taxExemptions lastOrder {{ id }}
"""

_ORDER = """
  id name email createdAt updatedAt processedAt cancelledAt cancelReason tags
  customer { id }
  displayFinancialStatus displayFulfillmentStatus currencyCode
  totalPriceSet { shopMoney { amount currencyCode } }
  subtotalPriceSet { shopMoney { amount currencyCode } }
  totalTaxSet { shopMoney { amount currencyCode } }
  sourceName
"""

_LINE_ITEM = """
  id title vendor quantity sku
  product { id productType }
  originalUnitPriceSet { shopMoney { amount currencyCode } }
"""

_REFUND = "id createdAt note totalRefundedSet { shopMoney { amount currencyCode } }"
_REFUND_LINE_ITEM = "lineItem { id } quantity"

CUSTOMERS_QUERY = f"""
query CustomersUpdatedSince($first: Int!, $after: String, $query: String) {{
  customers(first: $first, after: $after, query: $query, sortKey: UPDATED_AT) {{
    edges {{ cursor node {{ {_CUSTOMER} }} }}
    pageInfo {{ hasNextPage endCursor }}
  }}
}}"""

ORDERS_QUERY = f"""
query OrdersUpdatedSince($first: Int!, $after: String, $query: String, $lineItemsFirst: Int!) {{
  orders(first: $first, after: $after, query: $query, sortKey: UPDATED_AT) {{
    edges {{ cursor node {{
      {_ORDER}
      lineItems(first: $lineItemsFirst) {{
        nodes {{ {_LINE_ITEM} }}
        pageInfo {{ hasNextPage endCursor }}
      }}
      refunds {{ {_REFUND} refundLineItems(first: 50) {{ nodes {{ {_REFUND_LINE_ITEM} }} }} }}
    }} }}
    pageInfo {{ hasNextPage endCursor }}
  }}
}}"""

ORDER_LINE_ITEMS_QUERY = f"""
query OrderLineItems($id: ID!, $first: Int!, $after: String) {{
  node(id: $id) {{
    ... on Order {{
      id
      lineItems(first: $first, after: $after) {{
        nodes {{ {_LINE_ITEM} }}
        pageInfo {{ hasNextPage endCursor }}
      }}
    }}
  }}
}}"""

# bulk queries: nested connections use edges/node and come back as child lines; Shopify refuses
# a connection inside a list field in bulk queries, so refund line items (a connection inside
# the `refunds` list) are looked up afterwards with ORDER_REFUND_LINE_ITEMS_QUERY
BULK_CUSTOMERS = f"{{ customers{{filter}} {{ edges {{ node {{ {_CUSTOMER} }} }} }} }}"
BULK_ORDERS = f"""{{ orders{{filter}} {{ edges {{ node {{
  {_ORDER}
  lineItems {{ edges {{ node {{ {_LINE_ITEM} }} }} }}
  refunds {{ {_REFUND} }}
}} }} }} }}"""

ORDER_REFUND_LINE_ITEMS_QUERY = f"""
query OrderRefundLineItems($ids: [ID!]!, $first: Int!) {{
  nodes(ids: $ids) {{
    ... on Order {{
      id
      refunds {{
        id
        refundLineItems(first: $first) {{
          nodes {{ {_REFUND_LINE_ITEM} }}
          pageInfo {{ hasNextPage }}
        }}
      }}
    }}
  }}
}}"""
# orders per lookup: 10 x (3 + 50 refund line items) points, well under the 1000-point limit;
# an order with a bigger refund is asked again alone with Shopify's largest page
_REFUND_LOOKUP_ORDERS = 10
_MAX_REFUND_LINES = 250

BULK_RUN = """
mutation BulkRunQuery($query: String!) {
  bulkOperationRunQuery(query: $query) {
    bulkOperation { id status }
    userErrors { field message }
  }
}"""

_BULK_FIELDS = """id status errorCode createdAt completedAt objectCount rootObjectCount
  fileSize url partialDataUrl"""

BULK_NODE = f"""
query BulkOperationNode($id: ID!) {{
  node(id: $id) {{ ... on BulkOperation {{ {_BULK_FIELDS} }} }}
}}"""

CURRENT_BULK = f"""
query CurrentBulkOperation {{
  currentBulkOperation(type: QUERY) {{ {_BULK_FIELDS} }}
}}"""

WEBHOOKS_QUERY = """
query WebhookSubscriptions($first: Int!, $after: String) {
  webhookSubscriptions(first: $first, after: $after) {
    edges { cursor node {
      id topic format
      endpoint { __typename ... on WebhookHttpEndpoint { callbackUrl } }
    } }
    pageInfo { hasNextPage endCursor }
  }
}"""

WEBHOOK_CREATE = """
mutation WebhookSubscriptionCreate(
  $topic: WebhookSubscriptionTopic!, $webhookSubscription: WebhookSubscriptionInput!
) {
  webhookSubscriptionCreate(topic: $topic, webhookSubscription: $webhookSubscription) {
    webhookSubscription { id topic format }
    userErrors { field message }
  }
}"""

WEBHOOK_UPDATE = """
mutation WebhookSubscriptionUpdate($id: ID!, $webhookSubscription: WebhookSubscriptionInput!) {
  webhookSubscriptionUpdate(id: $id, webhookSubscription: $webhookSubscription) {
    webhookSubscription { id topic format }
    userErrors { field message }
  }
}"""

# the topics this API version can subscribe (introspection: also right for versions newer
# than the schemas shipped with the package)
WEBHOOK_TOPICS_QUERY = """
query WebhookTopics {
  __type(name: "WebhookSubscriptionTopic") { enumValues { name } }
}"""

# Shopify's mandatory privacy topics: an app configures them in shopify.app.toml (or the
# Partner Dashboard); the Admin API cannot subscribe them
COMPLIANCE_TOPICS = ("customers/data_request", "customers/redact", "shop/redact")

_TERMINAL_BULK = {"COMPLETED", "FAILED", "CANCELED", "EXPIRED"}

# ---------------------------------------------------------------------------------------------
# GraphQL node -> REST resource shape
# ---------------------------------------------------------------------------------------------


def gid_to_id(gid: str | None) -> int | None:
    """`gid://shopify/Customer/123?model_name=X` -> 123."""
    if not gid:
        return None
    return int(str(gid).rsplit("/", 1)[-1].split("?", 1)[0])


def _lower(value: str | None) -> str | None:
    return value.lower() if isinstance(value, str) else value


_SNAKE = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


@functools.lru_cache(maxsize=1024)
def _snake(key: str) -> str:
    """camelCase -> snake_case; cached: the same few dozen keys repeat on every record."""
    return _SNAKE.sub("_", key).lower()


def _address_to_rest(
    node: dict | None, customer_id: int | None, default_id: int | None
) -> dict | None:
    if not node:
        return None
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "id":
            out["id"] = gid_to_id(value)
            out["customer_id"] = customer_id
        else:
            out[_ADDRESS_KEYS.get(key) or _snake(key)] = value
    out["default"] = out.get("id") is not None and out.get("id") == default_id
    return out


# REST names of the GraphQL address fields (a dict lookup per key instead of a call)
_ADDRESS_KEYS = {key: _snake(key) for key in _ADDRESS.split() if key != "id"}
_ADDRESS_KEYS["countryCodeV2"] = "country_code"


def _default_address(
    default: dict | None,
    nodes: list[dict],
    converted: list[dict | None],
    customer_id: int | None,
    default_id: int | None,
) -> dict | None:
    """The default address, converted once: it is usually one of `addresses`, field for field."""
    for node, address in zip(nodes, converted, strict=True):
        if node == default and address is not None:
            return dict(address)
    return _address_to_rest(default, customer_id, default_id)


def _consent_to_rest(node: dict | None) -> dict | None:
    if not node:
        return None
    out = {
        "state": _lower(node.get("marketingState")),
        "opt_in_level": _lower(node.get("marketingOptInLevel")),
        "consent_updated_at": node.get("consentUpdatedAt"),
    }
    if "consentCollectedFrom" in node:
        out["consent_collected_from"] = node.get("consentCollectedFrom")
    return out


def customer_to_rest(node: dict) -> dict:
    """A GraphQL `Customer` node -> the REST customer (customers/create webhook shape)."""
    cid = gid_to_id(node["id"])
    default = node.get("defaultAddress") or None
    default_id = gid_to_id(default.get("id")) if default else None
    spent = node.get("amountSpent") or {}
    tags = node.get("tags") or []
    nodes = node.get("addresses") or []
    addresses = [_address_to_rest(a, cid, default_id) for a in nodes]
    return {
        "id": cid,
        "admin_graphql_api_id": node["id"],
        "email": node.get("email"),
        "first_name": node.get("firstName"),
        "last_name": node.get("lastName"),
        "phone": node.get("phone"),
        "state": _lower(node.get("state")),
        "tags": ", ".join(tags) if isinstance(tags, list) else tags,
        "note": node.get("note"),
        "verified_email": node.get("verifiedEmail"),
        "tax_exempt": node.get("taxExempt"),
        "email_marketing_consent": _consent_to_rest(node.get("emailMarketingConsent")),
        "sms_marketing_consent": _consent_to_rest(node.get("smsMarketingConsent")),
        "addresses": addresses,
        "default_address": _default_address(default, nodes, addresses, cid, default_id),
        "created_at": node.get("createdAt"),
        "updated_at": node.get("updatedAt"),
        "orders_count": int(node.get("numberOfOrders") or 0),
        "total_spent": spent.get("amount"),
        "currency": spent.get("currencyCode"),
        "multipass_identifier": node.get("multipassIdentifier"),
        "tax_exemptions": [_lower(t) for t in node.get("taxExemptions") or []],
        "last_order_id": gid_to_id((node.get("lastOrder") or {}).get("id")),
    }


_FULFILLMENT = {"UNFULFILLED": None, "FULFILLED": "fulfilled", "PARTIALLY_FULFILLED": "partial"}


def _shop_money(node: dict | None) -> dict:
    return ((node or {}).get("shopMoney")) or {}


def _nodes(conn: Any) -> list[dict]:
    """Children in any shape we receive: a list (bulk), `{nodes}` or `{edges{node}}`."""
    if conn is None:
        return []
    if isinstance(conn, list):
        return conn
    if "nodes" in conn:
        return conn["nodes"] or []
    return [e["node"] for e in conn.get("edges") or []]


def _line_item_to_rest(node: dict) -> dict:
    product = node.get("product") or {}
    return {
        "id": gid_to_id(node.get("id")),
        "admin_graphql_api_id": node.get("id"),
        "product_id": gid_to_id(product.get("id")),
        "title": node.get("title"),
        "vendor": node.get("vendor"),
        "product_type": product.get("productType"),
        "quantity": node.get("quantity"),
        "sku": node.get("sku"),
        "price": _shop_money(node.get("originalUnitPriceSet")).get("amount"),
    }


def _decimal(value: str) -> Decimal | None:
    try:
        return Decimal(value)
    except InvalidOperation:
        return None


def _refund_to_rest(node: dict) -> dict:
    amount = _shop_money(node.get("totalRefundedSet")).get("amount")
    has_amount = amount is not None and _decimal(amount) != 0
    transactions = [{"amount": amount, "kind": "refund", "status": "success"}] if has_amount else []
    return {
        "id": gid_to_id(node.get("id")),
        "admin_graphql_api_id": node.get("id"),
        "created_at": node.get("createdAt"),
        "note": node.get("note"),
        # GraphQL gives the refunded total; one refund transaction carries it
        "transactions": transactions,
        "refund_line_items": [
            {
                "line_item_id": gid_to_id((rli.get("lineItem") or {}).get("id")),
                "quantity": rli.get("quantity"),
            }
            for rli in _nodes(node.get("refundLineItems"))
        ],
    }


def order_to_rest(node: dict) -> dict:
    """A GraphQL `Order` node (children attached) -> the REST order (orders/create shape)."""
    total = _shop_money(node.get("totalPriceSet"))
    customer = node.get("customer") or None
    fulfillment = node.get("displayFulfillmentStatus")
    tags = node.get("tags") or []
    return {
        "id": gid_to_id(node["id"]),
        "admin_graphql_api_id": node["id"],
        "name": node.get("name"),
        "customer": {"id": gid_to_id(customer["id"])} if customer else None,
        "email": node.get("email"),
        "created_at": node.get("createdAt"),
        "updated_at": node.get("updatedAt"),
        "processed_at": node.get("processedAt"),
        "cancelled_at": node.get("cancelledAt"),
        "cancel_reason": _lower(node.get("cancelReason")),
        "financial_status": _lower(node.get("displayFinancialStatus")),
        "fulfillment_status": _FULFILLMENT.get(fulfillment, _lower(fulfillment)),
        "total_price": total.get("amount"),
        "subtotal_price": _shop_money(node.get("subtotalPriceSet")).get("amount"),
        "total_tax": _shop_money(node.get("totalTaxSet")).get("amount"),
        "source_name": node.get("sourceName"),
        "currency": node.get("currencyCode") or total.get("currencyCode"),
        "tags": ", ".join(tags) if isinstance(tags, list) else tags,
        "line_items": [_line_item_to_rest(li) for li in _nodes(node.get("lineItems"))],
        "refunds": [
            {**_refund_to_rest(r), "order_id": gid_to_id(node["id"])}
            for r in node.get("refunds") or []
        ],
    }


def webhook_topic(topic: str) -> str:
    """`customers/create`, `customer.tags_added` (the header forms) or `CUSTOMERS_CREATE` -> the
    `WebhookSubscriptionTopic` value (`CUSTOMERS_CREATE`, `CUSTOMER_TAGS_ADDED`)."""
    return topic.strip().replace("/", "_").replace(".", "_").upper()


def compliance_toml(address: str, api_version: str) -> str:
    """The `shopify.app.toml` lines that subscribe Shopify's compliance topics to `address`."""
    topics = ", ".join(f'"{t}"' for t in COMPLIANCE_TOPICS)
    return (
        f'[webhooks]\napi_version = "{api_version}"\n\n'
        f"  [[webhooks.subscriptions]]\n"
        f"  compliance_topics = [{topics}]\n"
        f'  uri = "{address}"\n'
    )


def _search_since(since: datetime) -> str:
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return f"updated_at:>='{since.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}'"


# ---------------------------------------------------------------------------------------------
# Client
# ---------------------------------------------------------------------------------------------


class _GraphQL(shopify.GraphQL):
    """The SDK's GraphQL endpoint, with a socket timeout and without printing error bodies.

    `shopify.GraphQL.execute` calls `urlopen` with no timeout (a hung connection would block a
    run forever) and prints failed response bodies to stdout; the request itself is unchanged.
    """

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.timeout = timeout

    def execute(
        self, query: str, variables: dict | None = None, operation_name: str | None = None
    ) -> str:
        headers = self.merge_headers(
            {"Accept": "application/json", "Content-Type": "application/json"}, self.headers
        )
        data = {"query": query, "variables": variables, "operationName": operation_name}
        req = urllib.request.Request(self.endpoint, json.dumps(data).encode("utf-8"), headers)
        with urllib.request.urlopen(req, timeout=self.timeout) as response:
            return response.read().decode("utf-8")


class ShopifyClient:
    """Pulls customers and orders from one shop (or the sandbox, when `api_url` is set)."""

    def __init__(
        self,
        shop: str | None,
        access_token: str,
        api_version: str = DEFAULT_API_VERSION,
        api_url: str | None = None,
        timeout: float = 30,
        *,
        retry_policy: RetryPolicy = DEFAULT_POLICY,
        page_size: int = 100,
        orders_page_size: int = 8,
        line_items_page_size: int = 50,
        bulk_poll_max: float = 10.0,
        bulk_timeout: float = 6 * 3600,
    ) -> None:
        self.session = shopify.Session(shop or "sandbox", api_version, access_token)
        self.api_version = api_version
        self.api_url = api_url.rstrip("/") if api_url else None
        self.timeout = timeout
        self.policy = retry_policy
        self.page_size = page_size
        self.orders_page_size = orders_page_size
        self.line_items_page_size = line_items_page_size
        self.bulk_poll_max = bulk_poll_max
        self.bulk_timeout = bulk_timeout
        # last throttleStatus seen, to pace requests before the bucket runs dry
        self._bucket: tuple[float, float, float] | None = None  # (available, restore, at)
        self._bucket_lock = threading.Lock()

    # -- transport ---------------------------------------------------------------------------

    def _endpoint(self) -> _GraphQL:
        with _SESSION_LOCK:
            shopify.ShopifyResource.activate_session(self.session)
            if self.api_url:
                shopify.ShopifyResource.set_site(f"{self.api_url}/admin/api/{self.api_version}")
            return _GraphQL(self.timeout)

    def _pace(self, cost: int) -> None:
        with self._bucket_lock:
            if self._bucket is None:
                return
            available, restore, at = self._bucket
        now = time.monotonic()
        available += (now - at) * restore
        if available < cost and restore > 0:
            time.sleep((cost - available) / restore)

    def _note_cost(self, payload: dict) -> dict | None:
        cost = (payload.get("extensions") or {}).get("cost") or None
        status = (cost or {}).get("throttleStatus")
        if status:
            with self._bucket_lock:
                self._bucket = (
                    float(status.get("currentlyAvailable", 0)),
                    float(status.get("restoreRate", 50)),
                    time.monotonic(),
                )
        return cost

    def execute(
        self, query: str, variables: dict | None, operation_name: str, *, cost: int = 10
    ) -> dict:
        """Run one GraphQL operation with the retry policy; returns `data`."""

        def attempt() -> dict:
            self._pace(cost)
            endpoint = self._endpoint()
            try:
                raw = endpoint.execute(query, variables, operation_name)
            except urllib.error.HTTPError as exc:
                body = exc.read()[:500].decode("utf-8", "replace")
                err = error_for_status(
                    exc.code, f"Shopify HTTP {exc.code}: {body}", exc.headers.get("Retry-After")
                )
                raise (err or SourceError(body, status=exc.code)) from exc
            except _TRANSPORT_ERRORS as exc:
                raise Timeout(f"Shopify request failed: {exc!r}") from exc
            try:
                payload = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise RetriableSourceError(f"Shopify sent invalid JSON: {raw[:200]!r}") from exc
            cost_info = self._note_cost(payload)
            errors = payload.get("errors")
            if errors:
                codes = {(e.get("extensions") or {}).get("code") for e in errors}
                if "THROTTLED" in codes:
                    status = (cost_info or {}).get("throttleStatus") or {}
                    requested = (cost_info or {}).get("requestedQueryCost") or cost
                    restore = float(status.get("restoreRate") or 50)
                    missing = requested - float(status.get("currentlyAvailable") or 0)
                    raise RateLimited(
                        "Shopify GraphQL throttled", retry_after=max(0.0, missing / restore)
                    )
                if "INTERNAL_SERVER_ERROR" in codes:
                    raise RetriableSourceError(f"Shopify GraphQL error: {errors}")
                raise BadRequest(f"Shopify GraphQL {operation_name} failed: {errors}")
            return payload.get("data") or {}

        return self.policy.call(attempt)

    # -- paginated incremental pulls -----------------------------------------------------------

    def _paginate(
        self, query: str, operation: str, root: str, variables: dict, cost: int
    ) -> Iterator[dict]:
        after = None
        while True:
            data = self.execute(query, {**variables, "after": after}, operation, cost=cost)
            conn = data[root]
            for edge in conn["edges"]:
                yield edge["node"]
            info = conn["pageInfo"]
            if not info["hasNextPage"]:
                return
            after = info["endCursor"]

    def customers_updated_since(self, since: datetime) -> Iterator[dict]:
        """Customers with updated_at >= since (Shopify's `>` is inclusive), oldest first."""
        variables = {"first": self.page_size, "query": _search_since(since)}
        cost = 2 + self.page_size * 4
        for node in self._paginate(
            CUSTOMERS_QUERY, "CustomersUpdatedSince", "customers", variables, cost
        ):
            yield customer_to_rest(node)

    def orders_updated_since(self, since: datetime) -> Iterator[dict]:
        """Orders with updated_at >= since, oldest first, with all their line items."""
        variables = {
            "first": self.orders_page_size,
            "lineItemsFirst": self.line_items_page_size,
            "query": _search_since(since),
        }
        cost = 2 + self.orders_page_size * (13 + 2 * self.line_items_page_size)
        for node in self._paginate(ORDERS_QUERY, "OrdersUpdatedSince", "orders", variables, cost):
            items = node.get("lineItems") or {}
            if (items.get("pageInfo") or {}).get("hasNextPage"):
                node["lineItems"] = {
                    "nodes": list(_nodes(items))
                    + list(self._more_line_items(node["id"], items["pageInfo"]["endCursor"]))
                }
            yield order_to_rest(node)

    def _more_line_items(self, order_gid: str, after: str) -> Iterator[dict]:
        first = 100
        while True:
            data = self.execute(
                ORDER_LINE_ITEMS_QUERY,
                {"id": order_gid, "first": first, "after": after},
                "OrderLineItems",
                cost=3 + first * 2,
            )
            conn = (data.get("node") or {}).get("lineItems") or {}
            yield from _nodes(conn)
            info = conn.get("pageInfo") or {}
            if not info.get("hasNextPage"):
                return
            after = info["endCursor"]

    # -- bulk operations -----------------------------------------------------------------------

    def bulk_customers(self, since: datetime | None = None) -> Iterator[dict]:
        """Every customer (or those updated since), through one bulk operation."""
        for obj in self._bulk_objects(BULK_CUSTOMERS, since):
            if "__parentId" not in obj:
                yield customer_to_rest(obj)

    def bulk_customer_lines(self, since: datetime | None = None) -> Iterator[bytes]:
        """The JSONL lines of a customers bulk operation, undecoded: for decoding elsewhere
        (`mapping.shopify.map_bulk_customer_line` in ingest/workers.py)."""
        return self._bulk_lines(BULK_CUSTOMERS, since)

    def bulk_orders(self, since: datetime | None = None) -> Iterator[dict]:
        """Every order with its line items and refunds, through one bulk operation (and a
        lookup of the refund line items of the orders that have refunds)."""
        pending: list[dict] = []
        refunded = 0
        for order in self._bulk_order_nodes(since):
            pending.append(order)
            refunded += bool(order.get("refunds"))
            if refunded >= _REFUND_LOOKUP_ORDERS or len(pending) >= 1000:
                yield from self._with_refund_line_items(pending)
                pending, refunded = [], 0
        yield from self._with_refund_line_items(pending)

    def _bulk_order_nodes(self, since: datetime | None) -> Iterator[dict]:
        """Order nodes of a bulk operation, their line item lines attached."""
        current: dict | None = None
        for obj in self._bulk_objects(BULK_ORDERS, since):
            parent = obj.pop("__parentId", None)
            if parent is None:
                if current is not None:
                    yield current
                current = obj
                current["lineItems"] = []
            elif current is not None and parent == current["id"]:
                current["lineItems"].append(obj)
            else:
                # children always follow their parent in Shopify's format; anything else means
                # the file is not what we asked for, and assembling it would lose data silently
                raise BulkOperationFailed(f"bulk line with unknown parent {parent}")
        if current is not None:
            yield current

    def _with_refund_line_items(self, orders: list[dict]) -> Iterator[dict]:
        ids = [o["id"] for o in orders if o.get("refunds")]
        lines: dict[str, list[dict]] = {}
        for start in range(0, len(ids), _REFUND_LOOKUP_ORDERS):
            lines.update(self._refund_line_items(ids[start : start + _REFUND_LOOKUP_ORDERS]))
        for order in orders:
            for refund in order.get("refunds") or []:
                refund["refundLineItems"] = lines.get(refund["id"], [])
            yield order_to_rest(order)

    def _refund_line_items(self, order_ids: list[str], first: int = 50) -> dict[str, list[dict]]:
        """refund gid -> its refund line items, for these orders; an order with a refund of
        more than `first` is asked again alone with the largest page Shopify allows."""
        data = self.execute(
            ORDER_REFUND_LINE_ITEMS_QUERY,
            {"ids": order_ids, "first": first},
            "OrderRefundLineItems",
            cost=3 + len(order_ids) * (3 + first),
        )
        out: dict[str, list[dict]] = {}
        more: list[str] = []
        for order in data.get("nodes") or []:
            for refund in (order or {}).get("refunds") or []:
                conn = refund.get("refundLineItems") or {}
                if (conn.get("pageInfo") or {}).get("hasNextPage"):
                    more.append(order["id"])
                out[refund["id"]] = _nodes(conn)
        for order_id in dict.fromkeys(more):
            if first >= _MAX_REFUND_LINES:
                raise BulkOperationFailed(
                    f"order {order_id} has a refund of more than {first} line items"
                )
            out.update(self._refund_line_items([order_id], _MAX_REFUND_LINES))
        return out

    def _bulk_objects(self, template: str, since: datetime | None) -> Iterator[dict]:
        for line in self._bulk_lines(template, since):
            yield orjson.loads(line)

    def _bulk_lines(self, template: str, since: datetime | None) -> Iterator[bytes]:
        search = f'(query: "{_search_since(since)}")' if since else ""
        op = self._start_bulk(template.replace("{filter}", search))
        final = self._wait_bulk(op["id"])
        status = final["status"]
        if status != "COMPLETED" or final.get("partialDataUrl"):
            raise BulkOperationFailed(
                f"Shopify bulk operation {final['id']} ended {status}"
                f" (errorCode={final.get('errorCode')}, objects={final.get('objectCount')})",
                status=status,
                error_code=final.get("errorCode"),
            )
        if not final.get("url"):
            return  # no objects matched: Shopify gives no file
        yield from self._stream_lines(final["url"])

    def _start_bulk(self, query: str) -> dict:
        deadline = time.monotonic() + self.bulk_timeout
        while True:
            data = self.execute(BULK_RUN, {"query": query}, "BulkRunQuery")
            result = data["bulkOperationRunQuery"]
            errors = result.get("userErrors") or []
            if not errors:
                return result["bulkOperation"]
            messages = "; ".join(e.get("message", "") for e in errors)
            if "already in progress" not in messages or time.monotonic() > deadline:
                raise BadRequest(f"Shopify refused the bulk query: {messages}")
            # one bulk query per shop at a time: wait for the other one, then start ours
            log.info("another bulk operation is running; waiting for it to finish")
            current = self.execute(CURRENT_BULK, {}, "CurrentBulkOperation")
            running = current.get("currentBulkOperation") or {}
            if running.get("id"):
                self._wait_bulk(running["id"])

    def _wait_bulk(self, op_id: str) -> dict:
        delay, started = 0.2, time.monotonic()
        while True:
            node = self.execute(BULK_NODE, {"id": op_id}, "BulkOperationNode").get("node") or {}
            if node.get("status") in _TERMINAL_BULK:
                return node
            if time.monotonic() - started > self.bulk_timeout:
                raise BulkOperationFailed(
                    f"bulk operation {op_id} still {node.get('status')} after "
                    f"{self.bulk_timeout:.0f}s",
                    status=node.get("status"),
                )
            time.sleep(delay)
            delay = min(self.bulk_poll_max, delay * 1.5)

    def _stream_lines(self, url: str) -> Iterator[bytes]:
        """The result file line by line, resuming with a Range request if the stream breaks.

        Read in 1 MiB blocks and split here: iterating the response line by line cost a
        buffered `readline` call per customer."""
        offset, attempt = 0, 0
        while True:
            headers = {"Range": f"bytes={offset}-"} if offset else {}
            try:
                request = urllib.request.Request(url, headers=headers)
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    skip = offset if offset and response.status != 206 else 0
                    pending = b""
                    while block := response.read(_BLOCK):
                        if skip:  # server ignored Range: drop what we have
                            cut = min(skip, len(block))
                            block, skip = block[cut:], skip - cut
                        lines = (pending + block).split(b"\n")
                        pending = lines.pop()
                        for line in lines:
                            offset += len(line) + 1
                            if line.strip():
                                yield line
                    if response.length:  # closed short of its Content-Length
                        raise http.client.IncompleteRead(pending, response.length)
                    if pending:  # a last line without a newline: complete, the body ended
                        offset += len(pending)
                        if pending.strip():
                            yield pending
                return
            except urllib.error.HTTPError as exc:
                err = error_for_status(exc.code, f"bulk result download HTTP {exc.code}")
                if not isinstance(err, RetriableSourceError):
                    raise (err or SourceError(str(exc))) from exc
                failure: Exception = err
            except _TRANSPORT_ERRORS as exc:
                failure = Timeout(f"bulk result download broke at byte {offset}: {exc!r}")
            attempt += 1
            if attempt >= self.policy.max_attempts:
                raise failure
            wait = self.policy.wait_for(attempt, failure)
            log.warning("%s; resuming in %.1fs", failure, wait)
            time.sleep(wait)

    # -- webhooks ----------------------------------------------------------------------------

    def webhook_subscriptions(self) -> list[dict]:
        """Existing subscriptions as {id, topic, format, callback_url}."""
        out = []
        for node in self._paginate(
            WEBHOOKS_QUERY, "WebhookSubscriptions", "webhookSubscriptions", {"first": 100}, 102
        ):
            endpoint = node.get("endpoint") or {}
            out.append(
                {
                    "id": node["id"],
                    "topic": node["topic"],
                    "format": node.get("format"),
                    "callback_url": endpoint.get("callbackUrl") or node.get("callbackUrl"),
                }
            )
        return out

    def webhook_topics(self) -> frozenset[str]:
        """The `WebhookSubscriptionTopic` values of this client's API version."""
        data = self.execute(WEBHOOK_TOPICS_QUERY, {}, "WebhookTopics", cost=1)
        return frozenset(v["name"] for v in ((data.get("__type") or {}).get("enumValues") or []))

    def plan_webhooks(self, address: str, topics: list[str]) -> dict:
        """What `register_webhooks` would do, changing nothing.

        Returns {"create": [TOPIC], "keep": [TOPIC], "update": [{topic, id, from}],
        "skipped": [TOPIC not in this API version], "compliance": [topic]}. The API lists
        only this app's subscriptions, so one for the topic at another address is ours, moved.
        """
        compliance = [t for t in topics if t in COMPLIANCE_TOPICS]
        wanted = list(dict.fromkeys(webhook_topic(t) for t in topics if t not in compliance))
        known = self.webhook_topics()
        by_topic: dict[str, list[dict]] = {}
        for sub in self.webhook_subscriptions():
            by_topic.setdefault(sub["topic"], []).append(sub)
        plan: dict[str, list] = {"create": [], "keep": [], "update": [], "skipped": []}
        for topic in wanted:
            subs = by_topic.get(topic) or []
            if topic not in known:
                plan["skipped"].append(topic)
            elif any(s["callback_url"] == address for s in subs):
                plan["keep"].append(topic)
            elif subs:
                old = subs[0]
                plan["update"].append(
                    {"topic": topic, "id": old["id"], "from": old["callback_url"]}
                )
            else:
                plan["create"].append(topic)
        return {**plan, "compliance": compliance}

    def register_webhooks(self, address: str, topics: list[str], dry_run: bool = False) -> dict:
        """Subscribe `topics` to `address`, idempotently: a subscription already there is kept,
        one of ours at another address is moved, topics this API version lacks are skipped and
        compliance topics are left to shopify.app.toml (`compliance_toml`).

        Returns the plan (`plan_webhooks`) with "created", "kept", "updated" (topics) and, unless
        `dry_run`, the resulting "subscriptions" at `address`.
        """
        plan = self.plan_webhooks(address, topics)
        result = {
            **plan,
            "created": list(plan["create"]),
            "kept": list(plan["keep"]),
            "updated": [u["topic"] for u in plan["update"]],
        }
        if dry_run:
            return result
        for topic in plan["create"]:
            variables = {
                "topic": topic,
                "webhookSubscription": {"callbackUrl": address, "format": "JSON"},
            }
            data = self.execute(WEBHOOK_CREATE, variables, "WebhookSubscriptionCreate")
            errors = data["webhookSubscriptionCreate"].get("userErrors") or []
            if errors:
                if any("already been taken" in (e.get("message") or "") for e in errors):
                    # created meanwhile by someone else: still idempotent
                    result["created"].remove(topic)
                    result["kept"].append(topic)
                    continue
                raise BadRequest(f"could not subscribe {topic} to {address}: {errors}")
        for move in plan["update"]:
            variables = {"id": move["id"], "webhookSubscription": {"callbackUrl": address}}
            data = self.execute(WEBHOOK_UPDATE, variables, "WebhookSubscriptionUpdate")
            errors = data["webhookSubscriptionUpdate"].get("userErrors") or []
            if errors:
                raise BadRequest(f"could not move {move['topic']} to {address}: {errors}")
        subs = [s for s in self.webhook_subscriptions() if s["callback_url"] == address]
        return {**result, "subscriptions": subs}
