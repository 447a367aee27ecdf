"""The paginators over fake pages: they stop at the last page, carry cursors into the next
request, and refuse a repeated cursor rather than fetch forever; the clients' pulls use them."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crm_pipeline.sources.errors import FatalSourceError
from crm_pipeline.sources.klaviyo import KlaviyoClient
from crm_pipeline.sources.paginate import (
    LinksNextPaginator,
    PageInfoPaginator,
    PaginationLoop,
    links_next_cursor,
    paginate,
)
from crm_pipeline.sources.shopify import ShopifyClient


def graphql_page(n: int, cursor: str | None, has_next: bool = True) -> dict[str, Any]:
    info = {"hasNextPage": has_next, "endCursor": cursor}
    return {"customers": {"edges": [{"node": {"id": n}}], "pageInfo": info}}


def jsonapi_page(n: int, cursor: str | None) -> dict[str, Any]:
    base = "http://127.0.0.1:1/api/profiles?page%5Bsize%5D=7"
    nxt = f"{base}&page%5Bcursor%5D={quote(cursor, safe='')}" if cursor is not None else None
    return {"data": [{"id": n}], "links": {"self": base, "next": nxt}}


class Server:
    """Answers request i with pages[i] and keeps every request it got."""

    def __init__(self, pages: list[dict[str, Any]]) -> None:
        self.pages = pages
        self.requests: list[dict[str, Any]] = []

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(request)
        return self.pages[len(self.requests) - 1]


def test_graphql_carries_cursors_and_stops_at_last_page() -> None:
    server = Server(
        [graphql_page(0, "c1"), graphql_page(1, "c2"), graphql_page(2, "c2x", has_next=False)]
    )
    pages = list(paginate(PageInfoPaginator(("customers",)), server, {"first": 5}))
    assert [p["customers"]["edges"][0]["node"]["id"] for p in pages] == [0, 1, 2]
    assert server.requests == [
        {"first": 5, "after": None},
        {"first": 5, "after": "c1"},
        {"first": 5, "after": "c2"},
    ]


def test_jsonapi_carries_cursors_and_stops_at_last_page() -> None:
    server = Server([jsonapi_page(0, "a=="), jsonapi_page(1, "b&c"), jsonapi_page(2, None)])
    pages = list(paginate(LinksNextPaginator(), server, {"page_size": 7}))
    assert [p["data"][0]["id"] for p in pages] == [0, 1, 2]
    assert [r["page_cursor"] for r in server.requests] == [None, "a==", "b&c"]
    assert all(r["page_size"] == 7 for r in server.requests)


def test_single_page_is_one_request() -> None:
    server = Server([graphql_page(0, None, has_next=False)])
    assert len(list(paginate(PageInfoPaginator(("customers",)), server, {}))) == 1
    server = Server([{"data": [], "links": {}}])
    assert len(list(paginate(LinksNextPaginator(), server, {}))) == 1
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    "pages, paginator",
    [
        ([graphql_page(0, "c1"), graphql_page(1, "c1")], PageInfoPaginator(("customers",))),
        ([jsonapi_page(0, "x"), jsonapi_page(1, "y"), jsonapi_page(2, "x")], LinksNextPaginator()),
        ([graphql_page(0, None)], PageInfoPaginator(("customers",))),  # next page, no cursor
    ],
)
def test_a_repeated_cursor_is_refused(pages: list[dict[str, Any]], paginator: Any) -> None:
    server = Server(pages)
    seen = []
    with pytest.raises(PaginationLoop):
        for page in paginate(paginator, server, {}):
            seen.append(page)
    assert seen == pages  # every page was handed out before the refusal, and none twice
    assert len(server.requests) == len(pages)
    assert not paginator.has_next_page
    assert issubclass(PaginationLoop, FatalSourceError)  # a retry would loop again


def test_a_seeded_paginator_repeats_nothing_it_was_given() -> None:
    """The nested line items: the order's own page gave the first cursor."""
    pager = PageInfoPaginator(("node", "lineItems"))
    pager.update_from_connection({"nodes": [], "pageInfo": {"hasNextPage": True, "endCursor": "a"}})
    server = Server(
        [{"node": {"lineItems": {"pageInfo": {"hasNextPage": True, "endCursor": "a"}}}}]
    )
    with pytest.raises(PaginationLoop):
        list(paginate(pager, server, {"id": "gid://shopify/Order/1"}))
    assert server.requests == [{"id": "gid://shopify/Order/1", "after": "a"}]


def test_missing_connection_or_page_info_is_the_last_page() -> None:
    """An order deleted between two pages of its line items answers `node: null`."""
    pager = PageInfoPaginator(("node", "lineItems"), cursor="a")
    pager.update_state({"node": None})
    assert not pager.has_next_page
    pager = PageInfoPaginator(("customers",))
    pager.update_state({"customers": {"edges": []}})
    assert not pager.has_next_page


def test_links_next_without_a_cursor_ends_the_read() -> None:
    assert (
        links_next_cursor({"next": "https://a.klaviyo.com/api/profiles?page%5Bsize%5D=2"}) is None
    )
    assert links_next_cursor({}) is None


@settings(max_examples=200, deadline=None)
@given(
    cursors=st.lists(st.text(min_size=1, max_size=12), max_size=12, unique=True),
    graphql=st.booleans(),
)
def test_any_chain_of_distinct_cursors_is_followed_to_its_end(
    cursors: list[str], graphql: bool
) -> None:
    """Page i links to cursors[i]; the request for page i+1 carries it; the last links to none."""
    ends: list[str | None] = [*cursors, None]
    if graphql:
        pages = [graphql_page(i, c, has_next=c is not None) for i, c in enumerate(ends)]
        pager: Any = PageInfoPaginator(("customers",))
    else:
        pages = [jsonapi_page(i, c) for i, c in enumerate(ends)]
        pager = LinksNextPaginator()
    server = Server(pages)
    assert list(paginate(pager, server, {"q": 1})) == pages
    assert [r[pager.cursor_param] for r in server.requests] == [None, *cursors]


def test_the_clients_pulls_refuse_a_repeated_cursor(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shopify's paged pulls and Klaviyo's go through the paginators (no network: fake calls)."""
    shopify = ShopifyClient(None, "token", api_url="http://127.0.0.1:1")
    answers = iter([graphql_page(0, "same"), graphql_page(1, "same")])
    monkeypatch.setattr(shopify, "execute", lambda *args, **kwargs: next(answers))
    with pytest.raises(PaginationLoop):
        list(shopify._paginate("query", "Op", "customers", {"first": 1}, cost=1))

    klaviyo = KlaviyoClient("pk_test", api_url="http://127.0.0.1:1")
    calls: list[dict[str, Any]] = []

    def call(fn: Any, policy: Any = None, **kwargs: Any) -> dict[str, Any]:
        calls.append(kwargs)
        return jsonapi_page(len(calls), "same")

    monkeypatch.setattr(klaviyo, "_call", call)
    with pytest.raises(PaginationLoop):
        list(klaviyo.profiles(with_predictive=False))
    assert [c["page_cursor"] for c in calls] == [None, "same"]
    calls.clear()
    with pytest.raises(PaginationLoop):
        klaviyo.metrics()
    assert len(calls) == 2
