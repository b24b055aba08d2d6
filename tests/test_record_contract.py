"""The record API's contract (docs/storage.md), run against every engine in :data:`ENGINES`.

Each test starts a real hub whose store is the engine under test, with two collections of its
own, and talks to ``hub.records`` as a feature plugin does. An engine joins the suite by adding
an entry to :data:`ENGINES`: a function that returns the plugin providing it (``None``: the
hub's default engine, SQLite).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from meshhub import hookimpl
from meshhub.errors import InvalidRequest
from meshhub.records import Collection, Conflict, In, Range, Records

ITEMS = Collection("contract_items", indexes=("state", "n", "tag"), search=("title", "body"),
                   feed=True)
PLAIN = Collection("contract_plain")
WORDS = Collection("contract_words", indexes=("order",), search=("from", "to"))  # SQL words

ENGINES: dict[str, Callable[[Any], object | None]] = {
    "sqlite": lambda tmp_path: None,
}


class Declares:
    @hookimpl
    def meshhub_register_collections(self, register):
        register(ITEMS)
        register(PLAIN)
        register(WORDS)


Opener = Callable[[], Awaitable[Records]]


@pytest.fixture(params=sorted(ENGINES))
def open_records(request, inproc, tmp_path) -> Opener:
    """Start (or start again, on the same data) a hub on the engine; returns its records."""
    engine = ENGINES[request.param](tmp_path)
    running: list[Any] = []

    async def start() -> Records:
        for served in running:
            await served.stop()
        plugins: list[tuple[str, object]] = [("contract", Declares())]
        if engine is not None:
            plugins.append(("engine", engine))
        running.append(await inproc(*plugins))
        return running[-1].hub.records

    return start


async def test_put_get_delete_and_revisions(open_records: Opener) -> None:
    records = await open_records()
    assert await records.get("contract_plain", "a") is None
    value = {"text": "héllo ✓", "nested": {"list": [1, 2.5, None, True]}}
    first = await records.put("contract_plain", "a", value)
    assert (first.key, first.value) == ("a", value) and first.revision > 0
    got = await records.get("contract_plain", "a")
    assert got is not None and got.value == value and got.revision == first.revision
    second = await records.put("contract_plain", "a", {"text": "again"})
    assert second.revision > first.revision and second.created_at == first.created_at
    assert second.updated_at >= first.updated_at
    assert await records.delete("contract_plain", "a") is True
    assert await records.get("contract_plain", "a") is None
    assert await records.delete("contract_plain", "a") is False


async def test_compare_and_set_refuses_stale_writes_with_the_current_document(
        open_records: Opener) -> None:
    records = await open_records()
    made = await records.create("contract_plain", "k", {"v": 1})
    with pytest.raises(Conflict) as exists:
        await records.create("contract_plain", "k", {"v": "other"})
    assert exists.value.current is not None and exists.value.current.value == {"v": 1}
    now = await records.put("contract_plain", "k", {"v": 2}, revision=made.revision)
    with pytest.raises(Conflict) as stale:
        await records.put("contract_plain", "k", {"v": 3}, revision=made.revision)
    assert stale.value.code == "conflict"
    assert stale.value.details == {"revision": now.revision}
    assert stale.value.current is not None and stale.value.current.value == {"v": 2}
    with pytest.raises(Conflict):
        await records.delete("contract_plain", "k", revision=made.revision)
    got = await records.get("contract_plain", "k")
    assert got is not None and got.value == {"v": 2}  # nothing changed
    with pytest.raises(Conflict) as absent:
        await records.put("contract_plain", "missing", {"v": 1}, revision=4)
    assert absent.value.current is None
    assert await records.get("contract_plain", "missing") is None


async def test_two_concurrent_updates_from_one_revision_exactly_one_wins(
        open_records: Opener) -> None:
    records = await open_records()
    base = await records.create("contract_items", "task", {"state": "open", "by": None})
    for round_ in range(5):
        current = await records.get("contract_items", "task")
        assert current is not None
        outcomes = await asyncio.gather(
            *(records.put("contract_items", "task", {"state": "claimed", "by": who},
                          revision=current.revision)
              for who in (f"ann{round_}", f"bob{round_}")),
            return_exceptions=True)
        won = [o for o in outcomes if not isinstance(o, BaseException)]
        lost = [o for o in outcomes if isinstance(o, Conflict)]
        assert len(won) == 1 and len(lost) == 1, outcomes
        assert lost[0].current is not None and lost[0].current.value == won[0].value
        assert won[0].revision > current.revision
    final = await records.get("contract_items", "task")
    assert final is not None and final.revision > base.revision


async def test_modify_retries_until_every_concurrent_change_is_in(open_records: Opener) -> None:
    records = await open_records()

    def bump(value: dict[str, Any] | None) -> dict[str, Any]:
        return {"count": (value or {"count": 0})["count"] + 1}

    await asyncio.gather(*(records.modify("contract_plain", "counter", bump) for _ in range(20)))
    got = await records.get("contract_plain", "counter")
    assert got is not None and got.value == {"count": 20}
    unchanged = await records.modify("contract_plain", "counter", lambda value: None)
    assert unchanged is not None and unchanged.revision == got.revision


async def test_index_queries_ranges_order_and_counts(open_records: Opener) -> None:
    records = await open_records()
    for i in range(12):
        await records.put("contract_items", f"k{i:02}", {
            "state": "open" if i % 3 else "done", "n": i if i != 5 else None,
            "tag": ["x", "y"][i % 2], "title": f"item {i}"})
    open_keys = [r.key for r in await records.all("contract_items", {"state": "open"})]
    assert open_keys == [f"k{i:02}" for i in range(12) if i % 3]
    ranged = await records.all("contract_items", {"n": Range(ge=3, lt=8)}, order="n")
    assert [r.value["n"] for r in ranged] == [3, 4, 6, 7]
    newest = await records.find("contract_items", {"tag": "x"}, order="-n", limit=2)
    assert [r.value["n"] for r in newest.records] == [10, 8]
    assert await records.count("contract_items", {"n": None}) == 1
    assert await records.count("contract_items", {"state": In(("open", "done"))}) == 12
    assert await records.count("contract_items", {"state": In(())}) == 0
    assert await records.count("contract_items", {"state": "done", "tag": "x"}) == 2
    with pytest.raises(KeyError):
        await records.find("contract_items", {"title": "item 1"})
    with pytest.raises(KeyError):
        await records.find("contract_items", order="title")
    with pytest.raises(InvalidRequest):
        await records.find("contract_items", after="not a cursor")


@pytest.mark.parametrize("order", ["n", "-n", "key", "-key", "-updated_at"])
async def test_cursor_paging_visits_every_document_once(open_records: Opener, order: str) -> None:
    records = await open_records()
    rng = random.Random(order)
    model: dict[str, Any] = {}
    written: list[str] = []  # in the order written: the order of updated_at
    for i in range(57):
        n = rng.choice([None, *range(8)])  # ties and nulls on purpose
        key = f"d{rng.randrange(10**6):06}-{i}"
        model[key] = n
        written.append(key)
        await records.put("contract_items", key, {"n": n, "state": "s"})
    descending = order.startswith("-")
    field = order.lstrip("-")
    if field == "n":  # nulls first going up (last going down), ties in key order
        expected = sorted(model, key=lambda k: (model[k] is not None, model[k] or 0, k),
                          reverse=descending)
    elif field == "key":
        expected = sorted(model, reverse=descending)
    else:
        expected = written[::-1] if descending else written
    for size in (1, 4, 10, 100):
        seen: list[str] = []
        cursor = None
        while True:
            page = await records.find("contract_items", {"state": "s"}, order=order,
                                      limit=size, after=cursor)
            seen += [r.key for r in page.records]
            if page.cursor is None:
                break
            cursor = page.cursor
        assert seen == expected, (order, size)


async def test_ttl_hides_expired_documents_at_once_and_the_sweep_purges_them(
        open_records: Opener) -> None:
    records = await open_records()
    later = time.time() + 3600
    await records.put("contract_items", "brief", {"state": "t", "title": "fleeting words"},
                      expires_at=later)
    await records.put("contract_items", "lasting", {"state": "t", "title": "lasting words"})
    assert (await records.get("contract_items", "brief")) is not None
    assert await records.count("contract_items", {"state": "t"}) == 2
    position = (await records.changes())[-1].seq
    await records.put("contract_items", "brief", {"state": "t", "title": "fleeting words"},
                      expires_at=time.time() - 1)  # its time is up
    await records.put("contract_items", "short", {"state": "t"}, ttl=0.05)
    await asyncio.sleep(0.2)
    for gone in ("brief", "short"):
        assert await records.get("contract_items", gone) is None
    assert [r.key for r in await records.all("contract_items", {"state": "t"})] == ["lasting"]
    assert await records.count("contract_items", {"state": "t"}) == 1
    assert [h.record.key for h in await records.search("contract_items", "words")] == ["lasting"]
    assert await records.purge() == 2
    expired = [c for c in await records.changes(position) if c.op == "expire"]
    assert sorted(c.key for c in expired) == ["brief", "short"]
    assert all(c.value is None for c in expired)
    assert [c.previous for c in expired if c.key == "brief"][0]["title"] == "fleeting words"
    again = await records.create("contract_items", "brief", {"state": "t"})  # free again
    assert again.expires_at is None
    kept = await records.put("contract_items", "later", {"state": "t"}, expires_at=later)
    assert kept.expires_at == later and await records.purge() == 0


async def test_a_revision_is_never_given_twice_so_a_stale_writer_loses_after_a_remake(
        open_records: Opener) -> None:
    records = await open_records()
    lease = await records.create("contract_plain", "lease", {"holder": "a"})
    await records.delete("contract_plain", "lease")
    remade = await records.create("contract_plain", "lease", {"holder": "b"})
    assert remade.revision != lease.revision
    with pytest.raises(Conflict):  # "a" still holds the first lease's revision: it lost it
        await records.put("contract_plain", "lease", {"holder": "a"}, revision=lease.revision)
    brief = await records.put("contract_plain", "brief", {"holder": "a"},
                              expires_at=time.time() + 3600)
    lapsed = await records.put("contract_plain", "brief", {"holder": "a"},
                               revision=brief.revision, expires_at=time.time() - 1)
    taken = await records.create("contract_plain", "brief", {"holder": "b"})
    for stale in (brief.revision, lapsed.revision):
        with pytest.raises(Conflict):
            await records.put("contract_plain", "brief", {"holder": "a"}, revision=stale)
    got = await records.get("contract_plain", "brief")
    assert got is not None and got.value == {"holder": "b"} and got.revision == taken.revision


async def test_change_feed_is_ordered_and_outlives_a_restart(open_records: Opener) -> None:
    records = await open_records()
    start = await records.engine.feed_position()
    one = await records.put("contract_items", "a", {"state": "one"})
    await records.put("contract_plain", "not-fed", {"x": 1})  # a collection without a feed
    two = await records.put("contract_items", "a", {"state": "two"})
    await records.delete("contract_items", "a")
    changes = await records.changes(start)
    assert [(c.key, c.op, c.revision) for c in changes] == [
        ("a", "put", one.revision), ("a", "put", two.revision), ("a", "delete", two.revision)]
    assert changes[1].value == {"state": "two"} and changes[2].value is None
    assert changes[2].previous == {"state": "two"}  # who saw it can be told it went
    seqs = [c.seq for c in changes]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    cursor = changes[0].seq
    records = await open_records()  # the hub stops and starts again on the same data
    after_restart = await records.changes(cursor)
    assert [(c.key, c.op) for c in after_restart] == [("a", "put"), ("a", "delete")]
    assert records.feed.position == seqs[-1]  # what happened before is read, not replayed
    later = await records.put("contract_items", "b", {"state": "three"})
    newest = await records.changes(seqs[-1])
    assert [(c.key, c.revision) for c in newest] == [("b", later.revision)]
    assert newest[0].seq > seqs[-1] and later.revision > two.revision


async def test_full_text_search_ranks_matches_and_stays_in_step(open_records: Opener) -> None:
    records = await open_records()
    await records.put("contract_items", "both", {
        "state": "a", "title": "deploy the gateway", "body": "gateway deploy notes, gateway"})
    await records.put("contract_items", "once", {
        "state": "a", "title": "weekly notes", "body": "we may deploy the gateway later on, "
        "after the long list of other things that come first this week"})
    await records.put("contract_items", "other", {"state": "b", "title": "gateway only",
                                                 "body": "nothing else"})
    hits = await records.search("contract_items", "gateway deploy")
    assert [h.record.key for h in hits] == ["both", "once"]  # every word; denser first
    assert hits[0].score > hits[1].score
    assert "[gateway]" in hits[0].snippet or "[deploy]" in hits[0].snippet
    marked = await records.search("contract_items", "gateway", marks=("<b>", "</b>"))
    assert any("<b>gateway</b>" in h.snippet for h in marked)
    stemmed = await records.search("contract_items", "deployed")  # the same word's stem
    assert sorted(h.record.key for h in stemmed) == ["both", "once"]
    only_b = await records.search("contract_items", "gateway", where={"state": "b"})
    assert [h.record.key for h in only_b] == ["other"]
    for hostile in ('"', 'gateway" OR "x', "NEAR(gateway", "*", "body:gateway", "-", ""):
        await records.search("contract_items", hostile)  # words only, never an error
    await records.put("contract_items", "both", {"state": "a", "title": "renamed",
                                                 "body": "nothing to see"})
    assert "both" not in [h.record.key for h in await records.search("contract_items", "deploy")]
    await records.delete("contract_items", "once")
    assert await records.search("contract_items", "deploy") == []
    with pytest.raises(KeyError):
        await records.search("contract_plain", "anything")


async def test_undeclared_collections_are_refused(open_records: Opener) -> None:
    records = await open_records()
    with pytest.raises(KeyError):
        await records.put("nobody_declared_this", "k", {})
    for bad in (lambda: Collection("Bad-Name"), lambda: Collection("a__b"),
                lambda: Collection("c", indexes=("created_at",)),
                lambda: Collection("c", search=("rank",)),
                lambda: Collection("c", indexes=("x__y",))):
        with pytest.raises(ValueError):
            bad()
    with pytest.raises(ValueError):
        await records.search("contract_items", "words", limit=-1)
    with pytest.raises(KeyError):  # an engine asked directly checks the names it is given
        await records.engine.record_find("contract_items", {"title": "x"}, order="key",
                                         limit=1, after=None)


async def test_a_read_sees_the_writes_made_before_it_even_if_not_awaited_yet(
        open_records: Opener) -> None:
    records = await open_records()
    for round_ in range(20):
        key = f"k{round_}"
        writes = [asyncio.ensure_future(records.put("contract_items", key, {"n": i,
                                                                          "state": "w"}))
                  for i in range(3)]
        await asyncio.sleep(0)  # the writes are under way, none has returned
        got = await records.get("contract_items", key)
        assert got is not None and got.value["n"] == 2
        assert await records.count("contract_items", {"state": "w"}) == round_ + 1
        await asyncio.gather(*writes)
        bumped = asyncio.ensure_future(records.modify(
            "contract_items", key, lambda value: {**(value or {}), "n": 9}))
        await asyncio.sleep(0)  # the change has read nothing yet
        assert (await records.find("contract_items", {"n": 9})).records[0].key == key
        await bumped
        gone = asyncio.ensure_future(records.delete("contract_items", key))
        await asyncio.sleep(0)
        assert await records.get("contract_items", key) is None
        assert await gone is True
        await records.put("contract_items", key, {"n": 0, "state": "w"})


async def test_fields_may_be_called_what_a_query_language_reserves(open_records: Opener) -> None:
    records = await open_records()
    await records.put("contract_words", "m1", {"from": "ann", "to": "bob", "order": 2})
    await records.put("contract_words", "m2", {"from": "bob", "to": "cat", "order": 1})
    assert [r.key for r in await records.all("contract_words", order="order")] == ["m2", "m1"]
    assert await records.count("contract_words", {"order": Range(ge=2)}) == 1
    assert [h.record.key for h in await records.search("contract_words", "bob")] == ["m1", "m2"]


async def test_a_write_whose_caller_went_away_holds_readers_and_reaches_the_feed(
        open_records: Opener) -> None:
    records = await open_records()
    before = records.feed.position
    write = asyncio.ensure_future(records.put("contract_items", "orphan", {"state": "x"}))
    await asyncio.sleep(0)  # under way
    write.cancel()
    # the engine has the write (Records hands it over at once and shields it): it lands, the
    # read waits for it, and the feed moves on without another write
    got = await records.get("contract_items", "orphan")
    assert got is not None and got.value == {"state": "x"}
    for _ in range(200):
        if records.feed.position > before:
            break
        await asyncio.sleep(0.02)
    assert records.feed.position > before
