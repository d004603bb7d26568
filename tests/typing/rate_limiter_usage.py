"""Type-checked, never run: how RateLimiter reads to a type checker (mypy --strict)."""

from __future__ import annotations

from typing import assert_type

import redis
import redis.asyncio

from failsafe import Pipeline, RateLimited, RateLimiter, Retry
from failsafe.rate_limiter import RedisRateLimit, redis_rate_limit

limiter = RateLimiter(rate=100, per=1.0, burst=10, max_wait=0.5, key=lambda: "tenant")
window = RateLimiter.sliding_window(limit=100, window=1.0)
assert_type(window, RateLimiter)
assert_type(limiter.try_acquire(), bool)
assert_type(limiter.try_acquire("tenant-b"), bool)
assert_type(limiter.acquire(), float)


def geocode(address: str) -> tuple[float, float]:
    return (0.0, 0.0)


assert_type(Pipeline(limiter, Retry()).call(geocode, "Paris"), tuple[float, float])


async def use_async() -> None:
    assert_type(await limiter.acquire_async(), float)


try:
    limiter.call(geocode, "Lyon")
except RateLimited as exc:
    assert_type(exc.retry_after, float)

storage = redis_rate_limit("redis://127.0.0.1:6379/0", namespace="geo")
assert_type(storage, RedisRateLimit)
pair = redis_rate_limit((redis.Redis(), redis.asyncio.Redis()), namespace="geo")
shared = RateLimiter(rate=50, storage=pair)
