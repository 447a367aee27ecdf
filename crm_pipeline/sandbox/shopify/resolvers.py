"""The root fields the sandbox serves, as resolvers over the store and the server's state.

graphql-core's default resolver reads dict keys, and calls a value that is callable with the
field's arguments; so nodes are plain dicts, and the connections inside them (an order's line
items, a refund's line items) are closures that page when selected. A root field of the real
schema that the sandbox does not serve is an error, never a silent null.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from graphql import GraphQLResolveInfo

from crm_pipeline.sandbox.shopify import bulk, webhooks
from crm_pipeline.sandbox.shopify.nodes import InvalidId, customer_node, order_parts, parse_gid
from crm_pipeline.sandbox.shopify.paging import (
    find_by_id,
    list_connection,
    store_connection,
    user_error,
)


@dataclass(frozen=True)
class Context:
    """Per request: the server state, the URL bulk files are served under, the API version."""

    state: Any  # server.SandboxState
    base_url: str
    version: str


def _ctx(info: GraphQLResolveInfo) -> Context:
    return info.context


def _customer(rec: dict) -> dict:
    return {**customer_node(rec), "__typename": "Customer"}


def _paged(items: list[dict]) -> Callable[..., dict]:
    return lambda _info, **args: list_connection(items, args)


def _order(rec: dict) -> dict:
    node, items, refund_children = order_parts(rec)
    node["__typename"] = "Order"
    node["lineItems"] = _paged(items)
    for refund, (_, children) in zip(node["refunds"], refund_children, strict=True):
        refund["refundLineItems"] = _paged(children)
    return node


def _node(ctx: Context, ident: str) -> dict | None:
    try:
        kind, number = parse_gid(ident)
    except InvalidId as exc:
        raise user_error(str(exc)) from exc
    state = ctx.state
    if kind == "Customer":  # deleted customers are not in the index: null, as in Shopify
        rec = find_by_id(state.store.customers, number)
        return _customer(rec) if rec else None
    if kind == "Order":
        rec = find_by_id(state.store.orders, number)
        return _order(rec) if rec else None
    if kind == "BulkOperation":
        return bulk.bulk_node(state.shopify.bulk_ops.get(ident), ctx.base_url)
    if kind == "WebhookSubscription":
        return webhooks.find(state.shopify, ident)
    return None


def _sort_given(info: GraphQLResolveInfo) -> bool:
    return any(a.name.value == "sortKey" for a in info.field_nodes[0].arguments)


def _customers(info: GraphQLResolveInfo, **args: Any) -> dict:
    return store_connection(_ctx(info).state.store.customers, args, _customer, _sort_given(info))


def _orders(info: GraphQLResolveInfo, **args: Any) -> dict:
    return store_connection(_ctx(info).state.store.orders, args, _order, _sort_given(info))


def _node_field(info: GraphQLResolveInfo, id: str) -> dict | None:  # noqa: A002 - field argument
    return _node(_ctx(info), id)


def _nodes(info: GraphQLResolveInfo, ids: list[str]) -> list[dict | None]:
    if len(ids) > 250:
        raise user_error("The `ids` argument accepts at most 250 ids.")
    return [_node(_ctx(info), i) for i in ids]


def _customers_count(info: GraphQLResolveInfo, **_: Any) -> dict:
    """The shop's count; `drop_counted` off leaves the dropped records out of it too."""
    state = _ctx(info).state
    count = len(state.store.customers)
    if not state.config.drop_counted:
        count = max(0, count - state.config.drop_last)
    return {"count": count, "precision": "EXACT"}


def _current_bulk(info: GraphQLResolveInfo, type: str = "QUERY") -> dict | None:  # noqa: A002
    shop = _ctx(info).state.shopify
    if type != "QUERY":
        return None  # the sandbox runs no bulk mutations
    return bulk.bulk_node(shop.bulk_ops.get(shop.current_bulk), _ctx(info).base_url)


def _bulk_run(info: GraphQLResolveInfo, query: str, **_: Any) -> dict:
    ctx = _ctx(info)
    result = bulk.run_query(ctx.state, ctx.version, query)
    op = result["bulkOperation"]
    if op is not None:
        result["bulkOperation"] = bulk.bulk_node(ctx.state.shopify.bulk_ops[op["id"]], ctx.base_url)
    return result


def _webhook_subscriptions(info: GraphQLResolveInfo, **args: Any) -> dict:
    return webhooks.subscriptions(_ctx(info).state.shopify, args)


def _webhook_create(info: GraphQLResolveInfo, topic: str, webhookSubscription: dict) -> dict:  # noqa: N803
    return webhooks.create(_ctx(info).state.shopify, topic, webhookSubscription)


def _webhook_update(info: GraphQLResolveInfo, id: str, webhookSubscription: dict) -> dict:  # noqa: A002, N803
    return webhooks.update(_ctx(info).state.shopify, id, webhookSubscription)


class _Root(dict):
    """Root resolvers by field name; a field of the schema not served here is an error."""

    def get(self, key: str, default: Any = None) -> Any:
        if key not in self:
            raise user_error(f"The sandbox does not serve the field '{key}'.", "NOT_IMPLEMENTED")
        return self[key]


ROOT = _Root(
    customers=_customers,
    orders=_orders,
    node=_node_field,
    nodes=_nodes,
    customersCount=_customers_count,
    currentBulkOperation=_current_bulk,
    webhookSubscriptions=_webhook_subscriptions,
    bulkOperationRunQuery=_bulk_run,
    webhookSubscriptionCreate=_webhook_create,
    webhookSubscriptionUpdate=_webhook_update,
)
