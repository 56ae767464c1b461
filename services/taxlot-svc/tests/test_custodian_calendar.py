"""When a custodian's daily file set is due: business days of the XNYS calendar, the deadline
on the next business day (weekends, holidays, half days, daylight saving time)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError
from taxlot_svc.custodian_calendar import DeadlineRule
from taxlot_svc.settings import Settings

RULE = DeadlineRule()  # XNYS, 07:00 America/New_York
NEW_YORK = ZoneInfo("America/New_York")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("day", "business"),
    [
        (date(2026, 12, 4), True),  # a Friday
        (date(2026, 12, 5), False),  # Saturday
        (date(2026, 12, 6), False),  # Sunday
        (date(2026, 11, 26), False),  # Thanksgiving
        (date(2026, 11, 27), True),  # the half day after it
        (date(2026, 12, 24), True),  # Christmas Eve, a half day
        (date(2026, 12, 25), False),  # Christmas
        (date(2026, 4, 3), False),  # Good Friday: the exchange is shut, banks are not
        (date(2026, 7, 3), False),  # Independence Day observed (the 4th is a Saturday)
        (date(1990, 1, 2), False),  # before the calendar's range
    ],
)
def test_business_days_are_the_exchanges_sessions(day: date, business: bool) -> None:
    assert RULE.is_business_day(day) is business


@pytest.mark.parametrize(
    ("day", "due"),
    [
        # an ordinary weekday: the next morning, 07:00 EST = 12:00 UTC
        (date(2026, 12, 2), "2026-12-03T12:00:00"),
        # Friday: Monday morning
        (date(2026, 12, 4), "2026-12-07T12:00:00"),
        # the day before Thanksgiving: the Friday (a half day) morning
        (date(2026, 11, 25), "2026-11-27T12:00:00"),
        # that half day: Monday morning, as any Friday
        (date(2026, 11, 27), "2026-11-30T12:00:00"),
        # Christmas Eve (half day), Christmas on Friday: Monday the 28th
        (date(2026, 12, 24), "2026-12-28T12:00:00"),
        # New Year's Eve, New Year's Day on Friday: Monday 4 January
        (date(2026, 12, 31), "2027-01-04T12:00:00"),
        # the Thursday before Good Friday: Monday, already on daylight time (07:00 EDT)
        (date(2026, 4, 2), "2026-04-06T11:00:00"),
        # Friday before the clocks go forward (8 March 2026): Monday 07:00 EDT
        (date(2026, 3, 6), "2026-03-09T11:00:00"),
        # Friday before they go back (1 November 2026): Monday 07:00 EST
        (date(2026, 10, 30), "2026-11-02T12:00:00"),
    ],
)
def test_a_days_set_is_due_the_next_business_morning(day: date, due: str) -> None:
    assert RULE.deadline_of(day) == utc(due)


def test_every_business_day_of_a_year_is_due_at_seven_on_the_next_one() -> None:
    day = date(2026, 1, 1)
    while day.year == 2026:
        if RULE.is_business_day(day):
            deadline = RULE.deadline_of(day).astimezone(NEW_YORK)
            assert deadline.time() == time(7, 0)
            assert RULE.is_business_day(deadline.date())
            between = [day + timedelta(days=n) for n in range(1, (deadline.date() - day).days)]
            assert not any(RULE.is_business_day(d) for d in between)
        day += timedelta(days=1)


def test_the_days_due_by_a_moment_after_a_given_day() -> None:
    after = date(2026, 11, 24)
    # the Wednesday before Thanksgiving is due Friday 12:00 UTC; the Friday, Monday 12:00
    assert RULE.due_days(after, utc("2026-11-27T11:59:59"), 10) == []
    assert RULE.due_days(after, utc("2026-11-27T12:00:00"), 10) == [date(2026, 11, 25)]
    assert RULE.due_days(after, utc("2026-11-30T11:59:00"), 10) == [date(2026, 11, 25)]
    assert RULE.due_days(after, utc("2026-11-30T12:00:00"), 10) == [
        date(2026, 11, 25),
        date(2026, 11, 27),
    ]
    # the latest `limit`
    assert RULE.due_days(after, utc("2026-12-10T12:00:00"), 2) == [
        date(2026, 12, 8),
        date(2026, 12, 9),
    ]
    assert RULE.due_days(date(2026, 12, 9), utc("2026-12-10T11:00:00"), 10) == []


def test_a_custodians_own_deadline_and_calendar_come_from_the_settings() -> None:
    settings = Settings(
        custodian_files_deadlines={"northwind": "09:30"},
        custodian_monitoring=["northwind"],
    )
    assert settings.deadline_rule("northwind").deadline_of(date(2026, 12, 4)) == utc(
        "2026-12-07T14:30:00"
    )
    assert settings.deadline_rule("ballast") == RULE
    assert settings.monitors("northwind") and not settings.monitors("ballast")
    assert Settings(custodian_monitoring=["*"]).monitors("anyone")
    with pytest.raises(ValidationError, match="not an exchange calendar"):
        Settings(custodian_calendar="XMOON")
    london = DeadlineRule("XLON", time(8, 0), "Europe/London")
    assert london.is_business_day(date(2026, 8, 31)) is False  # the summer bank holiday
    assert london.deadline_of(date(2026, 8, 28)) == utc("2026-09-01T07:00:00")
