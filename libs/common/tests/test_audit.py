"""The audit trail's hashing and chain checks (ballast_common.audit), without a database."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from ballast_common.audit import (
    GENESIS,
    AuditEntry,
    ChainVerifier,
    canonical,
    chain,
    jsonable,
    record_hash,
)
from hypothesis import given
from hypothesis import strategies as st

AT = datetime(2026, 12, 6, 16, 30, 0, 123456, tzinfo=UTC)


def entries(n: int) -> list[AuditEntry]:
    return [
        AuditEntry(
            "pat@acme",
            "update",
            "account",
            f"A-{i}",
            {"cash": Decimal("10.50"), "name": "old"},
            {"cash": Decimal("10.75"), "name": "new"},
        )
        for i in range(n)
    ]


def records(n: int, tenant: str = "acme") -> list[dict[str, Any]]:
    return chain(tenant, entries(n), last_seq=0, last_hash=GENESIS, recorded_at=AT, request_id="r1")


def test_the_hash_is_sha256_of_sorted_compact_json_of_every_field():
    [record] = records(1)
    expected = json.dumps(
        {
            "action": "update",
            "actor": "pat@acme",
            "after": {"cash": "10.75", "name": "new"},
            "before": {"cash": "10.50", "name": "old"},
            "prev_hash": GENESIS,
            "recorded_at": "2026-12-06T16:30:00.123456+00:00",
            "request_id": "r1",
            "seq": 1,
            "subject_id": "A-0",
            "subject_type": "account",
            "tenant": "acme",
        },
        separators=(",", ":"),
        sort_keys=True,
    ).encode()
    assert canonical(record) == expected
    assert record["hash"] == hashlib.sha256(expected).hexdigest()


def test_records_link_each_to_the_one_before():
    chained = records(3)
    assert [r["seq"] for r in chained] == [1, 2, 3]
    assert chained[0]["prev_hash"] == GENESIS
    assert [r["prev_hash"] for r in chained[1:]] == [r["hash"] for r in chained[:-1]]
    more = chain(
        "acme",
        entries(1),
        last_seq=3,
        last_hash=chained[-1]["hash"],
        recorded_at=AT,
        request_id=None,
    )
    assert more[0]["seq"] == 4 and more[0]["prev_hash"] == chained[-1]["hash"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tenant", "evil"),
        ("seq", 7),
        ("recorded_at", AT + timedelta(microseconds=1)),
        ("actor", "mallory"),
        ("action", "delete"),
        ("subject_type", "model"),
        ("subject_id", "A-9"),
        ("before", {"cash": "10.5", "name": "old"}),
        ("after", None),
        ("request_id", "r2"),
        ("prev_hash", "f" * 64),
    ],
)
def test_every_field_is_in_the_hash(field, value):
    [record] = records(1)
    assert record_hash({**record, field: value}) != record["hash"]


def test_the_time_is_hashed_in_utc_whatever_zone_it_was_read_in():
    [record] = records(1)
    elsewhere = AT.astimezone(timezone(timedelta(hours=-5)))
    assert record_hash({**record, "recorded_at": elsewhere}) == record["hash"]


def test_values_are_plain_json_with_decimals_as_strings():
    stamp = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    value = {"a": Decimal("1.230"), "b": [date(2026, 1, 2), stamp], "c": {"x", "y"}, "d": 1.5}
    assert jsonable(value) == {
        "a": "1.230",
        "b": ["2026-01-02", "2026-01-02T03:04:05.000000+00:00"],
        "c": ["x", "y"],
        "d": "1.5",
    }
    with pytest.raises(TypeError, match="cannot record a object"):
        jsonable(object())


def test_an_intact_chain_passes():
    verifier = ChainVerifier()
    for record in records(3, "acme") + records(2, "beta"):
        assert verifier.check(record) is None
    assert verifier.records == 5 and verifier.tenants == {"acme", "beta"}
    assert verifier.heads()["beta"][0] == 2


def test_a_changed_field_breaks_that_records_hash_and_only_its_tenant_is_reported():
    chained = records(4)
    chained[1] = {**chained[1], "after": {"cash": "99.00", "name": "new"}}
    verifier = ChainVerifier()
    found = [b for r in chained + records(2, "beta") if (b := verifier.check(r))]
    assert [(b.tenant, b.seq, b.subject_id) for b in found] == [("acme", 2, "A-1")]
    assert found[0].problems == (
        "its hash does not match its contents (changed after it was written)",
    )


def test_a_record_rehashed_after_a_change_breaks_the_next_link():
    chained = records(3)
    forged = {**chained[1], "actor": "mallory"}
    forged["hash"] = record_hash(forged)
    verifier = ChainVerifier()
    found = [b for r in (chained[0], forged, chained[2]) if (b := verifier.check(r))]
    assert [b.seq for b in found] == [3]
    assert "link to the previous record is broken" in found[0].problems[0]


def test_a_removed_record_is_a_gap():
    chained = records(3)
    verifier = ChainVerifier()
    found = [b for r in (chained[0], chained[2]) if (b := verifier.check(r))]
    assert [b.seq for b in found] == [3]
    assert found[0].problems[0] == "sequence 3 follows record 1: records removed or inserted"


@given(
    st.lists(
        st.tuples(st.sampled_from(["before", "after", "actor", "subject_id"]), st.text()),
        min_size=1,
        max_size=5,
    ),
    st.integers(min_value=0, max_value=5),
)
def test_any_change_to_any_record_is_found_at_that_record(changes, at):
    chained = records(6)
    original = chained[at]
    changed = dict(original)
    for field, text in changes:
        changed[field] = {"x": text} if field in ("before", "after") else text + "!"
    chained[at] = changed
    verifier = ChainVerifier()
    found = [b for r in chained if (b := verifier.check(r))]
    assert [b.seq for b in found] == [at + 1]
