"""Notification delivery by channel and day (of the delivery's creation): how many
deliveries ended in each status."""

from django.conf import settings

from .common import bounds

APPLIES = {"date_from", "date_to"}
COLUMNS = ["day", "channel", "deliveries", "sent", "failed", "skipped", "rate_limited", "pending", "attempts"]


def query(filters: dict) -> tuple[str, dict]:
    span = bounds(filters)
    sql = """
        SELECT (d.created_at AT TIME ZONE %(tz)s)::date AS day, d.channel, count(*),
               count(*) FILTER (WHERE d.status = 'sent'),
               count(*) FILTER (WHERE d.status = 'failed'),
               count(*) FILTER (WHERE d.status = 'skipped'),
               count(*) FILTER (WHERE d.status = 'rate_limited'),
               count(*) FILTER (WHERE d.status = 'pending'),
               sum(d.attempts)
        FROM notifications_delivery d
        WHERE d.created_at >= %(start)s AND d.created_at < %(end)s
        GROUP BY day, d.channel
        ORDER BY day, d.channel
    """
    return sql, {"tz": settings.TIME_ZONE, "start": span.start, "end": span.end}
