"""The design the popularity stream replaced, served for the tracking benchmark only.

``POST /bench/products/{id}/view`` is the shipped ``ProductViewSet.track_view`` (same
routing, authentication, throttles, validation and product read) with its ``track``
pointed at the synchronous design the plan called the current state: count the view
with ``UPDATE … SET views = views + 1``, write the 5-minute bucket and recompute the
product's popularity score, all inside the request's transaction. gunicorn serves it
with ``DJANGO_SETTINGS_MODULE=bench.tracking_settings``.
"""

from django.db import connection, transaction
from django.urls import path
from django.utils import timezone

from catalog import popularity
from catalog.api.views import ProductViewSet
from celeste.urls import urlpatterns as celeste_urlpatterns

COUNTER_TABLE = "bench_views"
COUNTER_TABLE_SQL = f"CREATE TABLE IF NOT EXISTS {COUNTER_TABLE} (product_id bigint PRIMARY KEY, views int NOT NULL)"


def sync_track(*, actor: str, events: list[popularity.Event]) -> int:
    with transaction.atomic(), connection.cursor() as cursor:
        for event in events:
            cursor.execute(
                f"INSERT INTO {COUNTER_TABLE} (product_id, views) VALUES (%s, 1)"
                f" ON CONFLICT (product_id) DO UPDATE SET views = {COUNTER_TABLE}.views + 1",
                [event.product_id],
            )
            popularity._counts_add(
                {(event.product_id, event.store_id, popularity.bucket_of(timezone.now()), event.kind): 1}
            )
            popularity.popularity_scores_recompute(product_ids=(event.product_id, event.product_id + 1))
    return len(events)


class SyncTrackingProductViewSet(ProductViewSet):
    track = staticmethod(sync_track)


urlpatterns = [
    # As the router builds the route: the action's own options (permissions, no filters) apply.
    path(
        "bench/products/<pk>/view",
        SyncTrackingProductViewSet.as_view({"post": "track_view"}, **SyncTrackingProductViewSet.track_view.kwargs),
    ),
    *celeste_urlpatterns,
]
