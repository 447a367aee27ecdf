"""Shopify's calculated query cost and leaky bucket, as the sandbox prices requests.

Requested cost is computed from the validated document before it runs, as Shopify does:
a connection costs 2 plus `first` times what one of its nodes costs (nested connections
multiply), an object outside a connection costs 1, scalars and enums nothing, a mutation 10.
(Shopify also charges the objects inside a node; the sandbox leaves them out, so its prices
stay near what the client estimates.) The actual cost is the same count over what came back;
the difference is refunded to the bucket.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    GraphQLObjectType,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    get_named_type,
    is_composite_type,
    value_from_ast_untyped,
)

from crm_pipeline.sandbox.shopify.schema import fragments_of, selected_fields

MAX_COST = 1000
MUTATION_COST = 10
# (bucket size, points restored per second) by the shop's plan, from Shopify's rate-limit page
PLANS = {"standard": (2000.0, 100.0), "advanced": (4000.0, 200.0), "plus": (20000.0, 1000.0)}


class CostBucket:
    """The shop's leaky bucket: requested cost is taken up front, the unused part refunded."""

    def __init__(self, throttle: bool = True, plan: str = "standard") -> None:
        self.throttle = throttle
        self.size, self.rate = PLANS[plan]
        self.level = self.size
        self._at = time.monotonic()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.size, self.level + (now - self._at) * self.rate)
        self._at = now

    def take(self, requested: int) -> bool:
        with self._lock:
            self._refill()
            if self.throttle and self.level < requested:
                return False
            self.level -= requested
            return True

    def refund(self, amount: int) -> float:
        with self._lock:
            self._refill()
            self.level = min(self.size, self.level + max(0, amount))
            return self.level

    def available(self) -> float:
        with self._lock:
            self._refill()
            return self.level

    def extension(self, requested: int, actual: int, available: float) -> dict:
        """`extensions.cost` of a response, as Shopify sends it."""
        return {
            "cost": {
                "requestedQueryCost": requested,
                "actualQueryCost": actual,
                "throttleStatus": {
                    "maximumAvailable": self.size,
                    "currentlyAvailable": int(available),
                    "restoreRate": self.rate,
                },
            }
        }


def _is_connection(type_: Any) -> bool:
    return get_named_type(type_).name.endswith("Connection")


class _Pricer:
    def __init__(self, schema: GraphQLSchema, document: DocumentNode, variables: dict) -> None:
        self.schema = schema
        self.variables = variables
        self.fragments = fragments_of(document)

    def _fields(self, selection_set: SelectionSetNode | None, parent: Any):
        """(field node, its definition) for every field selected, introspection left out."""
        for node, owner in selected_fields(self.schema, self.fragments, selection_set, parent):
            if not node.name.value.startswith("__"):
                yield node, owner.fields[node.name.value]

    def _count(self, node: FieldNode) -> int:
        for arg in node.arguments:
            if arg.name.value in ("first", "last"):
                value = value_from_ast_untyped(arg.value, self.variables)
                return int(value or 0)
        return 0

    def price(self, selection_set: SelectionSetNode | None, parent: Any, in_node: bool) -> int:
        total = 0
        for node, definition in self._fields(selection_set, parent):
            named = get_named_type(definition.type)
            if not is_composite_type(named):
                continue
            if _is_connection(named):
                inner = self.price(node.selection_set, named, True)
                total += 2 + self._count(node) * (1 + inner)
            else:
                total += (0 if in_node else 1) + self.price(node.selection_set, named, in_node)
        return total


def requested_cost(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation: OperationDefinitionNode,
    variables: dict | None,
) -> int:
    """What Shopify would charge up front for `operation` (see the module docstring)."""
    if operation.operation == OperationType.MUTATION:
        return MUTATION_COST
    root: GraphQLObjectType | None = schema.query_type
    return max(
        1, _Pricer(schema, document, variables or {}).price(operation.selection_set, root, False)
    )


def actual_cost(data: Any, mutation: bool) -> int:
    """The same count over the answer: connections by the nodes they returned."""
    if mutation:
        return MUTATION_COST

    def walk(value: Any, in_node: bool) -> int:
        if isinstance(value, list):
            return sum(walk(v, in_node) for v in value)
        if not isinstance(value, dict):
            return 0
        if "pageInfo" in value or "edges" in value or "nodes" in value:
            items = value.get("nodes")
            if items is None:
                items = [(e or {}).get("node") for e in value.get("edges") or []]
            return 2 + sum(1 + walk(item, True) for item in items)
        return (0 if in_node else 1) + sum(walk(v, in_node) for v in value.values())

    return max(1, sum(walk(v, False) for v in (data or {}).values()))
