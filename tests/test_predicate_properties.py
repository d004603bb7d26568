"""The predicate algebra (``|``, ``&``, ``~``) checked against a reference interpreter.

Every predicate is drawn together with its *meaning*: for each side (exception, result)
either ``None`` (the side is absent: it matches nothing) or the set of sample values it
matches. The operators' meaning is then set algebra, and the library must agree with it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import failsafe
from failsafe.predicates import ANY_EXCEPTION, NOTHING, TRANSIENT, Predicate, as_predicate

SETTINGS = settings(max_examples=100, deadline=None)
LIGHT = settings(max_examples=50, deadline=None)  # for the properties implied by the others


class AError(Exception):
    pass


class BError(AError):
    pass


class CError(Exception):
    pass


class DError(ConnectionError):
    pass


class ETimeout(TimeoutError):
    pass


EXC_TYPES: tuple[type[BaseException], ...] = (
    AError,
    BError,
    CError,
    DError,
    ETimeout,
    ValueError,
    KeyError,
    KeyboardInterrupt,
)
# Two instances of each class (distinguished by their argument) so that ``where=`` tests
# that look at the instance have something to tell apart.
EXCEPTIONS: tuple[BaseException, ...] = tuple(t(i) for t in EXC_TYPES for i in (0, 1))
RESULTS: tuple[object, ...] = (None, 0, 1, 2, 503, -7, "", "ok", (), (1,), 3.5, False, True)

Side = frozenset[int] | None  # indexes into EXCEPTIONS / RESULTS matched, or None: absent


class Drawn:
    """A predicate and the meaning it must have."""

    def __init__(self, pred: Predicate, exc: Side, res: Side, text: str, raw: Any = None) -> None:
        self.pred = pred
        self.exc = exc
        self.res = res
        self.text = text
        self.raw = raw  # for a classifier leaf: the raw ``on=`` value it was built from

    def __repr__(self) -> str:
        return self.text


def _exc_set(test: Callable[[BaseException], bool]) -> frozenset[int]:
    return frozenset(i for i, e in enumerate(EXCEPTIONS) if test(e))


def _res_set(test: Callable[[object], bool]) -> frozenset[int]:
    return frozenset(i for i, r in enumerate(RESULTS) if test(r))


def _arg_of(e: BaseException) -> object:
    return e.args[0] if e.args else None


# -- leaves -----------------------------------------------------------------------------------


@st.composite
def exception_leaf(draw: st.DrawFn) -> Drawn:
    types = tuple(draw(st.lists(st.sampled_from(EXC_TYPES), max_size=3, unique=True)))
    use_where = draw(st.booleans())
    classes = types or (Exception,)

    def isa(e: BaseException) -> bool:
        return isinstance(e, classes)

    if use_where:
        wanted = draw(st.sampled_from([0, 1]))

        def where(e: BaseException) -> bool:
            return _arg_of(e) == wanted

        pred = failsafe.exception(*types, where=where)
        meaning = _exc_set(lambda e: isa(e) and where(e))
        text = f"exception{tuple(t.__name__ for t in types)} where arg=={wanted}"
    else:
        pred = failsafe.exception(*types)
        meaning = _exc_set(isa)
        text = f"exception{tuple(t.__name__ for t in types)}"
    return Drawn(pred, meaning, None, text)


@st.composite
def result_leaf(draw: st.DrawFn) -> Drawn:
    chosen = frozenset(draw(st.sets(st.integers(0, len(RESULTS) - 1))))
    matched_values = [RESULTS[i] for i in chosen]

    def test(value: object) -> bool:
        # identity and type, so that 1 / True and 0 / False stay distinct values
        return any(value is v or (type(value) is type(v) and value == v) for v in matched_values)

    return Drawn(failsafe.result(test), None, _res_set(test), f"result in {sorted(chosen)}")


@st.composite
def classifier_leaf(draw: st.DrawFn) -> Drawn:
    """What an ``on=`` option accepts, normalised by ``as_predicate``."""
    form = draw(st.sampled_from(["type", "tuple", "function"]))
    if form == "type":
        t = draw(st.sampled_from(EXC_TYPES))
        return Drawn(as_predicate(t), _exc_set(lambda e: isinstance(e, t)), None, t.__name__, t)
    if form == "tuple":
        ts = tuple(draw(st.lists(st.sampled_from(EXC_TYPES), min_size=1, max_size=3)))
        return Drawn(
            as_predicate(ts),
            _exc_set(lambda e: isinstance(e, ts)),
            None,
            str(tuple(t.__name__ for t in ts)),
            ts,
        )
    wanted = draw(st.sampled_from([0, 1]))

    def fn(e: BaseException) -> Any:
        return 1 if _arg_of(e) == wanted else 0  # truthy / falsy, not bool

    return Drawn(as_predicate(fn), _exc_set(lambda e: bool(fn(e))), None, f"fn(arg=={wanted})", fn)


CONSTANTS = [
    Drawn(NOTHING, None, None, "NOTHING"),
    Drawn(Predicate(), None, None, "Predicate()"),
    Drawn(ANY_EXCEPTION, _exc_set(lambda e: isinstance(e, Exception)), None, "ANY_EXCEPTION"),
    Drawn(
        TRANSIENT,
        _exc_set(lambda e: isinstance(e, ConnectionError | TimeoutError)),
        None,
        "TRANSIENT",
    ),
]

leaves = st.one_of(exception_leaf(), result_leaf(), classifier_leaf(), st.sampled_from(CONSTANTS))


# -- the reference meaning of the operators ---------------------------------------------------


def _or(a: Side, b: Side) -> Side:
    if a is None:
        return b
    if b is None:
        return a
    return a | b


def _and(a: Side, b: Side) -> Side:
    if a is None or b is None:
        return None
    return a & b


def _not(a: Side, universe: int) -> Side:
    if a is None:
        return None
    return frozenset(range(universe)) - a


def or_(a: Drawn, b: Drawn) -> Drawn:
    return Drawn(a.pred | b.pred, _or(a.exc, b.exc), _or(a.res, b.res), f"({a} | {b})")


def and_(a: Drawn, b: Drawn) -> Drawn:
    return Drawn(a.pred & b.pred, _and(a.exc, b.exc), _and(a.res, b.res), f"({a} & {b})")


def not_(a: Drawn) -> Drawn:
    return Drawn(~a.pred, _not(a.exc, len(EXCEPTIONS)), _not(a.res, len(RESULTS)), f"~{a}")


predicates = st.recursive(
    leaves,
    lambda kids: st.one_of(
        st.tuples(kids, kids).map(lambda ab: or_(*ab)),
        st.tuples(kids, kids).map(lambda ab: and_(*ab)),
        kids.map(not_),
    ),
    max_leaves=6,
)
exception_predicates = st.recursive(
    exception_leaf() | classifier_leaf(),
    lambda kids: st.one_of(
        st.tuples(kids, kids).map(lambda ab: or_(*ab)),
        st.tuples(kids, kids).map(lambda ab: and_(*ab)),
        kids.map(not_),
    ),
    max_leaves=6,
)


def exc_matches(p: Predicate) -> frozenset[int]:
    return frozenset(i for i, e in enumerate(EXCEPTIONS) if p.matches_exception(e))


def res_matches(p: Predicate) -> frozenset[int]:
    return frozenset(i for i, r in enumerate(RESULTS) if p.matches_result(r))


def assert_means(p: Predicate, exc: Side, res: Side) -> None:
    """``p`` matches exactly ``exc`` and ``res`` (an absent side matches nothing)."""
    assert p.handles_exceptions == (exc is not None)
    assert p.handles_results == (res is not None)
    assert exc_matches(p) == (exc or frozenset())
    assert res_matches(p) == (res or frozenset())
    for e in EXCEPTIONS:
        assert type(p.matches_exception(e)) is bool
    for r in RESULTS:
        assert type(p.matches_result(r)) is bool


# -- properties -------------------------------------------------------------------------------


@SETTINGS
@given(d=predicates)
def test_every_predicate_means_what_the_reference_says(d: Drawn) -> None:
    """Any expression of |, & and ~ over leaves matches exactly its reference meaning."""
    assert_means(d.pred, d.exc, d.res)


@SETTINGS
@given(a=predicates, b=predicates)
def test_or_matches_iff_either_side_matches(a: Drawn, b: Drawn) -> None:
    """``(a | b)`` matches an exception (a result) iff ``a`` or ``b`` does."""
    p = a.pred | b.pred
    for e in EXCEPTIONS:
        assert p.matches_exception(e) == (
            a.pred.matches_exception(e) or b.pred.matches_exception(e)
        )
    for r in RESULTS:
        assert p.matches_result(r) == (a.pred.matches_result(r) or b.pred.matches_result(r))
    assert p.handles_exceptions == (a.pred.handles_exceptions or b.pred.handles_exceptions)
    assert p.handles_results == (a.pred.handles_results or b.pred.handles_results)


@SETTINGS
@given(a=predicates, b=predicates)
def test_and_matches_iff_both_sides_match(a: Drawn, b: Drawn) -> None:
    """``(a & b)`` matches an exception (a result) iff ``a`` and ``b`` both do."""
    p = a.pred & b.pred
    for e in EXCEPTIONS:
        assert p.matches_exception(e) == (
            a.pred.matches_exception(e) and b.pred.matches_exception(e)
        )
    for r in RESULTS:
        assert p.matches_result(r) == (a.pred.matches_result(r) and b.pred.matches_result(r))


@LIGHT
@given(a=predicates)
def test_double_negation_is_identity_on_present_sides(a: Drawn) -> None:
    """``~~a`` matches exactly what ``a`` matches, and has the same sides present."""
    assert_means(~~a.pred, a.exc, a.res)
    assert exc_matches(~~a.pred) == exc_matches(a.pred)
    assert res_matches(~~a.pred) == res_matches(a.pred)


@SETTINGS
@given(a=predicates)
def test_negation_flips_present_sides_and_keeps_absent_ones_absent(a: Drawn) -> None:
    """``~a`` matches the complement on a present side and still nothing on an absent side."""
    n = ~a.pred
    assert n.handles_exceptions == a.pred.handles_exceptions
    assert n.handles_results == a.pred.handles_results
    for e in EXCEPTIONS:
        if a.pred.handles_exceptions:
            assert n.matches_exception(e) != a.pred.matches_exception(e)
        else:
            assert not n.matches_exception(e)
    for r in RESULTS:
        if a.pred.handles_results:
            assert n.matches_result(r) != a.pred.matches_result(r)
        else:
            assert not n.matches_result(r)


@SETTINGS
@given(a=exception_predicates, b=exception_predicates)
def test_de_morgan_holds_on_exception_sides(a: Drawn, b: Drawn) -> None:
    """On exception predicates, ``~(a | b) == ~a & ~b`` and ``~(a & b) == ~a | ~b``."""
    assert a.pred.handles_exceptions
    assert b.pred.handles_exceptions
    assert exc_matches(~(a.pred | b.pred)) == exc_matches(~a.pred & ~b.pred)
    assert exc_matches(~(a.pred & b.pred)) == exc_matches(~a.pred | ~b.pred)


@LIGHT
@given(a=predicates, b=predicates, c=predicates)
def test_or_and_and_are_associative_and_commutative(a: Drawn, b: Drawn, c: Drawn) -> None:
    """Grouping and order of | and & do not change what matches."""
    ops: list[Callable[[Predicate, Predicate], Predicate]] = [
        lambda x, y: x | y,
        lambda x, y: x & y,
    ]
    for op in ops:
        left = op(op(a.pred, b.pred), c.pred)
        right = op(a.pred, op(b.pred, c.pred))
        swapped = op(op(b.pred, a.pred), c.pred)
        assert exc_matches(left) == exc_matches(right) == exc_matches(swapped)
        assert res_matches(left) == res_matches(right) == res_matches(swapped)


@LIGHT
@given(a=predicates, c=classifier_leaf())
def test_or_accepts_a_classifier_on_either_side(a: Drawn, c: Drawn) -> None:
    """``p | ValueError`` and ``ValueError | p`` mean ``p | as_predicate(ValueError)``."""
    raw = c.raw
    for p in (a.pred | raw, raw | a.pred):
        assert_means(p, _or(a.exc, c.exc), a.res)


@SETTINGS
@given(a=predicates, c=classifier_leaf())
def test_and_accepts_a_classifier_on_either_side(a: Drawn, c: Drawn) -> None:
    """``p & ValueError`` and ``ValueError & p`` mean ``p & as_predicate(ValueError)``."""
    raw = c.raw
    assert_means(a.pred & raw, _and(a.exc, c.exc), _and(a.res, c.res))
    assert_means(raw & a.pred, _and(a.exc, c.exc), _and(a.res, c.res))


def test_example_classifier_on_the_left_of_and() -> None:
    """``ConnectionError & failsafe.exception(where=...)`` works like the mirrored order."""
    loud = failsafe.exception(where=lambda e: "loud" in str(e))
    p = ConnectionError & loud
    assert p.matches_exception(ConnectionError("loud"))
    assert not p.matches_exception(ConnectionError("quiet"))
    assert not p.matches_exception(ValueError("loud"))


@pytest.mark.parametrize("bad", [42, "ValueError", (ValueError, 3), int, None, ValueError()])
def test_as_predicate_rejects_what_is_not_a_classifier(bad: Any) -> None:
    """``as_predicate`` (and so every ``on=``) rejects a non-classifier with ConfigurationError."""
    with pytest.raises(failsafe.ConfigurationError) as info:
        as_predicate(bad)
    assert info.value.option == "on"


def test_as_predicate_returns_a_predicate_unchanged() -> None:
    """A predicate given as ``on=`` is used as is, not wrapped."""
    p = failsafe.exception(KeyError)
    assert as_predicate(p) is p


def test_exception_with_no_types_matches_every_exception_but_not_base_exceptions() -> None:
    """``exception()`` matches every `Exception` and never KeyboardInterrupt/SystemExit."""
    p = failsafe.exception()
    assert all(p.matches_exception(e) for e in EXCEPTIONS if isinstance(e, Exception))
    assert not p.matches_exception(KeyboardInterrupt())
    assert not p.matches_exception(SystemExit())
    assert not p.matches_result(None)
