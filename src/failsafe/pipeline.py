"""`Pipeline`: compose policies, outermost first."""

from __future__ import annotations

from typing import Any

from failsafe._policy import AsyncRunner, Policy, SyncRunner
from failsafe.exceptions import ConfigurationError

__all__ = ["Pipeline"]


class Pipeline(Policy):
    """Policies composed around one call, **outermost first** (as Failsafe for Java and Polly).

    ``Pipeline(Fallback(x), Retry(), CircuitBreaker(), Timeout(1))`` runs the call under a
    1 s timeout, inside a breaker, inside a retry, inside a fallback: every attempt of the
    retry is timed and judged by the breaker, and the fallback sees only the final outcome.
    A pipeline is itself a policy, so pipelines nest.

    Args:
        *policies: The policies, outermost first.
        name: Names the pipeline in its repr.

    Raises:
        ConfigurationError: If an argument is not a failsafe policy.

    Thread-safety: as safe as its policies (all of failsafe's are safe to share).

    Example:
        ```python
        from failsafe import CircuitBreaker, Pipeline, Retry, Timeout

        pipeline = Pipeline(Retry(attempts=3), CircuitBreaker(), Timeout(2.0))
        pipeline.call(fetch, "sku-1")

        @pipeline
        async def fetch_async(sku: str) -> dict[str, int]: ...
        ```
    """

    __slots__ = ("name", "policies")

    def __init__(self, *policies: Policy, name: str = "pipeline") -> None:
        for index, policy in enumerate(policies):
            if not isinstance(policy, Policy):
                raise ConfigurationError(
                    f"policies[{index}]", f"must be a failsafe policy, got {policy!r}"
                )
        self.policies: tuple[Policy, ...] = policies
        self.name = name

    def _bind_sync(self, nxt: SyncRunner) -> SyncRunner:
        for policy in reversed(self.policies):
            nxt = policy._bind_sync(nxt)
        return nxt

    def _bind_async(self, nxt: AsyncRunner) -> AsyncRunner:
        innermost = nxt
        for policy in reversed(self.policies):
            nxt = policy._bind_async(nxt)
        # no policy (or only ones that bind to nothing, such as a Chaos switched off): the
        # innermost stage returns the function's own awaitable; call_async promises a coroutine
        return _as_coroutine(nxt) if nxt is innermost else nxt

    def describe(self) -> str:
        """Say in words what the composition does, outermost first."""
        if not self.policies:
            return "no policy"
        return ", around ".join(p.describe() for p in self.policies)

    def __repr__(self) -> str:
        return f"<Pipeline {self.name!r}: {self.describe()}, around the call>"


def _as_coroutine(nxt: AsyncRunner) -> AsyncRunner:
    async def run(fn: Any, args: Any, kwargs: Any) -> Any:
        return await nxt(fn, args, kwargs)

    return run
