"""Cursor pagination for every pull, in one place: when to stop and what cursor comes next.

Modelled on dlt's REST client paginators: a paginator reads each page (`update_state`), says
whether another follows (`has_next_page`) and puts its cursor into the next request
(`update_request`). Making the request stays with the client -- retries, rate limits, Shopify's
cost pacing and Klaviyo's SDK calls are untouched; `paginate` only loops. Two kinds:

- `PageInfoPaginator`: a GraphQL connection's `pageInfo { hasNextPage endCursor }` (Shopify);
- `LinksNextPaginator`: a JSON:API `links.next` URL, cursor in its `page[cursor]` (Klaviyo).

A source that sends a cursor twice, or says there is a next page without a cursor, would make
the loop fetch forever: that raises `PaginationLoop` instead.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from crm_pipeline.sources.errors import FatalSourceError

Page = TypeVar("Page", bound=Mapping[str, Any])


class PaginationLoop(FatalSourceError):
    """The source repeated a cursor (or gave none for a next page): retrying cannot help."""


class Paginator(ABC):
    """Cursor state of one paged read; `cursor` is what the next request asks for."""

    def __init__(self, cursor_param: str, cursor: str | None = None) -> None:
        self.cursor_param = cursor_param
        self.cursor = cursor
        self._has_next_page = True
        self._seen: set[str] = set() if cursor is None else {cursor}

    @property
    def has_next_page(self) -> bool:
        return self._has_next_page

    @abstractmethod
    def update_state(self, page: Mapping[str, Any]) -> None:
        """Read the cursor of the page after `page` (or that it was the last) from `page`."""

    def update_request(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """`request` with the cursor set (None for the first page, as the APIs expect)."""
        return {**request, self.cursor_param: self.cursor}

    def _advance(self, cursor: str | None) -> None:
        """Move to `cursor`; None ends the read. A cursor seen before is refused."""
        if cursor is None:
            self._has_next_page = False
            return
        if cursor in self._seen:
            self._has_next_page = False
            raise PaginationLoop(f"the source repeated the page cursor {cursor!r}")
        self._seen.add(cursor)
        self.cursor = cursor

    def __repr__(self) -> str:
        return f"{type(self).__name__}(cursor={self.cursor!r}, next={self._has_next_page})"


class PageInfoPaginator(Paginator):
    """A GraphQL connection at `path` in the response data, paged with `after`.

    A missing connection (say the order whose line items we page was deleted meanwhile) or
    `pageInfo` reads as the last page.
    """

    def __init__(
        self, path: Sequence[str] = (), cursor_param: str = "after", cursor: str | None = None
    ) -> None:
        super().__init__(cursor_param, cursor)
        self.path = tuple(path)

    def update_state(self, page: Mapping[str, Any]) -> None:
        conn: Any = page
        for key in self.path:
            conn = (conn or {}).get(key)
        self.update_from_connection(conn)

    def update_from_connection(self, conn: Mapping[str, Any] | None) -> None:
        """Read a connection already in hand (a nested one inside a node, say)."""
        info = (conn or {}).get("pageInfo") or {}
        if not info.get("hasNextPage"):
            self._advance(None)
            return
        cursor = info.get("endCursor")
        if not cursor:
            self._has_next_page = False
            raise PaginationLoop("hasNextPage without an endCursor: the next page is the first")
        self._advance(cursor)


def links_next_cursor(links: Mapping[str, Any] | None) -> str | None:
    """`page[cursor]` out of a JSON:API `links.next` URL (None on the last page)."""
    url = (links or {}).get("next")
    if not url:
        return None
    values = parse_qs(urlsplit(url).query).get("page[cursor]")
    return values[0] if values else None


class LinksNextPaginator(Paginator):
    """JSON:API pages: the next page's cursor is the `page[cursor]` of `links.next`.

    Klaviyo's SDK takes the cursor as `page_cursor`, and follows `links.next` itself only
    for https, so the cursor is read here."""

    def __init__(self, cursor_param: str = "page_cursor", cursor: str | None = None) -> None:
        super().__init__(cursor_param, cursor)

    def update_state(self, page: Mapping[str, Any]) -> None:
        self._advance(links_next_cursor(page.get("links")))


def paginate(
    paginator: Paginator,
    fetch: Callable[[dict[str, Any]], Page],
    request: Mapping[str, Any],
) -> Iterator[Page]:
    """Each page of a read: `fetch(request with the cursor)` until the paginator stops.

    A page is handed out before the paginator reads it, so its records are processed first
    (as the hand-written loops did); a repeated cursor raises after that page.
    """
    while paginator.has_next_page:
        page = fetch(paginator.update_request(request))
        yield page
        paginator.update_state(page)
