"""Pairing codes under contention (meshhub.bridge.pairing): a code is taken once however many
claim it at the same moment, and every wrong code spends one attempt of each live code of its
connector, and of no other."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from meshhub.bridge.pairing import CODE_ATTEMPTS, PairingBook, attempts_left, normalize_code
from meshhub.errors import InvalidRequest


async def _attempts_left(hub, code: str) -> int:
    code_hash = hashlib.sha256(normalize_code(code).encode()).hexdigest()
    record = await hub.records.get("bridge_codes", code_hash)
    assert record is not None
    wrong = await PairingBook.of(hub).wrong_guesses(record.value["connector"])
    return attempts_left(record.value, wrong)


async def test_a_code_is_taken_once_and_wrong_codes_spend_an_attempt_of_each(inproc):
    served = await inproc()
    hub = served.hub
    book = PairingBook.of(hub)
    first = (await book.create_code("telegram", "owner"))["code"]
    second = (await book.create_code("telegram", "owner"))["code"]
    other = (await book.create_code("email", "owner"))["code"]

    claims = await asyncio.gather(*(book.claim("telegram", f"telegram:{n}", first)
                                    for n in range(3)), return_exceptions=True)
    assert sum(1 for c in claims if c is None) == 1  # a new person's code, taken once
    assert all(isinstance(c, InvalidRequest) for c in claims if c is not None)
    assert not await book.is_live("telegram", first)
    # the two who lost spent an attempt each of the live telegram code, not of the mail one
    assert await _attempts_left(hub, second) == CODE_ATTEMPTS - 2
    assert await _attempts_left(hub, other) == CODE_ATTEMPTS
    wrong = await asyncio.gather(*(book.claim("telegram", "telegram:9", "AAAA-AAAA")
                                   for _ in range(CODE_ATTEMPTS)), return_exceptions=True)
    assert all(isinstance(c, InvalidRequest) for c in wrong)
    assert await _attempts_left(hub, second) == 0
    assert not await book.is_live("telegram") and await book.is_live("email")
    with pytest.raises(InvalidRequest):  # spent by guesses: the right code no longer works
        await book.claim("telegram", "telegram:9", second)


async def test_a_right_code_tried_among_wrong_ones_is_judged_in_turn(inproc):
    """Claims that arrive together are judged one after another: a right code is taken only
    while fewer than five wrong ones were judged before it, and every wrong one is counted."""
    served = await inproc()
    hub = served.hub
    book = PairingBook.of(hub)
    outcomes = set()
    for position in (0, 2, 4, 5, 6, 8, 8, 8):
        code = (await book.create_code("telegram", "owner"))["code"]
        start = await book.wrong_guesses("telegram")
        claims = [book.claim("telegram", f"telegram:{position}-{n}", f"ZZZZ-ZZZ{n + 2}")
                  for n in range(8)]
        claims.insert(position, book.claim("telegram", f"telegram:{position}-right", code))
        results = await asyncio.gather(*claims, return_exceptions=True)
        right = results[position]
        assert all(isinstance(r, InvalidRequest) for r in results if r is not right)
        record = await hub.records.get(
            "bridge_codes", hashlib.sha256(normalize_code(code).encode()).hexdigest())
        assert record is not None
        if right is None:  # taken while it had attempts left, with every wrong one counted
            assert record.value["taken_at"] - record.value["guesses_at"] < CODE_ATTEMPTS
            assert await book.wrong_guesses("telegram") == start + 8
        else:  # judged after five wrong ones: refused, and counted as one more
            assert isinstance(right, InvalidRequest) and record.value["used_by"] is None
            assert await book.wrong_guesses("telegram") == start + 9
        outcomes.add(right is None)
        assert not await book.is_live("telegram", code)
    assert outcomes == {True, False}  # both happened: a code tried early works, late not
