"""`Failover`: try an ordered list of targets, moving to the next when one fails."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from inspect import isawaitable
from typing import Any

import attrs

from failsafe import _validators as _v
from failsafe._policy import AsyncRunner, Policy, SyncRunner
from failsafe.context import _target
from failsafe.events import FailedOver, Listener, _emit
from failsafe.exceptions import AllTargetsFailed, ConfigurationError, PolicyRejected, TargetFailure
from failsafe.outcome import Outcome
from failsafe.predicates import TRANSIENT, Classifier, Predicate, ResultTest, classify

__all__ = ["Failover"]


def _targets(value: Sequence[object]) -> tuple[object, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise ConfigurationError("targets", f"must be a sequence of targets, got {value!r}")
    if not value:
        raise ConfigurationError("targets", "must name at least one target")
    return tuple(value)


@attrs.frozen(repr=False)
class Failover(Policy):
    """Call the operation against each target in order until one succeeds.

    The operation learns its target from ``failsafe.current_context().target``. ``policy``
    (often a [`Retry`][failsafe.Retry], or a pipeline with a keyed breaker) runs around each
    target's attempts: the order flow's "the first try plus three retries on Warehouse 1, then
    Warehouse 2" is ``Failover([w1, w2], policy=Retry(attempts=4))``.

    A failure (``on`` / ``on_result``; by default connection errors, timeouts and policy
    rejections such as an open circuit) moves to the next target. Any other exception
    reaches the caller unchanged at once. When every target has failed, the caller gets
    [`AllTargetsFailed`][failsafe.AllTargetsFailed], which lists each target's outcome and
    chains the last exception as its ``__cause__``.

    Args:
        targets: The targets, in order of preference (for example base URLs).
        policy: A policy run around the operation for each target.
        on: Which exceptions move to the next target (default:
            [`TRANSIENT`][failsafe.predicates.TRANSIENT] errors and `PolicyRejected`).
        on_result: A test on returned values; a true result moves to the next target.
        on_discard: Called with each such result when the next target is tried (to release
            it); the last target's result is not discarded: it is in the error. Under
            ``call_async`` it may be a coroutine function.
        listeners: Receive a [`FailedOver`][failsafe.events.FailedOver] event per move.
        name: Names this policy in events and reprs.

    Raises:
        ConfigurationError: At construction, if ``targets`` is empty or not a sequence.

    Example:
        ```python
        import failsafe

        def get_stock(sku: str) -> int:
            base = failsafe.current_context().target
            ...

        failover = failsafe.Failover(["http://w1:8001", "http://w2:8002"], policy=failsafe.Retry())
        failover.call(get_stock, "sku-1")
        ```
    """

    targets: Sequence[object] = attrs.field(converter=_targets)
    policy: Policy | None = attrs.field(default=None, kw_only=True)
    on: Classifier = attrs.field(default=TRANSIENT | PolicyRejected, kw_only=True)
    on_result: ResultTest | None = attrs.field(default=None, kw_only=True)
    on_discard: Callable[[Any], object] | None = attrs.field(default=None, kw_only=True)
    listeners: Sequence[Listener] = attrs.field(default=(), converter=_v.listeners, kw_only=True)
    name: str = attrs.field(default="failover", kw_only=True)
    _predicate: Predicate = attrs.field(init=False, eq=False)

    def __attrs_post_init__(self) -> None:
        if self.policy is not None and not isinstance(self.policy, Policy):
            raise ConfigurationError("policy", f"must be a failsafe policy, got {self.policy!r}")
        object.__setattr__(self, "_predicate", classify(self.on, self.on_result))

    def _moved(self, failures: list[TargetFailure], index: int, outcome: Outcome[Any]) -> None:
        target = self.targets[index]
        failures.append(TargetFailure(target, outcome))
        if index + 1 < len(self.targets):
            _emit(
                self.listeners,
                FailedOver,
                policy=self.name,
                from_target=target,
                to_target=self.targets[index + 1],
                outcome=outcome,
            )

    @staticmethod
    def _all_failed(failures: list[TargetFailure]) -> AllTargetsFailed:
        error = AllTargetsFailed(failures)
        error.__cause__ = failures[-1].outcome.exception
        return error

    def _bind_sync(self, nxt: SyncRunner) -> SyncRunner:
        inner = self.policy._bind_sync(nxt) if self.policy is not None else nxt
        matches_exception, matches_result = self._predicate._raw_tests()
        targets = self.targets
        moved = self._moved
        discard, last = self.on_discard, len(self.targets) - 1

        def failover_sync(fn: Any, args: Any, kwargs: Any) -> Any:
            failures: list[TargetFailure] = []
            for index, target in enumerate(targets):
                token = _target.set(target)
                try:
                    value = inner(fn, args, kwargs)
                except Exception as exc:
                    if not matches_exception(exc):
                        raise
                    moved(failures, index, Outcome(exception=exc))
                    continue
                finally:
                    _target.reset(token)
                if matches_result is None or not matches_result(value):
                    # a failed outcome's traceback holds this frame, which holds the list:
                    # empty it so the failures are freed now, not by the cycle collector
                    failures.clear()
                    return value
                if discard is not None and index < last:
                    discard(value)
                moved(failures, index, Outcome(value))
            raise self._all_failed(failures)

        return failover_sync

    def _bind_async(self, nxt: AsyncRunner) -> AsyncRunner:
        inner = self.policy._bind_async(nxt) if self.policy is not None else nxt
        matches_exception, matches_result = self._predicate._raw_tests()
        targets = self.targets
        moved = self._moved
        discard, last = self.on_discard, len(self.targets) - 1

        async def failover_async(fn: Any, args: Any, kwargs: Any) -> Any:
            failures: list[TargetFailure] = []
            for index, target in enumerate(targets):
                token = _target.set(target)
                try:
                    value = await inner(fn, args, kwargs)
                except Exception as exc:
                    if not matches_exception(exc):
                        raise
                    moved(failures, index, Outcome(exception=exc))
                    continue
                finally:
                    _target.reset(token)
                if matches_result is None or not matches_result(value):
                    failures.clear()  # see failover_sync: no cycle left for the collector
                    return value
                if discard is not None and index < last:
                    released = discard(value)
                    if isawaitable(released):
                        await released
                moved(failures, index, Outcome(value))
            raise self._all_failed(failures)

        return failover_async

    def describe(self) -> str:
        """Say in words what this failover does."""
        each = f", each under {self.policy.describe()}" if self.policy is not None else ""
        return f"failover {self.name!r}: {len(self.targets)} targets in order{each}"
