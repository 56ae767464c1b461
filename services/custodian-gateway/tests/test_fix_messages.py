"""The FIX 4.4 messages the gateway builds and reads (fix_messages.py), and the session's
journal (fix_journal.py). The session itself is tested against QuickFIX/J in
tests/integration/test_fix_session.py."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from custodian_gateway import fix_messages as fm
from custodian_gateway.fix_journal import FixJournal

TERMS = fm.OrderTerms("BLK-1", "BLOCK", "MSFT", "sell", "12.5", "415.2")
NOW = datetime(2026, 12, 6, 21, 30, 1, 250000, tzinfo=UTC)


def report(**fields: str) -> dict[int, str]:
    base = {35: "8", 34: "7", 17: "E-1", 11: "BLK-1", 55: "MSFT", 54: "2", 37: "O-1"}
    return base | {int(k[1:]): v for k, v in fields.items()}


def test_a_new_order_single_names_the_block_and_marks_a_possible_resend_in_the_header() -> None:
    first = fm.new_order_single(TERMS, False, NOW)
    again = fm.new_order_single(TERMS, True, NOW)
    assert first == {
        11: "BLK-1",
        1: "BLOCK",
        55: "MSFT",
        54: "2",
        60: "20261206-21:30:01.250",
        38: "12.5",
        40: "1",
        44: "415.2",
        59: "0",
    }
    assert next(iter(again)) == fm.POSS_RESEND and again[97] == "Y"  # a header field: first
    assert {k: v for k, v in again.items() if k != 97} == first


def test_a_side_other_than_buy_or_sell_is_refused() -> None:
    with pytest.raises(ValueError, match="side must be buy or sell"):
        fm.new_order_single(fm.OrderTerms("X", "A", "S", "short", "1", "1"), False, NOW)


def test_a_trade_report_is_a_fill_with_exact_decimals() -> None:
    fields = report(t150="F", t32="3.25", t31="101.125", t60="20261206-21:30:01.250", t43="Y")
    execution = fm.execution_from_report(fields)
    assert execution == fm.Execution(
        execution_id="E-1",
        client_order_id="BLK-1",
        kind="fill",
        symbol="MSFT",
        side="sell",
        account_id=None,
        quantity="3.25",
        price="101.125",
        reason=None,
        executed_at="2026-12-06T21:30:01.250000+00:00",
        poss_dup=True,
        msg_seq_num=7,
    )


def test_rejects_cancels_and_expiries_end_the_rest_of_the_order() -> None:
    rejected = fm.execution_from_report(report(t150="8", t39="8", t58="no such symbol"))
    canceled = fm.execution_from_report(report(t150="4", t39="4", t11="C-1", t41="BLK-1"))
    expired = fm.execution_from_report(report(t150="C", t39="C"))
    assert rejected and rejected.kind == "reject"
    assert rejected.reason == "rejected by the counterparty: no such symbol"
    assert canceled and (canceled.kind, canceled.client_order_id) == ("reject", "BLK-1")
    assert expired and expired.reason == "expired by the counterparty"


def test_reports_that_change_no_quantity_carry_no_execution() -> None:
    assert fm.execution_from_report(report(t150="0", t39="0")) is None
    assert fm.execution_from_report(report(t150="I", t39="1")) is None
    duplicate = report(t150="8", t39="8", t103="6")  # ClOrdID already known there
    assert fm.is_duplicate_reject(duplicate) and fm.execution_from_report(duplicate) is None


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({150: "F", 11: "B"}, "without tag 17"),
        ({150: "F", 17: "E", 11: "B", 32: "1e", 31: "1"}, "tag 32 is not a decimal"),
        ({17: "E"}, "without tag 150"),
    ],
)
def test_an_unreadable_report_names_the_tag(fields: dict[int, str], problem: str) -> None:
    with pytest.raises(fm.FixMessageProblem, match=problem):
        fm.execution_from_report(fields)


def test_a_status_answer_says_unknown_or_where_the_order_stands() -> None:
    unknown = fm.status_from_report(report(t150="I", t39="8", t103="5", t790="S-1", t14="0"))
    known = fm.status_from_report(report(t150="I", t39="1", t14="4", t790="S-2"))
    assert unknown == fm.OrderStatus("BLK-1", "S-1", None, "0", None)
    assert known == fm.OrderStatus("BLK-1", "S-2", "partially_filled", "4", None)
    assert fm.status_from_report(report(t150="F")) is None


def test_the_journal_keeps_each_execution_once_in_arrival_order(tmp_path: Path) -> None:
    journal = FixJournal(tmp_path / "j.sqlite")
    fills = [
        fm.execution_from_report(report(t150="F", t17=f"E-{i}", t32="1", t31="10"))
        for i in range(3)
    ]
    assert [journal.record_execution(f) for f in fills if f] == [True, True, True]
    assert journal.record_execution(fills[1]) is False  # a resend (PossDupFlag) of E-1
    page = journal.executions_after(0, 2)
    assert [(e["seq"], e["execution_id"]) for e in page] == [(1, "E-0"), (2, "E-1")]
    assert [e["execution_id"] for e in journal.executions_after(2, 10)] == ["E-2"]
    assert journal.last_seq() == 3
    journal.close()
    reopened = FixJournal(tmp_path / "j.sqlite")  # survives a restart
    assert reopened.last_seq() == 3
    reopened.close()


def test_the_journal_remembers_the_terms_of_sent_orders(tmp_path: Path) -> None:
    journal = FixJournal(tmp_path / "j.sqlite")
    assert journal.sent_order("BLK-1") is None
    journal.record_sent([TERMS], set())
    journal.record_sent([TERMS], {"BLK-1"})
    assert journal.sent_order("BLK-1") == TERMS
    assert journal.times_sent("BLK-1") == (2, 1)
    journal.close()


def test_the_session_decoder_finds_every_message_whatever_the_read_boundaries() -> None:
    from asyncfix import FIXMessage, FMsg
    from asyncfix.codec import Codec
    from asyncfix.protocol import FIXProtocol44
    from asyncfix.session import FIXSession
    from ballast_common.fix_engine import FramedCodec

    session = FIXSession(1, "BALLAST", "CUSTODIAN")
    session.next_num_out, session.next_num_in = 1, 1
    encoder = Codec(FIXProtocol44())
    stream = b"".join(
        encoder.encode(
            FIXMessage(FMsg.EXECUTIONREPORT, {17: f"E-{i}", 11: f"B-{i}", 150: "F", 32: "1"}),
            session,
        ).encode()
        for i in range(300)
    )
    codec = FramedCodec(FIXProtocol44())
    for chunk in (1, 5, 6, 7, 64, 333, 4096):
        buffer, seen = b"", []
        for start in range(0, len(stream), chunk):
            buffer += stream[start : start + chunk]
            while True:
                message, used, _ = codec.decode(buffer)
                buffer = buffer[used:] if used > 0 else buffer
                if message is None:
                    break
                seen.append(int(message["34"]))
        assert seen == list(range(1, 301)), f"reads of {chunk} bytes"
