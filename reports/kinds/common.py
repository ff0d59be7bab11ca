"""What several kinds share: the date range as instants, the stores and category conditions."""

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


def narrowing(filters: dict, params: dict, *, stores: str, category: str | None = None) -> str:
    """SQL conditions (each starting with AND) for the stores and category filters
    on the columns named, adding their parameters to ``params``."""
    sql = ""
    if category and "category" in filters:
        sql += f" AND {category} = %(category)s"
        params["category"] = filters["category"]
    if filters.get("stores"):
        sql += f" AND {stores} = ANY(%(stores)s)"
        params["stores"] = filters["stores"]
    return sql
