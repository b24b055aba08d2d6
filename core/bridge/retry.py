"""Calling a chat platform reliably: retries with backoff that honour ``retry_after``, and rate
limits per chat and overall.

A connector says how to read its SDK's errors (:class:`ErrorKinds`: which are transient, which
carry a "retry after N seconds"); the loop here is the same for Telegram, Slack and email.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")


@dataclass
class ErrorKinds:
    """How to read a platform's errors.

    ``retry_after(exc)`` returns the seconds the platform asked us to wait (HTTP 429), or
    ``None``; ``transient(exc)`` says whether trying again may help (network errors, 5xx).
    Anything else is permanent and raised at once.
    """

    retry_after: Callable[[BaseException], float | None]
    transient: Callable[[BaseException], bool]


@dataclass
class RetryPolicy:
    """Exponential backoff with full jitter, bounded by attempts and by a total time budget."""

    attempts: int = 6
    base_delay: float = 0.2
    max_delay: float = 10.0
    budget: float = 60.0  # never keep one call going longer than this (keep it under the lease)
    max_retry_after: float = 120.0  # a longer retry_after is given up on (the lease retries later)

    def backoff(self, attempt: int) -> float:
        return random.uniform(self.base_delay, min(self.max_delay,
                                                   self.base_delay * 2 ** attempt))


class GiveUp(Exception):
    """Raised when the retries are exhausted; ``__cause__`` is the last platform error."""


async def call_with_retries(
    call: Callable[[], Awaitable[T]],
    kinds: ErrorKinds,
    policy: RetryPolicy | None = None,
    *,
    on_retry_after: Callable[[float], None] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """Run ``call`` until it succeeds, a permanent error occurs, or the policy gives up.

    A "retry after N" answer waits exactly N seconds (plus a little) and does not count as a
    failed attempt's backoff; ``on_retry_after(N)`` lets a rate limiter pause the chat too.
    """
    policy = policy or RetryPolicy()
    started = time.monotonic()
    attempt = 0
    while True:
        try:
            return await call()
        except Exception as exc:
            wait = kinds.retry_after(exc)
            if wait is not None:
                if wait > policy.max_retry_after:
                    raise GiveUp(f"the platform asked to wait {wait:.0f} s") from exc
                if on_retry_after is not None:
                    on_retry_after(wait)
                wait += 0.05
            elif kinds.transient(exc):
                attempt += 1
                if attempt >= policy.attempts:
                    raise GiveUp(f"gave up after {attempt} attempts: {exc}") from exc
                wait = policy.backoff(attempt)
            else:
                raise
            if time.monotonic() - started + wait > policy.budget:
                raise GiveUp(f"gave up after {policy.budget:.0f} s: {exc}") from exc
            await sleep(wait)


async def call_limited(call: Callable[[], Awaitable[T]], kinds: ErrorKinds, limiter: RateLimiter,
                       key: str, *, lease_seconds: float) -> T:
    """One platform call for a delivery: waits until ``limiter`` allows one more for ``key``
    (a chat), retries per ``kinds`` within a budget that ends before the delivery's lease does,
    and pauses ``key`` for as long as a "retry after" asks."""
    budget = max(1.0, min(60.0, lease_seconds * 0.8))

    async def attempt() -> T:
        await limiter.acquire(key)
        return await call()

    return await call_with_retries(
        attempt, kinds, RetryPolicy(budget=budget, max_retry_after=budget),
        on_retry_after=lambda seconds: limiter.pause(key, seconds))


async def every(seconds: float, work: Callable[[], Awaitable[object]], logger: logging.Logger,
                failed: str) -> None:
    """Run ``work`` every ``seconds`` until cancelled; a failure is logged (``failed`` says
    what did not happen) and the next round tries again. For a background task."""
    while True:
        await asyncio.sleep(seconds)
        try:
            await work()
        except Exception:
            logger.exception(failed)


@dataclass
class _Bucket:
    rate: float  # tokens per second
    burst: float
    tokens: float
    updated: float
    paused_until: float = 0.0


@dataclass
class RateLimiter:
    """Token buckets per key (a chat) plus one shared by all keys (the bot as a whole).

    ``await limiter.acquire(key)`` waits until both allow one more call; ``pause(key, s)`` stops
    a key (or everything, with ``key=None``) for ``s`` seconds, as after a 429.
    """

    rate: float = 1.0
    burst: float = 10.0
    global_rate: float = 30.0
    global_burst: float = 30.0
    _buckets: dict[str | None, _Bucket] = field(default_factory=dict)

    def _bucket(self, key: str | None) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            rate, burst = (self.global_rate, self.global_burst) if key is None else (
                self.rate, self.burst)
            bucket = self._buckets[key] = _Bucket(rate, burst, burst, time.monotonic())
            if len(self._buckets) > 10_000:  # forget idle chats
                for stale in [k for k, b in self._buckets.items()
                              if k is not None and b.tokens >= b.burst][:5000]:
                    del self._buckets[stale]
        return bucket

    def _wait_for(self, bucket: _Bucket, now: float) -> float:
        bucket.tokens = min(bucket.burst, bucket.tokens + (now - bucket.updated) * bucket.rate)
        bucket.updated = now
        pause = max(0.0, bucket.paused_until - now)
        if bucket.tokens >= 1:
            return pause
        return max(pause, (1 - bucket.tokens) / bucket.rate)

    async def acquire(self, key: str) -> None:
        while True:
            now = time.monotonic()
            chat, overall = self._bucket(key), self._bucket(None)
            wait = max(self._wait_for(chat, now), self._wait_for(overall, now))
            if wait <= 0:
                chat.tokens -= 1
                overall.tokens -= 1
                return
            await asyncio.sleep(wait)

    def pause(self, key: str | None, seconds: float) -> None:
        bucket = self._bucket(key)
        bucket.paused_until = max(bucket.paused_until, time.monotonic() + seconds)
