"""Pairing codes under contention (meshhub.bridge.pairing): a code is taken once however many
claim it at the same moment, and every wrong code spends one attempt of each live code of its
connector, and of no other."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from meshhub.bridge.pairing import CODE_ATTEMPTS, PairingBook, normalize_code
from meshhub.errors import InvalidRequest


async def _attempts_left(hub, code: str) -> int:
    code_hash = hashlib.sha256(normalize_code(code).encode()).hexdigest()
    record = await hub.records.get("bridge_codes", code_hash)
    assert record is not None
    return int(record.value["attempts_left"])


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
