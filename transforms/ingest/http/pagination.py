"""Pagination styles of JSON APIs: which page to ask for next, given the page just read.

Pure (no I/O). A pager hands out page requests for one partition (one stream of pages); after
each page is read it is told what came back and hands out the next requests:

- ``cursor``: the next cursor is in the body at a JSON path and goes back as a query parameter;
- ``page``: page numbers from ``start`` until an empty page, or up to a total the first page
  gives (then every other page is known at once and can be fetched concurrently);
- ``link``: the next URL is the ``Link`` header's ``rel="next"`` (RFC 8288).

A cursor or next link seen before is a loop: the walk stops there and says so.
"""

from __future__ import annotations

import math
import re
import urllib.parse
from dataclasses import dataclass

__all__ = [
    "STYLES",
    "CursorPager",
    "LinkPager",
    "PagePager",
    "PageRequest",
    "Pagination",
    "PaginationStop",
    "json_path",
    "link_next",
    "make_pager",
    "with_query",
]

STYLES = ("cursor", "page", "link")


@dataclass(frozen=True)
class Pagination:
    """How an API pages its results.

    Args:
        style: ``cursor``, ``page`` or ``link``.
        cursor_param: Cursor style: the query parameter that takes the cursor.
        cursor_path: Cursor style: dotted JSON path of the next cursor in the body (absent,
            null or empty: the last page).
        page_param: Page style: the query parameter that takes the page number.
        start: Page style: the first page's number.
        size_param: Page style: the query parameter that takes the page size (optional).
        size: Page style: the page size sent as ``size_param`` (and used with
            ``total_records_path``).
        total_pages_path: Page style: dotted JSON path of the number of pages in the first page's
            body (optional).
        total_records_path: Page style: dotted JSON path of the number of records (optional;
            needs ``size``).
        max_pages: Most pages read per partition: a guard against an API that never ends.
    """

    style: str
    cursor_param: str = "cursor"
    cursor_path: str = "next_cursor"
    page_param: str = "page"
    start: int = 1
    size_param: str | None = None
    size: int | None = None
    total_pages_path: str | None = None
    total_records_path: str | None = None
    max_pages: int = 100_000

    def __post_init__(self):
        if self.style not in STYLES:
            raise ValueError(f"pagination style must be one of {', '.join(STYLES)}, got {self.style!r}")
        if self.total_records_path and not self.size:
            raise ValueError("total_records_path needs the page size (size)")
        if self.size is not None and self.size < 1:
            raise ValueError("size must be at least 1")
        if self.max_pages < 1:
            raise ValueError("max_pages must be at least 1")


@dataclass(frozen=True)
class PageRequest:
    """One page to fetch.

    Args:
        partition: Index of the partition (stream of pages) it belongs to.
        seq: Its position in the partition (0 first): results are handed on in this order.
        url: The full URL, query included.
        page: Its page number (page style) or position from 1 (cursor and link styles).
    """

    partition: int
    seq: int
    url: str
    page: int


@dataclass(frozen=True)
class PaginationStop:
    """Why the walk of a partition stopped before the API said it ended (a loop, the page limit)."""

    reason: str
    message: str


def json_path(obj, path: str | None):
    """The value at a dotted path (``meta.next``; list items by number); ``obj`` for an empty
    path; None when a part is absent."""
    if not path:
        return obj
    for part in path.split("."):
        if isinstance(obj, dict):
            obj = obj.get(part)
        elif isinstance(obj, list) and part.isdigit() and int(part) < len(obj):
            obj = obj[int(part)]
        else:
            return None
    return obj


def with_query(url: str, params: dict) -> str:
    """``url`` with ``params`` set in its query (replacing parameters of the same name)."""
    parts = urllib.parse.urlsplit(url)
    query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    query += [(k, _text(v)) for k, v in params.items() if v is not None]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def _text(v) -> str:
    if v is True or v is False:
        return "true" if v else "false"
    return str(v)


_LINK = re.compile(r"<([^>]*)>\s*((?:;\s*[^;,]+)*)")
_REL = re.compile(r"""rel\s*=\s*(?:"([^"]*)"|([^\s;,"]+))""", re.IGNORECASE)


def link_next(header: str | None, base: str) -> str | None:
    """The ``rel="next"`` target of a ``Link`` header, resolved against ``base``; None if none."""
    if not header:
        return None
    for m in _LINK.finditer(header):
        rel = _REL.search(m.group(2) or "")
        if rel and "next" in (rel.group(1) or rel.group(2) or "").lower().split():
            return urllib.parse.urljoin(base, m.group(1).strip())
    return None


class _Pager:
    def __init__(self, partition: int, url: str, params: dict, pagination: Pagination):
        self.partition, self.url, self.params, self.p = partition, url, dict(params), pagination
        self._seq = 0

    def _request(self, url: str, page: int) -> PageRequest:
        req = PageRequest(self.partition, self._seq, url, page)
        self._seq += 1
        return req

    def _next(self, url: str, page: int) -> tuple[list, PaginationStop | None]:
        if self._seq >= self.p.max_pages:
            return [], PaginationStop("page_limit", f"more than max_pages={self.p.max_pages} pages")
        return [self._request(url, page)], None

    def failed(self, req: PageRequest) -> tuple[list, PaginationStop | None]:
        """The requests after a page that could not be read: none, as its next page is unknown
        (page style with a known total: the other pages were requested already)."""
        return [], None


class CursorPager(_Pager):
    def __init__(self, partition: int, url: str, params: dict, pagination: Pagination):
        super().__init__(partition, url, params, pagination)
        self._seen: set[str] = set()

    def first(self) -> PageRequest:
        return self._request(with_query(self.url, self.params), 1)

    def after(self, req: PageRequest, body, headers: dict, count: int) -> tuple[list, PaginationStop | None]:
        """The requests that follow a page read, and why the walk stops early (or None)."""
        cursor = json_path(body, self.p.cursor_path)
        if cursor is None or cursor == "" or isinstance(cursor, (dict, list, bool)):
            return [], None
        cursor = str(cursor)
        if cursor in self._seen:
            return [], PaginationStop("pagination_loop", f"cursor {cursor!r} came back: the API is looping")
        self._seen.add(cursor)
        return self._next(with_query(self.url, {**self.params, self.p.cursor_param: cursor}), req.page + 1)


class LinkPager(_Pager):
    def __init__(self, partition: int, url: str, params: dict, pagination: Pagination):
        super().__init__(partition, url, params, pagination)
        self._seen: set[str] = set()

    def first(self) -> PageRequest:
        first = with_query(self.url, self.params)
        self._seen.add(first)
        return self._request(first, 1)

    def after(self, req: PageRequest, body, headers: dict, count: int) -> tuple[list, PaginationStop | None]:
        nxt = link_next(headers.get("link"), req.url)
        if nxt is None:
            return [], None
        if nxt in self._seen:
            return [], PaginationStop("pagination_loop", f"next link {nxt} came back: the API is looping")
        self._seen.add(nxt)
        return self._next(nxt, req.page + 1)


class PagePager(_Pager):
    def __init__(self, partition: int, url: str, params: dict, pagination: Pagination):
        super().__init__(partition, url, params, pagination)
        if pagination.size_param and pagination.size:
            self.params[pagination.size_param] = pagination.size
        self.total: int | None = None

    def _page(self, n: int) -> PageRequest:
        return self._request(with_query(self.url, {**self.params, self.p.page_param: n}), n)

    def first(self) -> PageRequest:
        return self._page(self.p.start)

    def pages_known(self, body) -> int | None:
        """The number of pages the first page's body announces, or None."""
        p = self.p
        if p.total_pages_path:
            n = json_path(body, p.total_pages_path)
            return n if _count(n) else None
        if p.total_records_path:
            n = json_path(body, p.total_records_path)
            return math.ceil(n / p.size) if _count(n) else None
        return None

    def after(self, req: PageRequest, body, headers: dict, count: int) -> tuple[list, PaginationStop | None]:
        if req.seq == 0:
            self.total = self.pages_known(body)
            if self.total is not None:
                # Every page is known now: they can all be fetched at once.
                last = self.p.start + min(self.total, self.p.max_pages)
                pages = [self._page(n) for n in range(self.p.start + 1, last)]
                over = self.total > self.p.max_pages
                limit = f"the API announces {self.total} pages, more than max_pages={self.p.max_pages}"
                return pages, PaginationStop("page_limit", limit) if over else None
        if self.total is not None or count == 0:
            return [], None
        return self._next(with_query(self.url, {**self.params, self.p.page_param: req.page + 1}), req.page + 1)


def _count(n) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and n >= 0


_PAGERS = {"cursor": CursorPager, "page": PagePager, "link": LinkPager}


def make_pager(partition: int, url: str, params: dict, pagination: Pagination):
    """The pager of ``pagination.style`` for one partition."""
    return _PAGERS[pagination.style](partition, url, params, pagination)
