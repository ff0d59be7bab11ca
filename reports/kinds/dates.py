"""A report's date range as the instants it covers."""

import datetime
from dataclasses import dataclass

from django.utils import timezone


@dataclass(frozen=True)
class Bounds:
    """A date range as the instants it covers, in TIME_ZONE: [start, end)."""

    start: datetime.datetime
    end: datetime.datetime


def bounds(filters: dict) -> Bounds:
    tz = timezone.get_default_timezone()
    start = datetime.datetime.combine(datetime.date.fromisoformat(filters["date_from"]), datetime.time(), tz)
    end = datetime.datetime.combine(datetime.date.fromisoformat(filters["date_to"]), datetime.time(), tz)
    return Bounds(start=start, end=end + datetime.timedelta(days=1))
