"""attrs validators shared by every policy: bad options fail at construction, named."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from typing import Any

from failsafe.events import Listener
from failsafe.exceptions import ConfigurationError

Validator = Callable[[Any, Any, Any], None]


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def integer(minimum: int) -> Validator:
    """An integer (not a bool) >= ``minimum``."""

    def check(inst: object, attr: Any, value: object) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ConfigurationError(attr.name, f"must be an integer >= {minimum}, got {value!r}")

    return check


def number(
    *,
    above: float | None = None,
    at_least: float | None = None,
    at_most: float | None = None,
    optional: bool = False,
) -> Validator:
    """A finite number in the given bounds (``None`` too when ``optional``)."""
    bounds = []
    if above is not None:
        bounds.append(f"> {above:g}")
    if at_least is not None:
        bounds.append(f">= {at_least:g}")
    if at_most is not None:
        bounds.append(f"<= {at_most:g}")
    wanted = "a finite number" + (" " + " and ".join(bounds) if bounds else "")
    if optional:
        wanted += " or None"

    def check(inst: object, attr: Any, value: Any) -> None:
        if value is None and optional:
            return
        ok = (
            _is_number(value)
            and math.isfinite(value)
            and (above is None or value > above)
            and (at_least is None or value >= at_least)
            and (at_most is None or value <= at_most)
        )
        if not ok:
            raise ConfigurationError(attr.name, f"must be {wanted}, got {value!r}")

    return check


def boolean(inst: object, attr: Any, value: object) -> None:
    """``True`` or ``False`` (not a truthy string such as ``"false"``)."""
    if not isinstance(value, bool):
        raise ConfigurationError(attr.name, f"must be True or False, got {value!r}")


def random_source(inst: object, attr: Any, value: object) -> None:
    """A `random.Random` (a seeded one, a `random.SystemRandom`...) or ``None``."""
    if value is not None and not isinstance(value, random.Random):
        raise ConfigurationError(
            attr.name, f"must be a random.Random (or None for the shared one), got {value!r}"
        )


def listeners(value: Iterable[Listener]) -> tuple[Listener, ...]:
    """Converter for ``listeners=`` (typed, so that a list of listeners type-checks)."""
    return tuple(value)


def objects(value: Iterable[Any]) -> tuple[Any, ...]:
    """Converter for a sequence of anything, kept as a tuple."""
    return tuple(value)


class _Option:
    """Stands in for an attrs attribute when an option is checked outside attrs."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


def check(name: str, value: object, validator: Validator) -> None:
    """Run one of these validators on a plain keyword argument named ``name``."""
    validator(None, _Option(name), value)
