"""A rate limit counted in Redis: one Lua script per permit (internal).

Imported on first use of [`redis_rate_limit`][failsafe.rate_limiter.redis_rate_limit],
never by ``import failsafe``. Each permit is one ``EVALSHA`` (redis-py's ``Script`` loads the
script once, on the first ``NOSCRIPT``), running the local limiter's algorithm on the
server's clock (``TIME``): GCRA over one string key, or the exact sliding log over a sorted
set. Times are seconds since ``_EPOCH`` (so that a double keeps them to well under a
microsecond), written with 17 significant digits.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import weakref
from collections.abc import Hashable
from typing import Any

from failsafe._extras import missing_extra

_EPOCH = 1_700_000_000

_NOW = f"""
local clock = redis.call('TIME')
local now = (tonumber(clock[1]) - {_EPOCH}) + tonumber(clock[2]) / 1000000
"""

# KEYS[1]: the key's tat. ARGV: interval, ahead (burst * interval), max_wait.
# Returns the wait (a string, exact); greater than max_wait: nothing was taken.
TOKEN_BUCKET = (
    _NOW
    + """
local interval = tonumber(ARGV[1])
local ahead = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
tat = tat + interval
local wait = tat - ahead - now
if wait <= 1e-9 then wait = 0 end
if wait <= max_wait then
  redis.call('SET', KEYS[1], string.format('%.17g', tat), 'PX',
             math.ceil((tat - now) * 1000) + 1)
end
return string.format('%.17g', wait)
"""
)

# KEYS[1]: the key's tat. ARGV: interval. One permit back (a misuse, a cancelled wait).
TOKEN_BUCKET_BACK = """
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat then
  redis.call('SET', KEYS[1], string.format('%.17g', tat - tonumber(ARGV[1])), 'KEEPTTL')
end
return 1
"""

# KEYS[1]: the key's log (a sorted set of permit times), KEYS[2]: its member counter.
# ARGV: limit, window, max_wait. Returns {wait, member} (member '' when nothing was taken).
SLIDING_WINDOW = (
    _NOW
    + """
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.17g', now - window))
local n = redis.call('ZCARD', KEYS[1])
local due = now
if n > 0 then
  local last = tonumber(redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')[2])
  if last > due then due = last end
  if n >= limit then
    local free = tonumber(redis.call('ZRANGE', KEYS[1], -limit, -limit, 'WITHSCORES')[2])
    free = free + window
    if free > due then due = free end
  end
end
local wait = due - now
if wait <= 1e-9 then wait = 0; due = now end
if wait > max_wait then
  return {string.format('%.17g', wait), ''}
end
local member = tostring(redis.call('INCR', KEYS[2]))
redis.call('ZADD', KEYS[1], string.format('%.17g', due), member)
local ttl = math.ceil((due - now + window) * 1000) + 1
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return {string.format('%.17g', wait), member}
"""
)

SLIDING_WINDOW_BACK = """
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
"""


def require_redis() -> None:
    """Raise the extra's ImportError when redis-py is not installed."""
    try:
        import redis  # noqa: F401
    except ImportError as exc:
        raise missing_extra("redis", "a rate limit shared through Redis", exc) from exc


class _NoClient(Exception):
    """This side (sync or async) has no Redis client: it counts in process memory."""


class Clients:
    """The Redis clients of one `RedisRateLimit`: given, or built from a URL on first use.

    Built from a URL: one fail-fast ``redis.Redis``, and one ``redis.asyncio.Redis`` per
    event loop (a redis.asyncio connection belongs to the loop that opened it; the map is
    weak, so it holds the loops alive and no more).
    """

    def __init__(self, *, client: Any, async_client: Any, url: str | None, timeout: float):
        self._client = client
        self._async_client = async_client
        self._url = url
        self._timeout = timeout
        self._lock = threading.Lock()
        self._per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )

    def sync(self) -> Any:
        client = self._client
        if client is not None:
            return client
        if self._url is None:
            raise _NoClient("no synchronous Redis client: give redis_rate_limit a redis.Redis")
        from failsafe._breaker_storage import fail_fast_client

        with self._lock:
            if self._client is None:
                self._client = fail_fast_client(self._url, timeout=self._timeout)
            return self._client

    def for_loop(self) -> Any:
        client = self._async_client
        if client is not None:
            return client
        if self._url is None:
            raise _NoClient("no asyncio Redis client: give redis_rate_limit a redis.asyncio.Redis")
        loop = asyncio.get_running_loop()
        client = self._per_loop.get(loop)
        if client is None:
            import redis.asyncio
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            client = redis.asyncio.Redis.from_url(
                self._url,
                socket_timeout=self._timeout,
                socket_connect_timeout=self._timeout,
                retry=Retry(NoBackoff(), 0),
                retry_on_timeout=False,
            )
            self._per_loop[loop] = client
        return client

    def close(self) -> None:
        """Close the sync client built from the URL (a given client is the caller's)."""
        if self._url is not None and self._client is not None:
            client, self._client = self._client, None
            client.close()

    async def aclose(self) -> None:
        """Close the running loop's async client built from the URL."""
        if self._url is None:
            return
        client = self._per_loop.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()


def _sha(source: str) -> str:
    return hashlib.sha1(source.encode()).hexdigest()


class RedisBackend:
    """One limiter's settings, counted in Redis (see the module docstring)."""

    def __init__(
        self,
        clients: Clients,
        *,
        namespace: str,
        algorithm: str,
        rate: float,
        per: float,
        burst: int,
    ) -> None:
        self._clients = clients
        self._namespace = namespace
        self._sliding = algorithm == "sliding_window"
        if self._sliding:
            self._args: tuple[Any, ...] = (int(rate), repr(float(per)))
            self._take_src, self._back_src = SLIDING_WINDOW, SLIDING_WINDOW_BACK
        else:
            interval = per / rate
            self._args = (repr(interval), repr(burst * interval))
            self._take_src, self._back_src = TOKEN_BUCKET, TOKEN_BUCKET_BACK
        self._interval = self._args[0]
        self._take_sha, self._back_sha = _sha(self._take_src), _sha(self._back_src)
        from redis.exceptions import NoScriptError

        self._no_script = NoScriptError

    def _keys(self, key: Hashable) -> tuple[str, ...]:
        base = self._namespace if key is None else f"{self._namespace}:{key}"
        if self._sliding:
            return (f"{{{base}}}:log", f"{{{base}}}:seq")
        return (base,)

    def _answer(self, raw: Any) -> tuple[float, object]:
        if self._sliding:
            wait, member = raw
            return float(wait), (member or None)
        return float(raw), True

    def _run(self, client: Any, sha: str, source: str, keys: tuple[str, ...], *args: Any) -> Any:
        try:
            return client.evalsha(sha, len(keys), *keys, *args)
        except self._no_script:  # the server lost its scripts (a restart, SCRIPT FLUSH)
            client.script_load(source)
            return client.evalsha(sha, len(keys), *keys, *args)

    async def _run_async(
        self, client: Any, sha: str, source: str, keys: tuple[str, ...], *args: Any
    ) -> Any:
        try:
            return await client.evalsha(sha, len(keys), *keys, *args)
        except self._no_script:
            await client.script_load(source)
            return await client.evalsha(sha, len(keys), *keys, *args)

    def take(self, key: Hashable, max_wait: float) -> tuple[float, object]:
        raw = self._run(
            self._clients.sync(),
            self._take_sha,
            self._take_src,
            self._keys(key),
            *self._args,
            repr(float(max_wait)),
        )
        return self._answer(raw)

    async def take_async(self, key: Hashable, max_wait: float) -> tuple[float, object]:
        raw = await self._run_async(
            self._clients.for_loop(),
            self._take_sha,
            self._take_src,
            self._keys(key),
            *self._args,
            repr(float(max_wait)),
        )
        return self._answer(raw)

    def _back_args(self, key: Hashable, token: object) -> tuple[tuple[str, ...], Any]:
        keys = self._keys(key)
        if self._sliding:
            return keys[:1], token
        return keys, self._interval

    def give_back(self, key: Hashable, token: object) -> None:
        keys, arg = self._back_args(key, token)
        self._run(self._clients.sync(), self._back_sha, self._back_src, keys, arg)

    async def give_back_async(self, key: Hashable, token: object) -> None:
        keys, arg = self._back_args(key, token)
        await self._run_async(self._clients.for_loop(), self._back_sha, self._back_src, keys, arg)
