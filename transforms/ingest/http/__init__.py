"""Paginated JSON APIs as a source (see README.md in this folder)."""

from transforms.ingest.http.client import RetryPolicy
from transforms.ingest.http.pagination import Pagination
from transforms.ingest.http.source import Auth, Incremental, ReadHttp, probe

__all__ = ["Auth", "Incremental", "Pagination", "ReadHttp", "RetryPolicy", "probe"]
