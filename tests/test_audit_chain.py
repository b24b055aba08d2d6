"""The audit log's hash chain over a real hub's store: entries append in order, each names the
one before, and a row changed, removed or forged in the database is found and named."""

from __future__ import annotations

import json
import sqlite3

from meshhub.audit import GENESIS, AuditLog, entry_hash


async def test_chain_appends_in_order_and_survives_a_restart(inproc):
    served = await inproc()
    hub = served.hub
    [enrolled] = await hub.audit.entries()  # the owner's enrolment at the first start
    assert (enrolled["seq"], enrolled["prev"], enrolled["event"]) == (1, GENESIS, "member_joined")
    assert enrolled["details"] == {"via": "owner"} and enrolled["actor"] == hub.owner_key
    first = await hub.audit.append("member_joined", None, subject="ann", via="invite")
    second = await hub.audit.append("task_claimed", None, subject="t1")
    assert (first["seq"], first["prev"]) == (2, enrolled["hash"])
    assert second["prev"] == first["hash"] == entry_hash(first)
    await served.stop()
    served = await inproc()  # the owner is enrolled already: no second row
    third = await served.hub.audit.append("decision_posted", None, subject="db")
    assert third["seq"] == 4 and third["prev"] == second["hash"]
    verdict = await served.hub.audit.verify()
    assert verdict.ok and verdict.checked == 4
    assert [e["event"] for e in await served.hub.audit.entries(limit=2)] == [
        "task_claimed", "decision_posted"]


async def test_a_changed_or_missing_row_is_named(inproc, tmp_path):
    served = await inproc()
    for n in range(5):
        await served.hub.audit.append("task_claimed", None, subject=f"t{n}")
    await served.stop()
    db = sqlite3.connect(tmp_path / "hub" / "meshhub.db")
    value = json.loads(db.execute("SELECT value FROM rec_audit WHERE key = ?",
                                  ("000000000003",)).fetchone()[0])
    value["subject"] = "someone-else"
    db.execute("UPDATE rec_audit SET value = ? WHERE key = ?",
               (json.dumps(value), "000000000003"))
    db.commit()
    served = await inproc()
    verdict = await served.hub.audit.verify()
    assert (verdict.ok, verdict.seq, verdict.checked) == (False, 3, 2)
    assert "changed" in verdict.reason
    await served.stop()
    # a forger who also fixes the row's own hash breaks the link from the row after it
    value["hash"] = entry_hash(value)
    db.execute("UPDATE rec_audit SET value = ? WHERE key = ?",
               (json.dumps(value), "000000000003"))
    db.commit()
    served = await inproc()
    verdict = await served.hub.audit.verify()
    assert (verdict.ok, verdict.seq) == (False, 4) and "prev" in verdict.reason
    await served.stop()
    db.execute("DELETE FROM rec_audit WHERE key IN (?, ?)", ("000000000003", "000000000004"))
    db.commit()
    db.close()
    served = await inproc()
    verdict = await served.hub.audit.verify()
    assert (verdict.ok, verdict.seq) == (False, 3) and "missing" in verdict.reason


async def test_rows_cut_from_the_end_are_named_and_recorded(inproc, tmp_path):
    """A log shorter than the hub wrote (rows deleted from its end, an older backup put back)
    is whole as a chain: audit.head, beside the database, tells."""
    served = await inproc()
    for n in range(5):
        await served.hub.audit.append("task_claimed", None, subject=f"t{n}")
    last = (await served.hub.audit.verify()).head
    await served.stop()
    kept = last["seq"] - 2
    db = sqlite3.connect(tmp_path / "hub" / "meshhub.db")
    db.execute("DELETE FROM rec_audit WHERE key > ?", (f"{kept:012d}",))
    db.commit()
    db.close()
    served = await inproc()  # at start the hub finds the log shorter than audit.head says
    verdict = await served.hub.audit.verify()
    assert (verdict.ok, verdict.seq) == (False, kept + 1)
    assert f"row {kept + 1} records that the log was cut short" in verdict.reason
    rows = await served.hub.audit.entries(after_seq=kept)
    assert rows[0]["event"] == "audit_truncated"
    assert rows[0]["details"] == {"expected_seq": last["seq"], "expected_hash": last["hash"],
                                  "found_seq": kept}
    assert AuditLog(served.hub.records, tmp_path / "hub" / "audit.head").read_anchor() == (
        kept + 1, rows[0]["hash"])


async def test_a_lagging_head_file_is_no_alarm_and_paging_reads_the_whole_log(inproc, tmp_path):
    served = await inproc()
    written = [await served.hub.audit.append("task_claimed", None, subject=f"t{n}")
               for n in range(7)]
    head = tmp_path / "hub" / "audit.head"
    assert head.stat().st_mode & 0o777 == 0o600
    # as if the hub stopped between a row's commit and the file's write
    head.write_text(json.dumps({"seq": written[3]["seq"], "hash": written[3]["hash"]}))
    verdict = await served.hub.audit.verify()
    assert verdict.ok and verdict.head == {"seq": 8, "hash": written[-1]["hash"]}
    seen, after = [], 0
    while page := await served.hub.audit.entries(after_seq=after, limit=3):
        seen += [row["seq"] for row in page]
        after = page[-1]["seq"]
    assert seen == list(range(1, 9))
    window = await served.hub.audit.entries(since=written[2]["at"], until=written[5]["at"])
    assert [row["subject"] for row in window] == ["t2", "t3", "t4"]
