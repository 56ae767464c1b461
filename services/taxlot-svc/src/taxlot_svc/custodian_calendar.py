"""When a custodian's daily file set is due (docs/custodian-files.md, *Transfer monitoring*).

A custodian sends one set per business day of an exchange calendar (XNYS by default, from
`exchange_calendars`: weekends and holidays are not business days; half days are). The set of
business day D is due by a local time (07:00 America/New_York by default) on the next
business day after D: the set of Friday is due Monday morning, the set of the day before
Thanksgiving the Friday after it. Pure: no I/O besides the calendar's own tables.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

import exchange_calendars
import pandas as pd


@cache
def exchange_calendar(name: str) -> Any:
    """The exchange calendar `name` (e.g. XNYS), built once per process."""
    with warnings.catch_warnings():
        # pandas 3.1 deprecates a call of the library's (not ours) while it builds a calendar
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        return exchange_calendars.get_calendar(name)


@cache
def exchange_calendar_names() -> frozenset[str]:
    """The names of the calendars exchange_calendars has (and their aliases)."""
    return frozenset(exchange_calendars.get_calendar_names(include_aliases=True))


@dataclass(frozen=True)
class DeadlineRule:
    """Business days of `calendar`; a day's set is due at `deadline` (local, `timezone`) on
    the next business day."""

    calendar: str = "XNYS"
    deadline: time = time(7, 0)
    timezone: str = "America/New_York"

    def _calendar(self) -> Any:
        return exchange_calendar(self.calendar)

    def is_business_day(self, day: date) -> bool:
        """Whether the custodian sends a set for `day` (a session of the calendar; a day
        outside the calendar's range, some 20 years back to a year ahead, is not one)."""
        calendar = self._calendar()
        if not calendar.first_session.date() <= day < calendar.last_session.date():
            return False
        return bool(calendar.is_session(pd.Timestamp(day)))

    def next_business_day(self, day: date) -> date:
        """The first business day after `day` (which need not be one)."""
        calendar = self._calendar()
        following = calendar.date_to_session(pd.Timestamp(day + timedelta(days=1)), "next")
        return date.fromisoformat(str(following.date()))

    def deadline_of(self, day: date) -> datetime:
        """When the set of business day `day` is due, in UTC."""
        due_on = self.next_business_day(day)
        local = datetime.combine(due_on, self.deadline, tzinfo=ZoneInfo(self.timezone))
        return local.astimezone(UTC)

    def due_days(self, after: date, now: datetime, limit: int) -> list[date]:
        """The business days after `after` whose sets are due by `now`, the latest `limit`."""
        calendar = self._calendar()
        if after >= calendar.last_session.date():
            return []
        start = max(after + timedelta(days=1), calendar.first_session.date())
        end = min(now.astimezone(ZoneInfo(self.timezone)).date(), calendar.last_session.date())
        if start > end:
            return []
        sessions = [s.date() for s in calendar.sessions_in_range(start, end)]
        due = [d for d in sessions if self.deadline_of(d) <= now]
        return due[-limit:] if limit > 0 else []
