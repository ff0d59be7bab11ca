"""Notification metrics: deliveries by channel and outcome (counted where the
outcome is written), campaign progress (read at scrape time)."""

from django.db.models import Count
from prometheus_client import Counter, Gauge
from prometheus_client.core import GaugeMetricFamily

DELIVERIES = Counter(
    "celeste_notification_deliveries_total",
    "Deliveries that reached an outcome (sent, failed, skipped, rate_limited), by channel.",
    ["channel", "outcome"],
)

STREAM_CONNECTIONS = Gauge(
    "celeste_stream_connections",
    "Live event streams open now (GET /api/v1/notifications/stream), over the live ASGI processes.",
    multiprocess_mode="livesum",
)
STREAM_ENDS = Counter(
    "celeste_stream_ends_total",
    "Live event streams ended, by why: client (went away), redis_down (told to reconnect), shutdown.",
    ["reason"],
)


def collect():
    from .models import Campaign, CampaignRecipient, CampaignStatus

    recipients = GaugeMetricFamily(
        "celeste_campaign_recipients", "Recipients of sending campaigns by status.", labels=["campaign", "status"]
    )
    rows = (
        CampaignRecipient.objects.filter(campaign__status=CampaignStatus.SENDING)
        .values_list("campaign_id", "status")
        .annotate(n=Count("id"))
        .order_by()
    )
    for campaign_id, status, count in rows:
        recipients.add_metric([str(campaign_id), status], count)
    yield recipients
    yield GaugeMetricFamily(
        "celeste_campaigns_sending",
        "Campaigns sending now.",
        value=Campaign.objects.filter(status=CampaignStatus.SENDING).count(),
    )
