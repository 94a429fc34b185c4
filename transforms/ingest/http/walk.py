"""The walk over every partition's pages: up to ``concurrency`` requests in flight, results
handed on partition by partition, each in page order (so what is kept of a repeated record
does not depend on which answer came first).

Pure of Beam: ``fetch`` does the I/O and never raises for a page that cannot be read (it
returns the failure), so one bad page does not stop the others.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass

from transforms.ingest.http.client import PageFailed
from transforms.ingest.http.pagination import PageRequest, PaginationStop

__all__ = ["PageResult", "walk"]


@dataclass
class PageResult:
    """What one page gave.

    Args:
        request: The page asked for.
        records: Its records, or None when it could not be read.
        body: A digest of the page's body (to know a repeated page), when asked for.
        failure: Why it could not be read.
        stop: Why its partition's walk stopped after it, before the API said it ended.
        rest_unread: Whether pages after a failed one are left unread (their address was in it).
    """

    request: PageRequest
    records: list | None = None
    body: bytes | None = None
    headers: dict | None = None
    data: object = None
    failure: PageFailed | None = None
    stop: PaginationStop | None = None
    rest_unread: bool = False


def walk(pagers: list, fetch: Callable[[PageRequest], PageResult], concurrency: int) -> Iterator[PageResult]:
    """Yields every page's result: partition 0's pages in order, then partition 1's, ..."""
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    ready: deque[PageRequest] = deque(p.first() for p in pagers)
    issued = [1] * len(pagers)  # requests made per partition
    handed = [0] * len(pagers)  # results handed on per partition (seq of the next one)
    done: dict[tuple[int, int], PageResult] = {}
    inflight: dict = {}
    current = 0
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="http-page") as pool:
        while True:
            while ready and len(inflight) < concurrency:
                req = ready.popleft()
                inflight[pool.submit(fetch, req)] = req
            while current < len(pagers):
                key = (current, handed[current])
                if key in done:
                    yield done.pop(key)
                    handed[current] += 1
                elif handed[current] == issued[current]:
                    current += 1  # every request of this partition was answered and handed on
                else:
                    break
            if not inflight:
                return
            finished, _ = wait(inflight, return_when=FIRST_COMPLETED)
            for future in finished:
                req = inflight.pop(future)
                result = future.result()
                pager = pagers[req.partition]
                if result.failure is None:
                    nxt, result.stop = pager.after(req, result.data, result.headers or {}, len(result.records))
                else:
                    nxt, result.stop = pager.failed(req)
                    result.rest_unread = not nxt and getattr(pager, "total", None) is None
                result.data = None  # the records are what is kept
                issued[req.partition] += len(nxt)
                ready.extend(nxt)
                done[(req.partition, req.seq)] = result
