"""Bulk operations: the query checked like Shopify checks it, the result rendered as JSONL.

`bulkOperationRunQuery` receives a query as a string. It is parsed and validated against the
same API version's schema as any request, then held to Shopify's bulk rules (at least one
connection, at most 5, nested at most 2 deep, none inside a list field); what fails comes back
as `userErrors`. Only a plan made from a valid query reaches the renderers, which write store
records straight to JSONL (in processes for big results) and cut each line down to the fields
selected. Children of a connection are separate lines carrying `__parentId`, after their
parent, as in Shopify's files.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    StringValueNode,
    get_named_type,
    get_nullable_type,
    is_composite_type,
    is_list_type,
)

from crm_pipeline.sandbox.shopify.nodes import customer_node, gid, order_parts, parse_gid
from crm_pipeline.sandbox.shopify.paging import search_range
from crm_pipeline.sandbox.shopify.schema import (
    checked,
    fragments_of,
    schema_for,
    selected_fields,
    shopify_error,
)
from crm_pipeline.sandbox.shopify.state import render_processes
from crm_pipeline.sandbox.store_index import JsonlIndex

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 5
MAX_NESTING = 2

# response key -> (field name, subtree or None for a leaf); a name "=T" is `__typename` of T
Tree = dict[str, tuple[str, Any]]

# the nested connections the renderers produce, by root connection
_CHILDREN = {
    "customers": frozenset(),
    "orders": frozenset({"lineItems"}),
}

# Results of at least this many records are rendered by processes, one slice each: on a 1M
# store one Python thread took a minute, time the client only waits.
_PARALLEL_RENDER_MIN = 20_000


class BulkQueryError(ValueError):
    """A bulk query Shopify would refuse; `messages` become `userErrors`."""

    def __init__(self, *messages: str) -> None:
        super().__init__("; ".join(messages))
        self.messages = messages


@dataclass(frozen=True)
class BulkPlan:
    """What a valid bulk query asks for, in the terms the renderers understand."""

    kind: str  # customers | orders
    search: str | None
    root: Tree
    children: dict[str, Tree]  # child connection ("lineItems") -> its node fields


@dataclass
class BulkOperation:
    id: str
    query: str
    plan: BulkPlan
    status: str = "CREATED"
    error_code: str | None = None
    object_count: int = 0
    root_object_count: int = 0
    file: Path | None = None
    partial: bool = False
    created_at: float = field(default_factory=time.time)
    completed_at: float | None = None


# ---------------------------------------------------------------------------------------------
# The query: validation, Shopify's bulk rules, the plan
# ---------------------------------------------------------------------------------------------


class _Planner:
    def __init__(self, schema: GraphQLSchema, fragments: dict[str, FragmentDefinitionNode]):
        self.schema = schema
        self.fragments = fragments
        self.connections: list[tuple[str, int]] = []  # (path, depth)
        self.children: dict[str, Tree] = {}
        self.in_lists: list[str] = []  # connections under a list field (Shopify refuses them)

    def _fields(self, selection_set: SelectionSetNode | None, parent: Any):
        return selected_fields(self.schema, self.fragments, selection_set, parent)

    def node_selection(self, conn: FieldNode, conn_type: Any) -> tuple[SelectionSetNode, Any]:
        """The selection of a connection's nodes: `edges { node { … } }` or `nodes { … }`."""
        for sel, parent in self._fields(conn.selection_set, conn_type):
            name = sel.name.value
            if name == "nodes":
                return sel.selection_set, get_named_type(parent.fields["nodes"].type)
            if name == "edges":
                edge_type = get_named_type(parent.fields["edges"].type)
                for inner, _ in self._fields(sel.selection_set, edge_type):
                    if inner.name.value == "node":
                        return inner.selection_set, get_named_type(edge_type.fields["node"].type)
        return SelectionSetNode(selections=()), get_named_type(conn_type.fields["nodes"].type)

    def tree(
        self,
        selection_set: SelectionSetNode | None,
        parent: Any,
        path: str,
        depth: int,
        in_list: bool = False,
    ) -> Tree:
        out: Tree = {}
        for sel, owner in self._fields(selection_set, parent):
            name = sel.name.value
            key = sel.alias.value if sel.alias else name
            if name == "__typename":
                out[key] = (f"={owner.name}", None)
                continue
            field_type = owner.fields[name].type
            named = get_named_type(field_type)
            here = f"{path}.{name}" if path else name
            if not is_composite_type(named):
                out[key] = (name, None)
            elif named.name.endswith("Connection"):
                if in_list:
                    self.in_lists.append(here)
                self.connections.append((here, depth + 1))
                nodes, node_type = self.node_selection(sel, named)
                self.children[here] = self.tree(nodes, node_type, "", depth + 1)
            else:
                listed = in_list or is_list_type(get_nullable_type(field_type))
                out[key] = (name, self.tree(sel.selection_set, named, here, depth, listed))
        return out


def plan_bulk_query(version: str, text: str) -> BulkPlan:
    """The plan of a bulk query, or `BulkQueryError` with Shopify's reasons for refusing it."""
    document, errors = checked(version, text)
    if errors:
        raise BulkQueryError(
            *(f"Invalid bulk query: {shopify_error(e)['message']}" for e in errors)
        )
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if len(operations) != 1 or operations[0].operation != OperationType.QUERY:
        raise BulkQueryError("Bulk queries must be a single query operation.")
    schema = schema_for(version)
    planner = _Planner(schema, fragments_of(document))
    roots = list(planner._fields(operations[0].selection_set, schema.query_type))
    # the planner counts every connection, the root ones at depth 1
    root_connections = []
    for sel, owner in roots:
        named = get_named_type(owner.fields[sel.name.value].type)
        if named.name.endswith("Connection"):
            planner.connections.append((sel.name.value, 1))
            nodes, node_type = planner.node_selection(sel, named)
            root_connections.append((sel, planner.tree(nodes, node_type, "", 1)))
        else:
            planner.tree(sel.selection_set, named, sel.name.value, 0)
    connections = planner.connections
    if not connections:
        raise BulkQueryError("Bulk queries must contain at least one connection.")
    if len(connections) > MAX_CONNECTIONS:
        raise BulkQueryError(
            f"Bulk queries cannot contain more than {MAX_CONNECTIONS} connections."
        )
    if max(depth for _, depth in connections) > MAX_NESTING:
        raise BulkQueryError(
            f"Bulk queries cannot contain connections with a nesting depth greater than "
            f"{MAX_NESTING}."
        )
    if planner.in_lists:
        raise BulkQueryError(
            "Queries that contain a connection field within a list field are not currently "
            f"supported: {', '.join(planner.in_lists)}."
        )
    if len(roots) != 1 or len(root_connections) != 1:
        raise BulkQueryError("The sandbox runs bulk queries with one root connection only.")
    root, tree = root_connections[0]
    kind = root.name.value
    if kind not in _CHILDREN:
        raise BulkQueryError(f"The sandbox runs bulk queries over {sorted(_CHILDREN)} only.")
    unknown = set(planner.children) - _CHILDREN[kind]
    if unknown:
        raise BulkQueryError(f"The sandbox cannot render {sorted(unknown)} under {kind}.")
    search = next(
        (
            a.value.value
            for a in root.arguments
            if a.name.value == "query" and isinstance(a.value, StringValueNode)
        ),
        None,
    )
    return BulkPlan(kind=kind, search=search, root=tree, children=dict(planner.children))


def project(value: Any, tree: Tree | None) -> Any:
    """`value` cut down to the fields selected in `tree` (keys renamed by their aliases)."""
    if tree is None or value is None:
        return value
    if isinstance(value, list):
        return [project(v, tree) for v in value]
    out = {}
    for key, (name, sub) in tree.items():
        out[key] = name[1:] if name[0] == "=" else project(value.get(name), sub)
    return out


# ---------------------------------------------------------------------------------------------
# The operation as a GraphQL node
# ---------------------------------------------------------------------------------------------


def _iso(seconds: float | None) -> str | None:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds)) if seconds else None


def bulk_node(op: BulkOperation | None, base_url: str) -> dict | None:
    """A `BulkOperation` node; its result file is served at `/bulk/<n>.jsonl`."""
    if op is None:
        return None
    url = f"{base_url}/bulk/{parse_gid(op.id)[1]}.jsonl"
    done = op.status == "COMPLETED"
    return {
        "__typename": "BulkOperation",
        "id": op.id,
        "type": "QUERY",
        "query": op.query,
        "status": op.status,
        "errorCode": op.error_code,
        "createdAt": _iso(op.created_at),
        "completedAt": _iso(op.completed_at),
        "objectCount": str(op.object_count),
        "rootObjectCount": str(op.root_object_count),
        "fileSize": str(op.file.stat().st_size) if done and op.file else None,
        "url": url if done and op.object_count else None,
        "partialDataUrl": url if op.partial else None,
    }


def run_query(state: Any, version: str, text: str) -> dict:
    """`bulkOperationRunQuery`: plan the query, start the operation in a thread."""
    shop = state.shopify
    try:
        plan = plan_bulk_query(version, text)
    except BulkQueryError as exc:
        errors = [{"field": ["query"], "message": m} for m in exc.messages]
        return {"bulkOperation": None, "userErrors": errors}
    with shop.lock:
        running = [o for o in shop.bulk_ops.values() if o.status in ("CREATED", "RUNNING")]
        if running:
            msg = (
                "A bulk query operation for this app and shop is already in progress: "
                f"{running[0].id}."
            )
            return {"bulkOperation": None, "userErrors": [{"field": None, "message": msg}]}
        shop.bulk_seq += 1
        op = BulkOperation(id=gid("BulkOperation", 1000 + shop.bulk_seq), query=text, plan=plan)
        shop.bulk_ops[op.id] = op
        shop.current_bulk = op.id
        # result files are big (GBs for a 1M store): keep only the previous op's for late readers
        finished = [o for o in shop.bulk_ops.values() if o.file is not None]
        for old in finished[:-1]:
            old.file.unlink(missing_ok=True)
            old.file = None
    threading.Thread(target=_run, args=(state, op), daemon=True, name=op.id).start()
    return {"bulkOperation": {"id": op.id, "status": op.status}, "userErrors": []}


# ---------------------------------------------------------------------------------------------
# Rendering the result file
# ---------------------------------------------------------------------------------------------


def _record_lines(plan: BulkPlan, rec: dict) -> Iterator[tuple[bool, bytes]]:
    """(is_root, JSONL line) of one store record in the real bulk format: children follow
    their parent."""
    if plan.kind == "customers":
        yield True, orjson.dumps(project(customer_node(rec), plan.root))
        return
    node, items, _ = order_parts(rec)
    yield True, orjson.dumps(project(node, plan.root))
    items_tree = plan.children.get("lineItems")
    if items_tree is not None:
        for item in items:
            yield False, orjson.dumps({**project(item, items_tree), "__parentId": node["id"]})


def _render_part(
    plan: BulkPlan, source: str, offsets: np.ndarray, lengths: np.ndarray, out: str
) -> tuple[int, int]:
    """Render the store records at `offsets` of `source` as bulk lines into `out`; returns
    (root objects, objects). Module-level: it also runs in the render processes."""
    roots = objects = 0
    with open(out, "wb") as fh:
        if not len(offsets):  # nothing matched (the store file may not even exist)
            return 0, 0
        with open(source, "rb") as src:
            fd = src.fileno()
            for offset, length in zip(offsets.tolist(), lengths.tolist(), strict=True):
                record = orjson.loads(os.pread(fd, length, offset))
                for is_root, line in _record_lines(plan, record):
                    roots += is_root
                    objects += 1
                    fh.write(line + b"\n")
    return roots, objects


def _run(state: Any, op: BulkOperation) -> None:
    started = time.monotonic()
    op.status = "RUNNING"
    fail = state.chance(state.config.bulk_fail_rate)
    path = state.shopify.bulk_dir / f"{parse_gid(op.id)[1]}.jsonl"
    try:
        store = state.store
        index = store.customers if op.plan.kind == "customers" else store.orders
        start, stop = search_range(index, op.plan.search)
        if op.plan.kind == "customers":  # a silently short result (SandboxConfig.drop_last)
            stop = max(start, stop - state.config.drop_last)
        if fail:  # a failed operation leaves a partial file of about half the objects
            stop = start + (stop - start) // 2
        workers = render_processes()
        if stop - start < _PARALLEL_RENDER_MIN or workers < 2:
            roots, objects = _render_part(
                op.plan, str(index.path), index.offsets[start:stop], index.lengths[start:stop],
                str(path),
            )  # fmt: skip
        else:
            roots, objects = _render_parallel(state, op, index, start, stop, path, workers)
        op.root_object_count, op.object_count = roots, objects
        op.file = path
        remaining = state.config.bulk_seconds - (time.monotonic() - started)
        if remaining > 0:
            time.sleep(remaining)
        if fail:
            op.status, op.error_code, op.partial = "FAILED", "INTERNAL_SERVER_ERROR", True
        else:
            op.status = "COMPLETED"
    except Exception:  # the op must end FAILED, as Shopify's would, whatever broke
        log.exception("bulk operation %s failed", op.id)
        op.status, op.error_code = "FAILED", "INTERNAL_SERVER_ERROR"
    op.completed_at = time.time()


def _render_parallel(
    state: Any,
    op: BulkOperation,
    index: JsonlIndex,
    start: int,
    stop: int,
    path: Path,
    workers: int,
) -> tuple[int, int]:
    """Render contiguous slices in parallel, then concatenate them in order."""
    bounds = np.linspace(start, stop, workers + 1).astype(int)
    parts = [path.with_suffix(f".part{i}") for i in range(workers)]
    jobs = [
        state.shopify.render_pool().submit(
            _render_part,
            op.plan,
            str(index.path),
            index.offsets[a:b],
            index.lengths[a:b],
            str(part),
        )  # fmt: skip
        for (a, b), part in zip(zip(bounds[:-1], bounds[1:], strict=True), parts, strict=True)
    ]
    counts = [job.result() for job in jobs]
    with path.open("wb") as fh:
        for part in parts:
            with part.open("rb") as src:
                shutil.copyfileobj(src, fh, 1 << 20)
            part.unlink()
    return sum(c[0] for c in counts), sum(c[1] for c in counts)
