"""Every live stateful policy, held by weak reference, for the health snapshot and gauges.

Circuit breakers (plain and keyed), bulkheads, rate limiters, adaptive concurrency limits,
retry budgets and queue consumers register themselves when they are built; nothing else
keeps them alive, so a policy that the program drops leaves the registry with it. The
registry is bounded by the objects the program holds.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from typing import Any

__all__: list[str] = []

_lock = threading.Lock()
_items: dict[int, weakref.ref[Any]] = {}
_order = itertools.count()
# Numbers of collected objects, dropped from _items at the next use of the registry. The
# weak reference's callback only appends here: the collector may run it on a thread that
# holds _lock (inside register or forget), so it must neither take the lock nor change
# _items while someone may be iterating it.
_dead: list[int] = []


def _drop_dead() -> None:
    """Forget the collected objects (lock held)."""
    while _dead:
        _items.pop(_dead.pop(), None)


def register(obj: object) -> None:
    """Hold ``obj`` by weak reference until it is collected (or `forget` is called)."""
    number = next(_order)
    ref = weakref.ref(obj, lambda _, number=number: _dead.append(number))  # type: ignore[misc]
    with _lock:
        _drop_dead()
        _items[number] = ref


def forget(obj: object) -> None:
    """Stop listing ``obj`` (a per-key breaker built inside a keyed one, for instance)."""
    with _lock:
        _drop_dead()
        for key, ref in reversed(list(_items.items())):  # usually the newest
            if ref() is obj:
                del _items[key]
                return


def registered() -> list[Any]:
    """The live registered objects, oldest first."""
    with _lock:
        _drop_dead()
        refs = list(_items.values())
    return [obj for obj in (ref() for ref in refs) if obj is not None]
