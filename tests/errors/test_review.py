"""The review pages in process: grouping, filters, escaping, actions, auth and CSRF."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from failsafe.errors.auth import Tokens
from failsafe.errors.desk import ErrorDesk
from failsafe.errors.record import Action, ErrorRecord, Report, Status
from failsafe.errors.review import (
    AUTH_COOKIE,
    CSRF_FIELD,
    LOGIN_BURST,
    LOGIN_EVERY,
    SESSION_SECONDS,
    review_routes,
)
from failsafe.errors.sqlite import SQLiteStore
from failsafe.errors.store import cursor_text
from failsafe.testing import FakeClock

TOKEN = "review-token-123"
XSS = "<script>alert(1)</script>"

Scenario = Callable[[httpx.AsyncClient], Awaitable[None]]


class Seeded:
    """A desk with records of two kinds, one closed, and one carrying a script payload."""

    def __init__(self) -> None:
        self.clock = FakeClock(wall_start=1_700_000_000.0)
        self.desk = ErrorDesk(SQLiteStore(":memory:"), clock=self.clock)
        self.stock1 = self._add("stock.decrement", "OperationalError", Action.RETRY, {"sku": 1})
        self.stock2 = self._add("stock.decrement", "OperationalError", Action.RETRY, {"sku": 2})
        self.lost = self._add(
            "order.not_found", "OrderNotFound", Action.REVIEW, {"orderId": "o-7"}, source="orders"
        )
        self.product = self._add(
            "product.not_found",
            "ProductNotFound",
            Action.REVIEW,
            {"productId": XSS},
            error_message=f"no product {XSS}",
        )
        self.closed = self._add("order.not_found", "OrderNotFound", Action.REVIEW, {"orderId": "c"})
        self.desk.resolve(self.closed.id, actor="ann", note="found it")

    def _add(
        self,
        kind: str,
        error_type: str,
        action: Action,
        payload: dict[str, object],
        *,
        source: str = "warehouse",
        error_message: str | None = None,
    ) -> ErrorRecord:
        report = Report(
            kind=kind,
            action=action,
            source=source,
            payload=payload,
            error_type=error_type,
            error_message=error_message or f"{error_type} for {payload}",
            traceback="Traceback (most recent call last):\n  File 'x.py', line 1\nBoom",
        )
        record, _ = self.desk.report(report, actor=source)
        return record


def drive(desk: ErrorDesk, scenario: Scenario, *, tokens: Tokens | None = None) -> None:
    """Run ``scenario`` against the review routes mounted at /review in a small app."""
    app = Starlette(
        routes=[Mount("/review", routes=review_routes(desk, tokens=tokens or Tokens()))]
    )

    async def main() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            await scenario(c)

    asyncio.run(main())


def csrf_of(page: str) -> str:
    found = re.search(rf'name="{CSRF_FIELD}" value="([0-9a-f]+)"', page)
    assert found is not None, "no CSRF field on the page"
    return found.group(1)


def groups_of(page: str) -> dict[str, str]:
    """Group header text ("kind · error type") -> its count text."""
    found = re.findall(r'<h2 class="group">(.*?) <span class="n">\((.*?)\)</span></h2>', page)
    return dict(found)


@pytest.fixture
def seeded() -> Seeded:
    return Seeded()


def test_list_groups_open_records_by_kind_and_error_type(seeded: Seeded) -> None:
    """The list shows open records only, one header per kind and error type with counts."""

    async def go(c: httpx.AsyncClient) -> None:
        r = await c.get("/review/records")
        assert r.status_code == 200
        assert groups_of(r.text) == {
            "order.not_found · OrderNotFound": "1 record, 1 report",
            "product.not_found · ProductNotFound": "1 record, 1 report",
            "stock.decrement · OperationalError": "2 records, 2 reports",
        }
        assert seeded.stock1.id[:12] in r.text
        assert seeded.lost.id[:12] in r.text
        assert seeded.closed.id[:12] not in r.text
        assert "4 records match" in r.text

    drive(seeded.desk, go)


def test_filters_narrow_the_list(seeded: Seeded) -> None:
    """Status, kind, source and text filters each narrow the list, and the form keeps them."""

    async def go(c: httpx.AsyncClient) -> None:
        r = await c.get("/review/records", params={"status": "resolved"})
        assert list(groups_of(r.text)) == ["order.not_found · OrderNotFound"]
        assert seeded.closed.id[:12] in r.text
        assert '<option value="resolved" selected>' in r.text
        r = await c.get("/review/records", params={"kind": "stock.decrement"})
        assert list(groups_of(r.text)) == ["stock.decrement · OperationalError"]
        r = await c.get("/review/records", params={"source": "orders"})
        assert list(groups_of(r.text)) == ["order.not_found · OrderNotFound"]
        assert 'name="source" value="orders"' in r.text
        r = await c.get("/review/records", params={"text": "o-7", "status": "all"})
        assert groups_of(r.text) == {"order.not_found · OrderNotFound": "1 record, 1 report"}
        assert seeded.lost.id[:12] in r.text
        r = await c.get("/review/records", params={"text": "nothing like this"})
        assert groups_of(r.text) == {}
        assert "Nothing to review here." in r.text

    drive(seeded.desk, go)


def test_bad_filters_get_a_clear_400(seeded: Seeded) -> None:
    """An unknown status or a non-numeric limit is a 400 naming the problem, not a 500."""

    async def go(c: httpx.AsyncClient) -> None:
        r = await c.get("/review/records", params={"status": "lost"})
        assert r.status_code == 400
        assert "status must be one of" in r.text
        r = await c.get("/review/records", params={"limit": "ten"})
        assert r.status_code == 400
        assert "limit must be a whole number" in r.text
        r = await c.get("/review/records", params={"offset": "-1"})
        assert r.status_code == 400
        assert "offset must be from 0 to 1000000000" in r.text

    drive(seeded.desk, go)


def test_pagination_links_keep_the_filters(seeded: Seeded) -> None:
    """With a page size of one, next links walk the records by cursor and keep the filters."""

    async def go(c: httpx.AsyncClient) -> None:
        r = await c.get("/review/records", params={"kind": "stock.decrement", "limit": "1"})
        assert "showing 1-1" in r.text
        assert 'rel="prev"' not in r.text
        assert 'rel="first"' not in r.text
        found = re.search(r'rel="next" href="([^"]+)"', r.text)
        assert found is not None
        href = found.group(1).replace("&amp;", "&")
        query = parse_qs(urlsplit(href).query)
        assert query["kind"] == ["stock.decrement"]
        assert "offset" not in query
        first_id = re.search(r"/records/([0-9a-f]+)", r.text)
        assert first_id is not None
        record = seeded.desk.get(first_id.group(1))
        assert query["after"] == [cursor_text((record.created_at, record.id))]
        second = await c.get(href)
        assert "showing 1 older than the page before" in second.text
        assert 'rel="first"' in second.text
        assert 'rel="next"' not in second.text  # the count says nothing is left
        ids = {seeded.stock1.id[:12], seeded.stock2.id[:12]}
        assert {i for i in ids if i in r.text} | {i for i in ids if i in second.text} == ids
        # a link with an offset (from an older page) still works, with a previous link
        by_offset = await c.get(
            "/review/records", params={"kind": "stock.decrement", "limit": "1", "offset": "1"}
        )
        assert "showing 2-2" in by_offset.text
        assert 'rel="prev"' in by_offset.text
        bad = await c.get("/review/records", params={"after": "yesterday"})
        assert bad.status_code == 400
        assert "not a page cursor" in bad.text

    drive(seeded.desk, go)


def test_past_the_counted_limit_the_page_says_plus_and_offers_the_next_page(
    seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More matches than COUNT_LIMIT: "N+ records match", and a full page links onwards."""
    import failsafe.errors._sqlstore as sqlstore

    monkeypatch.setattr(sqlstore, "COUNT_LIMIT", 2)

    async def go(c: httpx.AsyncClient) -> None:
        r = await c.get("/review/records", params={"limit": "2"})
        assert "2+ records match" in r.text
        assert 'rel="next"' in r.text  # the count stopped at 2; the page looked one further
        found = re.search(r'rel="next" href="([^"]+)"', r.text)
        assert found is not None
        last = await c.get(found.group(1).replace("&amp;", "&"))
        assert "2+ records match" in last.text
        assert 'rel="next"' not in last.text  # nothing past it: no link to an empty page

    drive(seeded.desk, go)


def test_values_are_escaped_so_a_script_payload_is_inert(seeded: Seeded) -> None:
    """A payload or message holding a script tag renders as text on both pages, under a CSP."""

    async def go(c: httpx.AsyncClient) -> None:
        listing = await c.get("/review/records")
        page = await c.get(f"/review/records/{seeded.product.id}")
        for r in (listing, page):
            assert XSS not in r.text
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in r.text
            assert "script-src" not in r.headers["content-security-policy"]
            assert "default-src 'none'" in r.headers["content-security-policy"]
        assert "<script" not in page.text.lower()

    drive(seeded.desk, go)


def test_record_page_shows_payload_error_attempts_and_history(seeded: Seeded) -> None:
    """The record page shows the pretty payload, the error, the history and the three forms."""
    seeded.clock.advance(7200.0)  # past the first retry's backoff
    claimed = seeded.desk.claim_due(limit=10)
    assert claimed
    seeded.desk.attempted(claimed[0], ok=False, detail="HTTP 503: db down")
    record_id = claimed[0].id

    async def go(c: httpx.AsyncClient) -> None:
        r = await c.get(f"/review/records/{record_id}")
        assert r.status_code == 200
        assert "{\n  &quot;sku&quot;: " in r.text  # indented JSON
        assert "OperationalError" in r.text
        assert "Traceback (most recent call last)" in r.text
        assert "HTTP 503: db down" in r.text
        assert "failed" in r.text
        assert "2023-11-14 22:13:20 UTC" in r.text  # the fake clock's start, as UTC
        history = r.text.split('class="history"')[1]
        assert "warehouse" in history
        assert "worker" in history
        for action in ("resolve", "discard"):
            assert f'action="/review/records/{record_id}/{action}"' in r.text
        # pending_retry cannot be queued again: no retry form
        assert f"/review/records/{record_id}/retry" not in r.text
        review = await c.get(f"/review/records/{seeded.lost.id}")
        assert f'action="/review/records/{seeded.lost.id}/retry"' in review.text
        closed = await c.get(f"/review/records/{seeded.closed.id}")
        assert "it is closed" in closed.text
        assert "found it" in closed.text
        missing = await c.get("/review/records/nope")
        assert missing.status_code == 404
        assert "no error record with id &#x27;nope&#x27;" in (missing.text)

    drive(seeded.desk, go)


@pytest.mark.parametrize(
    ("action", "status", "message"),
    [
        ("resolve", Status.RESOLVED, "Resolved."),
        ("retry", Status.PENDING_RETRY, "Queued for a retry now."),
        ("discard", Status.DISCARDED, "Discarded."),
    ],
)
def test_each_action_moves_the_record_and_redirects_back(
    seeded: Seeded, action: str, status: Status, message: str
) -> None:
    """Each action form changes the record with the actor and note, then 303s to the record."""
    record_id = seeded.lost.id

    async def go(c: httpx.AsyncClient) -> None:
        page = await c.get(f"/review/records/{record_id}")
        r = await c.post(
            f"/review/records/{record_id}/{action}",
            data={CSRF_FIELD: csrf_of(page.text), "actor": "Maria <b>", "note": "called the shop"},
        )
        assert r.status_code == 303
        assert r.headers["location"] == f"/review/records/{record_id}?done={action}"
        after = await c.get(r.headers["location"])
        assert message in after.text
        assert "Maria &lt;b&gt;" in after.text
        assert "called the shop" in after.text
        if status is Status.PENDING_RETRY:  # still open: the forms remember the name
            assert 'name="actor" value="Maria &lt;b&gt;"' in after.text
        else:
            assert "it is closed" in after.text

    drive(seeded.desk, go)
    record = seeded.desk.get(record_id)
    assert record.status is status
    assert (record.history[-1].actor, record.history[-1].note) == ("Maria <b>", "called the shop")


def test_an_empty_name_acts_as_reviewer(seeded: Seeded) -> None:
    """A blank "your name" field is recorded as the default actor, and a blank note as none."""

    async def go(c: httpx.AsyncClient) -> None:
        page = await c.get(f"/review/records/{seeded.lost.id}")
        assert 'name="actor" value="reviewer"' in page.text
        r = await c.post(
            f"/review/records/{seeded.lost.id}/discard",
            data={CSRF_FIELD: csrf_of(page.text), "actor": "  ", "note": ""},
        )
        assert r.status_code == 303

    drive(seeded.desk, go)
    last = seeded.desk.get(seeded.lost.id).history[-1]
    assert (last.actor, last.note) == ("reviewer", None)


def test_a_refused_move_shows_the_reason_on_the_record_page(seeded: Seeded) -> None:
    """Resolving a resolved record answers 409 with the reason on the page, changing nothing."""
    before = seeded.desk.get(seeded.closed.id)

    async def go(c: httpx.AsyncClient) -> None:
        page = await c.get(f"/review/records/{seeded.lost.id}")
        token = csrf_of(page.text)
        r = await c.post(
            f"/review/records/{seeded.closed.id}/resolve",
            data={CSRF_FIELD: token, "actor": "bob", "note": "again"},
        )
        assert r.status_code == 409
        assert f"record {seeded.closed.id} is resolved; it cannot become resolved" in r.text
        assert 'role="alert"' in r.text
        assert "<h1>order.not_found" in r.text
        missing = await c.post("/review/records/nope/retry", data={CSRF_FIELD: token})
        assert missing.status_code == 404
        long_name = await c.post(
            f"/review/records/{seeded.lost.id}/resolve",
            data={CSRF_FIELD: token, "actor": "x" * 201},
        )
        assert long_name.status_code == 422
        assert "your name is over 200 characters" in long_name.text

    drive(seeded.desk, go)
    assert seeded.desk.get(seeded.closed.id) == before
    assert seeded.desk.get(seeded.lost.id).status is Status.NEEDS_REVIEW


def test_forms_need_a_form_body(seeded: Seeded) -> None:
    """A POST that is not a urlencoded form is a 415, and a huge one a 413, never a 500."""

    async def go(c: httpx.AsyncClient) -> None:
        r = await c.post(f"/review/records/{seeded.lost.id}/resolve", json={"note": "x"})
        assert r.status_code == 415
        big = await c.post(f"/review/records/{seeded.lost.id}/resolve", data={"note": "x" * 70_000})
        assert big.status_code == 413

    drive(seeded.desk, go)
    assert seeded.desk.get(seeded.lost.id).status is Status.NEEDS_REVIEW


def test_without_the_token_pages_redirect_to_login_and_posts_are_401(seeded: Seeded) -> None:
    """With a review token set, a GET goes to the login page and a POST is refused."""

    async def go(c: httpx.AsyncClient) -> None:
        r = await c.get("/review/records/" + seeded.lost.id)
        assert r.status_code == 303
        target = urlsplit(r.headers["location"])
        assert target.path == "/review/login"
        assert parse_qs(target.query)["next"] == [f"/review/records/{seeded.lost.id}"]
        wrong = await c.get("/review/", headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 303
        post = await c.post(f"/review/records/{seeded.lost.id}/resolve", data={"note": "x"})
        assert post.status_code == 401
        assert post.headers["www-authenticate"].startswith("Bearer")
        login = await c.get(r.headers["location"])
        assert login.status_code == 200
        assert 'type="password" name="token"' in login.text

    drive(seeded.desk, go, tokens=Tokens(review=TOKEN))
    assert seeded.desk.get(seeded.lost.id).status is Status.NEEDS_REVIEW


def test_a_bearer_header_opens_the_pages(seeded: Seeded) -> None:
    """The review token as an Authorization header opens the pages without logging in."""

    async def go(c: httpx.AsyncClient) -> None:
        r = await c.get("/review/", headers={"authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200
        assert "stock.decrement" in r.text

    drive(seeded.desk, go, tokens=Tokens(review=TOKEN))


def test_login_sets_a_strict_httponly_cookie_and_a_wrong_token_is_refused(seeded: Seeded) -> None:
    """The login form refuses a wrong token, and the right one sets the cookie and goes on."""

    async def go(c: httpx.AsyncClient) -> None:
        wrong = await c.post("/review/login", data={"token": "guess", "next": "/review/"})
        assert wrong.status_code == 401
        assert "not the review token" in wrong.text
        assert "set-cookie" not in wrong.headers
        r = await c.post(
            "/review/login", data={"token": TOKEN, "next": f"/review/records/{seeded.lost.id}"}
        )
        assert r.status_code == 303
        assert r.headers["location"] == f"/review/records/{seeded.lost.id}"
        cookie = r.headers["set-cookie"]
        assert cookie.startswith(f"{AUTH_COOKIE}=")
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie
        assert "Path=/review/" in cookie
        page = await c.get(r.headers["location"])
        assert page.status_code == 200
        assert "OrderNotFound" in page.text
        done = await c.post(
            f"/review/records/{seeded.lost.id}/resolve",
            data={CSRF_FIELD: csrf_of(page.text), "note": "ok"},
        )
        assert done.status_code == 303
        out = await c.post("/review/logout", data={CSRF_FIELD: csrf_of(page.text)})
        assert out.status_code == 303
        assert f'{AUTH_COOKIE}=""' in out.headers["set-cookie"]
        assert (await c.get("/review/")).status_code == 303

    drive(seeded.desk, go, tokens=Tokens(review=TOKEN))
    assert seeded.desk.get(seeded.lost.id).status is Status.RESOLVED


def test_login_never_redirects_to_another_site(seeded: Seeded) -> None:
    """A ``next`` outside the review pages (another host) is replaced by the list page."""

    async def go(c: httpx.AsyncClient) -> None:
        for target in ("//evil.example/review/", "https://evil.example/", "/elsewhere"):
            r = await c.post("/review/login", data={"token": TOKEN, "next": target})
            assert r.headers["location"] == "/review/"

    drive(seeded.desk, go, tokens=Tokens(review=TOKEN))


def test_a_post_without_the_csrf_token_is_403(seeded: Seeded) -> None:
    """A logged-in POST with a missing or wrong CSRF token is refused and changes nothing."""

    async def go(c: httpx.AsyncClient) -> None:
        await c.post("/review/login", data={"token": TOKEN, "next": "/review/"})
        url = f"/review/records/{seeded.lost.id}/discard"
        missing = await c.post(url, data={"note": "x"})
        assert missing.status_code == 403
        assert "CSRF token is missing or wrong" in missing.text
        wrong = await c.post(url, data={"note": "x", CSRF_FIELD: "0" * 64})
        assert wrong.status_code == 403

    drive(seeded.desk, go, tokens=Tokens(review=TOKEN))
    assert seeded.desk.get(seeded.lost.id).status is Status.NEEDS_REVIEW


def test_the_csrf_token_depends_on_the_review_token(seeded: Seeded) -> None:
    """Two services with different review tokens issue different CSRF tokens."""
    seen: list[str] = []

    def collect(token: str) -> Scenario:
        async def go(c: httpx.AsyncClient) -> None:
            page = await c.get(
                f"/review/records/{seeded.lost.id}", headers={"authorization": f"Bearer {token}"}
            )
            seen.append(csrf_of(page.text))

        return go

    drive(seeded.desk, collect("a-token"), tokens=Tokens(review="a-token"))
    drive(seeded.desk, collect("a-token"), tokens=Tokens(review="a-token"))
    drive(seeded.desk, collect("b-token"), tokens=Tokens(review="b-token"))
    assert seen[0] == seen[1] != seen[2]
    assert TOKEN not in seen
    assert "a-token" not in seen[0]


# -- login sessions and the limit on guesses ---------------------------------------------------


def _app(desk: ErrorDesk) -> Starlette:
    return Starlette(
        routes=[Mount("/review", routes=review_routes(desk, tokens=Tokens(review=TOKEN)))]
    )


def _client(app: Starlette, ip: str = "10.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(ip, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def test_the_session_cookie_is_not_the_token_and_cannot_be_forged(seeded: Seeded) -> None:
    """The cookie holds a signed session id: the token itself, or an altered cookie, is refused."""

    async def main() -> None:
        app = _app(seeded.desk)
        async with _client(app) as c:
            r = await c.post("/review/login", data={"token": TOKEN, "next": "/review/"})
            cookie = c.cookies[AUTH_COOKIE]
            assert TOKEN not in cookie
            assert "Max-Age=43200" in r.headers["set-cookie"]
            assert (await c.get("/review/")).status_code == 200
        issued, nonce, mac = cookie.split(".")
        forged = [
            TOKEN,
            f"{issued}.{nonce}.{'0' * len(mac)}",
            f"{int(issued) + 1}.{nonce}.{mac}",
            f"{issued}.other.{mac}",
            "x" * 300,
        ]
        for value in forged:
            async with _client(app) as c:
                c.cookies.set(AUTH_COOKIE, value)
                assert (await c.get("/review/")).status_code == 303, value

    asyncio.run(main())


def test_a_session_ends_after_twelve_hours(seeded: Seeded) -> None:
    async def main() -> None:
        async with _client(_app(seeded.desk)) as c:
            await c.post("/review/login", data={"token": TOKEN, "next": "/review/"})
            seeded.clock.advance(SESSION_SECONDS - 1)
            assert (await c.get("/review/")).status_code == 200
            seeded.clock.advance(1)
            assert (await c.get("/review/")).status_code == 303  # to the login form

    asyncio.run(main())


def test_the_csrf_token_belongs_to_one_login_session(seeded: Seeded) -> None:
    """Two logins get two CSRF tokens; one session's token does not work in the other."""

    async def main() -> None:
        app = _app(seeded.desk)
        url = f"/review/records/{seeded.lost.id}"
        async with _client(app) as first, _client(app) as second:
            for c in (first, second):
                await c.post("/review/login", data={"token": TOKEN, "next": "/review/"})
            one = csrf_of((await first.get(url)).text)
            two = csrf_of((await second.get(url)).text)
            assert one != two
            crossed = await second.post(f"{url}/discard", data={CSRF_FIELD: one, "actor": "x"})
            assert crossed.status_code == 403
            assert seeded.desk.get(seeded.lost.id).status is Status.NEEDS_REVIEW
            own = await second.post(f"{url}/discard", data={CSRF_FIELD: two, "actor": "x"})
            assert own.status_code == 303
        assert seeded.desk.get(seeded.lost.id).status is Status.DISCARDED

    asyncio.run(main())


def test_failed_logins_are_limited_per_client(seeded: Seeded) -> None:
    """Five wrong guesses, then 429 with Retry-After, even for the right token.

    Then one more guess every 12 s; another client is not slowed; a success starts the
    client afresh.
    """

    async def main() -> None:
        app = _app(seeded.desk)
        async with _client(app, "10.0.0.1") as guesser, _client(app, "10.0.0.2") as other:
            for n in range(LOGIN_BURST):
                r = await guesser.post("/review/login", data={"token": f"guess-{n}"})
                assert r.status_code == 401
            for token in ("guess-x", TOKEN):
                limited = await guesser.post("/review/login", data={"token": token})
                assert limited.status_code == 429
                assert limited.headers["retry-after"] == str(int(LOGIN_EVERY))
                assert "Too many failed logins" in limited.text
                assert AUTH_COOKIE not in guesser.cookies
            ok = await other.post("/review/login", data={"token": TOKEN, "next": "/review/"})
            assert ok.status_code == 303
            seeded.clock.advance(LOGIN_EVERY)
            assert (await guesser.post("/review/login", data={"token": "g"})).status_code == 401
            assert (await guesser.post("/review/login", data={"token": "g"})).status_code == 429
            seeded.clock.advance(LOGIN_EVERY)
            right = await guesser.post("/review/login", data={"token": TOKEN, "next": "/review/"})
            assert right.status_code == 303
            for _ in range(LOGIN_BURST):  # afresh: a full burst again
                assert (await guesser.post("/review/login", data={"token": "g"})).status_code == 401

    asyncio.run(main())


# -- bad input is a 4xx page, never a 500 ---------------------------------------------------------


def test_bad_list_parameters_are_a_400_page_naming_them(seeded: Seeded) -> None:
    """An offset past 1e9 (SQLite cannot hold it) or a NUL (PostgreSQL refuses it): 400."""

    async def go(c: httpx.AsyncClient) -> None:
        cases = {
            "offset=1000000001": "offset must be from 0 to 1000000000",
            f"offset={10**30}": "offset must be from 0 to 1000000000",
            "offset=" + "9" * 5000: "offset must be a whole number",
            "text=a%00b": "text must not contain NUL",
            "kind=k%00": "kind must not contain NUL",
            "source=%00": "source must not contain NUL",
            "status=open%00": "open\\x00",
        }
        for path in ("/review/", "/review/records"):
            for query, words in cases.items():
                r = await c.get(f"{path}?{query}")
                assert r.status_code == 400, (path, query, r.status_code)
                assert words in r.text, (path, query)
            assert (await c.get(f"{path}?offset=1000000000")).status_code == 200

    drive(seeded.desk, go)


def test_an_impossible_record_id_is_a_404_page(seeded: Seeded) -> None:
    """A NUL or an over-long id is no record: 404 for the page and for every action."""

    async def go(c: httpx.AsyncClient) -> None:
        page = await c.get(f"/review/records/{seeded.lost.id}")
        csrf = csrf_of(page.text)
        for bad in ("a%00b", "x" * 201):
            r = await c.get(f"/review/records/{bad}")
            assert r.status_code == 404, bad
            assert "no error record" in r.text
            for action in ("resolve", "retry", "discard"):
                done = await c.post(f"/review/records/{bad}/{action}", data={CSRF_FIELD: csrf})
                assert done.status_code == 404, (bad, action)

    drive(seeded.desk, go)
