"""Catalog metrics: embedding and image work done (counters) and still to do (scrape-time gauges)."""

from django.db.models import Count, Min
from django.utils import timezone
from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily

ENCODE_CALLS = Counter("celeste_embedding_encode_calls_total", "Calls into the embedding model.")
TEXTS_ENCODED = Counter("celeste_embedding_texts_encoded_total", "Texts the embedding model encoded.")
IMAGES_PROCESSED = Counter(
    "celeste_images_processed_total",
    "Product image processing runs by outcome (ready, failed, duplicate).",
    ["outcome"],
)


def _backlog(rows, *, since: str, pending: tuple[str, str], lag: tuple[str, str]):
    """Two gauges of work waiting: how many ``rows``, and the age of the oldest by ``since``."""
    found = rows.aggregate(n=Count("pk"), oldest=Min(since))
    yield GaugeMetricFamily(*pending, value=found["n"])
    oldest = found["oldest"]
    yield GaugeMetricFamily(*lag, value=(timezone.now() - oldest).total_seconds() if oldest else 0)


def collect():
    from .models import ImageStatus, ProductImage
    from .services import pending_embeddings

    yield from _backlog(
        pending_embeddings(),
        since="updated_at",
        pending=("celeste_embeddings_pending", "Active products waiting for a vector."),
        lag=("celeste_embedding_lag_seconds", "Age of the oldest pending embedding (0: none pending)."),
    )
    yield from _backlog(
        ProductImage.objects.filter(status=ImageStatus.PENDING),
        since="created_at",
        pending=("celeste_images_pending", "Product images waiting for their variants."),
        lag=("celeste_image_lag_seconds", "Age of the oldest pending product image (0: none pending)."),
    )
