"""The business clock: the moment of decision and the business date in the city's zone."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class Clock:
    zone: ZoneInfo

    @classmethod
    def of(cls, zone_name: str) -> Clock:
        return cls(ZoneInfo(zone_name))

    def now(self) -> datetime:
        return datetime.now(self.zone)

    def today(self) -> date:
        return self.now().date()


@dataclass(frozen=True)
class FixedClock(Clock):
    """A clock stopped at one moment (tests, "as of" evaluation)."""

    moment: datetime = datetime(2026, 11, 23, 10, 0)

    def now(self) -> datetime:
        return self.moment if self.moment.tzinfo else self.moment.replace(tzinfo=self.zone)
