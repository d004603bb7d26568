"""Calling the user's enrichers safely, for every telemetry listener (OpenTelemetry, Prometheus).

An enricher that raises (or returns something other than a mapping) is skipped whole: its
first failure is logged at WARNING, later ones at DEBUG, with the exception's type only (its
message may hold what the enricher read). Values that are not ``str``, ``bool``, ``int`` or
``float`` are dropped. The memory of who failed is bounded by the number of enrichers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

from failsafe.events import Enricher, Event
from failsafe.exceptions import ConfigurationError

__all__: list[str] = []

_log = logging.getLogger("failsafe.events")

Attributes = dict[str, str | bool | int | float]


def type_name(error: BaseException) -> str:
    """The exception's qualified type name (``ConnectionError``, ``httpx.ConnectTimeout``)."""
    kind = type(error)
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


class Enrichers:
    """The user's enrichers; calling the object gives the attributes they add for an event."""

    __slots__ = ("_items", "_warned")

    def __init__(self, enrichers: Iterable[Enricher]) -> None:
        items = tuple(enrichers)
        for enricher in items:
            if not callable(enricher):
                raise ConfigurationError(
                    "enrichers", f"must be callables taking an event, got {enricher!r}"
                )
        self._items = items
        self._warned: set[int] = set()  # indexes into _items

    def __bool__(self) -> bool:
        return bool(self._items)

    def __iter__(self) -> Iterator[Enricher]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __call__(self, event: Event | None) -> Attributes:
        """The attributes every enricher gives for ``event`` (``None``: no event)."""
        found: Attributes = {}
        for index, enricher in enumerate(self._items):
            try:
                given = enricher(event)
                if not given:
                    continue
                taken: Attributes = {}  # taken whole or not at all, if it fails half-way
                for key, value in given.items():
                    if isinstance(key, str) and isinstance(value, str | bool | int | float):
                        taken[key] = value
                found.update(taken)
            except Exception as exc:
                if index in self._warned:
                    _log.debug("failsafe enricher %r failed again (%s)", enricher, type_name(exc))
                else:
                    self._warned.add(index)
                    _log.warning(
                        "failsafe enricher %r raised %s; its attributes are skipped"
                        " (later failures are logged at DEBUG)",
                        enricher,
                        type_name(exc),
                    )
        return found

    def add_to(self, attributes: Attributes, event: Event | None) -> Attributes:
        """``attributes`` with the enrichers' added (failsafe's own keys win)."""
        if not self._items:
            return attributes
        return {**self(event), **attributes}
