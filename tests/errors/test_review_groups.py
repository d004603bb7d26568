"""The review pages' failure groups: the list, a group's page, and actions on a whole group."""

from __future__ import annotations

import re

import httpx
import pytest

from failsafe.errors.record import Status
from failsafe.errors.review import CSRF_FIELD
from failsafe.errors.store import Query
from tests.errors.test_review import XSS, Seeded, csrf_of, drive


@pytest.fixture
def seeded() -> Seeded:
    return Seeded()


def rows_of(page: str) -> list[tuple[str, str, str]]:
    """Each group row of the list: (its link's fingerprint, its title, its open count)."""
    return re.findall(
        r'<tr><td><a href="/review/groups/([^"]+)">(.*?)</a>.*?<td class="num">([\d,]+)</td>',
        page,
    )


def fingerprint_of(seeded: Seeded, kind: str) -> str:
    records = {
        seeded.stock1.kind: seeded.stock1,
        seeded.lost.kind: seeded.lost,
        seeded.product.kind: seeded.product,
    }
    return records[kind].fingerprint


def test_the_home_page_lists_failure_groups_with_open_records(seeded: Seeded) -> None:
    async def go(c: httpx.AsyncClient) -> None:
        r = await c.get("/review/")
        assert r.status_code == 200
        rows = {fp: (title, int(n)) for fp, title, n in rows_of(r.text)}
        # two stock records differ only by a number: one group of two
        assert rows[fingerprint_of(seeded, "stock.decrement")][1] == 2
        assert rows[fingerprint_of(seeded, "order.not_found")][1] == 1  # the other resolved
        assert rows[fingerprint_of(seeded, "product.not_found")][1] == 1
        assert len(rows) == 3
        assert "3 groups match" in r.text
        assert XSS not in r.text  # the product's message is the title, escaped
        assert f"no product {XSS}".replace("<", "&lt;").replace(">", "&gt;") in r.text
        # a chart a row, drawn on the server: 2 reports in the last 24 hours for stock
        assert r.text.count('<svg class="chart"') == 3
        assert 'aria-label="2 reports in the last 24 hours"' in r.text
        assert "<script" not in r.text.lower()

    drive(seeded.desk, go)


def test_the_group_list_filters_and_orders(seeded: Seeded) -> None:
    stock = fingerprint_of(seeded, "stock.decrement")
    order = fingerprint_of(seeded, "order.not_found")

    async def go(c: httpx.AsyncClient) -> None:
        largest = await c.get("/review/", params={"order": "largest"})
        assert rows_of(largest.text)[0][0] == stock
        assert '<option value="largest" selected>' in largest.text
        resolved = await c.get("/review/", params={"status": "resolved"})
        assert [fp for fp, _, _ in rows_of(resolved.text)] == [order]
        by_kind = await c.get("/review/", params={"kind": "stock.decrement"})
        assert [fp for fp, _, _ in rows_of(by_kind.text)] == [stock]
        by_source = await c.get("/review/", params={"source": "orders"})
        assert [fp for fp, _, _ in rows_of(by_source.text)] == [order]
        by_text = await c.get("/review/", params={"text": "PRODUCT"})
        assert len(rows_of(by_text.text)) == 1
        none = await c.get("/review/", params={"text": "nothing like this"})
        assert "Nothing to review here." in none.text
        paged = await c.get("/review/", params={"limit": "1", "order": "largest"})
        assert [fp for fp, _, _ in rows_of(paged.text)] == [stock]
        found = re.search(r'rel="next" href="([^"]+)"', paged.text)
        assert found is not None
        second = await c.get(found.group(1).replace("&amp;", "&"))
        assert len(rows_of(second.text)) == 1
        assert rows_of(second.text)[0][0] != stock
        assert 'rel="prev"' in second.text
        bad = await c.get("/review/", params={"order": "biggest"})
        assert bad.status_code == 400
        assert "order must be newest or largest" in bad.text

    drive(seeded.desk, go)


def test_a_group_page_shows_its_numbers_charts_forms_and_only_its_records(
    seeded: Seeded,
) -> None:
    stock = fingerprint_of(seeded, "stock.decrement")

    async def go(c: httpx.AsyncClient) -> None:
        r = await c.get(f"/review/groups/{stock}")
        assert r.status_code == 200
        assert f"<code>{stock}</code>" in r.text
        assert "2 (2 open)" in r.text
        assert "warehouse (2)" in r.text
        assert r.text.count('<svg class="chart"') == 2
        assert 'aria-label="2 reports in the last 168 hours"' in r.text
        # retry needs records in review: these wait for automatic retries, so no retry form
        assert 'class="group-retry"' not in r.text
        assert "Resolve every open record (2 records)" in r.text
        assert "Discard every open record (2 records)" in r.text
        assert seeded.stock1.id[:12] in r.text
        assert seeded.stock2.id[:12] in r.text
        assert seeded.lost.id[:12] not in r.text
        record = await c.get(f"/review/records/{seeded.stock1.id}")
        assert f'href="/review/groups/{stock}"' in record.text

    drive(seeded.desk, go)


def test_a_group_action_asks_to_confirm_with_the_count_then_acts(seeded: Seeded) -> None:
    stock = fingerprint_of(seeded, "stock.decrement")

    async def go(c: httpx.AsyncClient) -> None:
        page = await c.get(f"/review/groups/{stock}")
        form = {CSRF_FIELD: csrf_of(page.text), "actor": "ann", "note": "the database is back"}
        ask = await c.post(f"/review/groups/{stock}/resolve", data=form)
        assert ask.status_code == 200
        assert "This will change 2 records of this group" in ask.text
        assert 'name="confirm" value="yes"' in ask.text
        assert seeded.desk.store.group(stock).open == 2  # the question changed nothing
        done = await c.post(
            f"/review/groups/{stock}/resolve",
            data={
                CSRF_FIELD: csrf_of(ask.text),
                "actor": "ann",
                "note": "the database is back",
                "confirm": "yes",
            },
        )
        assert done.status_code == 303
        assert done.headers["location"] == f"/review/groups/{stock}?done=resolve&changed=2"
        after = await c.get(done.headers["location"])
        assert "Resolved 2 records." in after.text
        assert "No open records: nothing to act on." in after.text

    drive(seeded.desk, go)
    for record in (seeded.stock1, seeded.stock2):
        moved = seeded.desk.get(record.id)
        assert moved.status is Status.RESOLVED
        assert (moved.history[-1].actor, moved.history[-1].note) == ("ann", "the database is back")
    assert seeded.desk.find(Query(statuses=(Status.RESOLVED,))).total == 3


def test_a_group_action_needs_the_csrf_token(seeded: Seeded) -> None:
    stock = fingerprint_of(seeded, "stock.decrement")

    async def go(c: httpx.AsyncClient) -> None:
        r = await c.post(
            f"/review/groups/{stock}/discard", data={"actor": "mallory", "confirm": "yes"}
        )
        assert r.status_code == 403
        assert "CSRF" in r.text

    drive(seeded.desk, go)
    assert seeded.desk.store.group(stock).open == 2


@pytest.mark.parametrize("fingerprint", ["v1-0000000000000000", "not%20one", "x" * 200])
def test_an_unknown_group_is_a_404_page(seeded: Seeded, fingerprint: str) -> None:
    async def go(c: httpx.AsyncClient) -> None:
        r = await c.get(f"/review/groups/{fingerprint}")
        assert r.status_code == 404
        assert "no failure group" in r.text
        stock = fingerprint_of(seeded, "stock.decrement")
        csrf = csrf_of((await c.get(f"/review/groups/{stock}")).text)
        act = await c.post(
            f"/review/groups/{fingerprint}/retry", data={CSRF_FIELD: csrf, "confirm": "yes"}
        )
        assert act.status_code == 404

    drive(seeded.desk, go)
