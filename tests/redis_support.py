"""What the Redis tests share: the server's URL, and a URL through a cut-able proxy.

The fixtures themselves (``redis_proxy``, ``dead_url``, ``redis_retries``) live in
``tests/conftest.py``, so that every Redis test gets them without an import.
"""

from __future__ import annotations

import os

from tests.tcp_proxy import Proxy

REDIS_URL = os.environ.get("FAILSAFE_TEST_REDIS", "redis://127.0.0.1:6379/0")


def redis_proxy_url(proxy: Proxy) -> str:
    """The Redis URL through ``proxy`` (on loopback, database 0)."""
    return f"redis://127.0.0.1:{proxy.port}/0"
