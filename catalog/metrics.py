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


def collect():
    from .models import ImageStatus, ProductImage
    from .services import pending_embeddings

    pending = pending_embeddings().aggregate(n=Count("pk"), oldest=Min("updated_at"))
    yield GaugeMetricFamily("celeste_embeddings_pending", "Active products waiting for a vector.", value=pending["n"])
    oldest = pending["oldest"]
    yield GaugeMetricFamily(
        "celeste_embedding_lag_seconds",
        "Age of the oldest pending embedding (0: none pending).",
        value=(timezone.now() - oldest).total_seconds() if oldest else 0,
    )
    images = ProductImage.objects.filter(status=ImageStatus.PENDING).aggregate(n=Count("pk"), oldest=Min("created_at"))
    yield GaugeMetricFamily("celeste_images_pending", "Product images waiting for their variants.", value=images["n"])
    oldest = images["oldest"]
    yield GaugeMetricFamily(
        "celeste_image_lag_seconds",
        "Age of the oldest pending product image (0: none pending).",
        value=(timezone.now() - oldest).total_seconds() if oldest else 0,
    )
