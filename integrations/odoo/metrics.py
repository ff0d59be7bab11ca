"""Odoo sync metrics, read at scrape time: what waits, what failed, when the last push succeeded."""

from django.db.models import Count, Max, Q
from prometheus_client.core import GaugeMetricFamily

from integrations.models import InventorySyncState, OdooOrderLink, SyncStatus


def collect():
    pending = GaugeMetricFamily("celeste_odoo_sync_pending", "Records waiting to be synced to Odoo.", labels=["kind"])
    failures = GaugeMetricFamily("celeste_odoo_sync_failures", "Records whose last sync failed.", labels=["kind"])
    last = GaugeMetricFamily(
        "celeste_odoo_last_success_timestamp_seconds",
        "When a sync to Odoo last succeeded (Unix time).",
        labels=["kind"],
    )
    for kind, rows, waiting in [
        ("orders", OdooOrderLink.objects, Q(status=SyncStatus.PENDING)),
        ("inventory", InventorySyncState.objects, Q(dirty=True) & ~Q(status=SyncStatus.SKIPPED)),
    ]:
        figures = rows.aggregate(
            pending=Count("pk", filter=waiting),
            failed=Count("pk", filter=Q(status=SyncStatus.FAILED)),
            last=Max("synced_at"),
        )
        pending.add_metric([kind], figures["pending"])
        failures.add_metric([kind], figures["failed"])
        if figures["last"] is not None:
            last.add_metric([kind], figures["last"].timestamp())
    yield from (pending, failures, last)
