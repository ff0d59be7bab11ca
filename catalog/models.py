import hashlib

from django.conf import settings
from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVector, SearchVectorField
from django.db import models
from django.db.models import Q
from pgvector.django import HalfVectorField, HnswIndex

# The text search configuration of the keyword arm (migration 0005): English stemming over
# unaccented words, so "creme" finds "crème" and "drinks" finds "drink".
SEARCH_CONFIG = "catalog_search"


class Store(models.Model):
    code = models.SlugField(max_length=50, unique=True)
    name = models.CharField(max_length=200)
    city = models.CharField(max_length=100, blank=True)
    active = models.BooleanField(default=True)
    odoo_location_id = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Id of the Odoo stock.location this store's stock is synced to (empty: not synced).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


def default_currency() -> str:
    return settings.DEFAULT_CURRENCY


def embedding_text(*, name: str, category: str, description: str) -> str:
    return f"{name}. {category}. {description}".strip()


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Product(models.Model):
    sku = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    category = models.CharField(max_length=100, blank=True, db_index=True)
    price = models.DecimalField(max_digits=12, decimal_places=2)
    currency = models.CharField(max_length=3, default=default_currency)
    active = models.BooleanField(default=True)
    # Hash of the text the embedding should be made from; derived in save().
    content_hash = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)
    # Time-decayed popularity over all stores, written only by the aggregation
    # (catalog/popularity.py); indexed for ``ordering=-popularity``.
    popularity = models.FloatField(default=0, db_index=True, editable=False)
    # The keyword arm of search: computed by Postgres on every write, so it is never stale and
    # needs no task. Name and SKU weigh most, then category, then description. The name also
    # goes in unstemmed, so a brand ("oatly") outranks the word its stem shares ("oat").
    search_vector = models.GeneratedField(
        expression=SearchVector("name", config=SEARCH_CONFIG, weight="A")
        + SearchVector("name", config="simple", weight="A")
        + SearchVector("sku", config="simple", weight="A")
        + SearchVector("category", config=SEARCH_CONFIG, weight="B")
        + SearchVector("description", config=SEARCH_CONFIG, weight="C"),
        output_field=SearchVectorField(),
        db_persist=True,
    )

    class Meta:
        ordering = ["name", "id"]
        indexes = [
            GinIndex(fields=["search_vector"], name="product_search_vector_gin"),
            # Misspellings: word similarity of the query to the name.
            GinIndex(fields=["name"], name="product_name_trgm", opclasses=["gin_trgm_ops"]),
            # Exact SKU and SKU prefix, whatever the case (ILIKE).
            GinIndex(fields=["sku"], name="product_sku_trgm", opclasses=["gin_trgm_ops"]),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(price__gte=0), name="product_price_not_negative"),
            models.CheckConstraint(condition=Q(currency__regex=r"^[A-Z]{3}$"), name="product_currency_iso"),
        ]

    def __str__(self):
        return f"{self.name} ({self.sku})"

    @classmethod
    def from_db(cls, db, field_names, values):
        instance = super().from_db(db, field_names, values)
        instance._loaded_content_hash = instance.__dict__.get("content_hash")
        return instance

    def embedding_text(self) -> str:
        return embedding_text(name=self.name, category=self.category, description=self.description)

    def save(self, *args, **kwargs):
        self.content_hash = text_hash(self.embedding_text())
        update_fields = kwargs.get("update_fields")
        if update_fields is not None and {"name", "description", "category"} & set(update_fields):
            kwargs["update_fields"] = {*update_fields, "content_hash"}
        # Read by the post_save receiver: only a text change needs a new embedding.
        self.text_changed = getattr(self, "_loaded_content_hash", None) != self.content_hash
        adding = self._state.adding
        super().save(*args, **kwargs)
        self._loaded_content_hash = self.content_hash
        if self.text_changed and not adding:
            # Derived state, kept with the row whatever path saved it: the embed
            # task claims by status through a small partial index.
            ProductEmbedding.objects.filter(product_id=self.pk).exclude(status=EmbeddingStatus.PENDING).update(
                status=EmbeddingStatus.PENDING
            )


class StockLevel(models.Model):
    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="stock_levels")
    store = models.ForeignKey(Store, on_delete=models.CASCADE, related_name="stock_levels")
    quantity = models.IntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["store_id", "product_id"]
        constraints = [
            models.UniqueConstraint(fields=["product", "store"], name="stock_unique_product_store"),
            models.CheckConstraint(condition=Q(quantity__gte=0), name="stock_quantity_not_negative"),
        ]

    def __str__(self):
        return f"{self.product.sku} @ {self.store.code}: {self.quantity}"


class EmbeddingStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    READY = "ready", "Ready"
    FAILED = "failed", "Failed"


class ProductEmbedding(models.Model):
    """The semantic-search vector of one product.

    ``content_hash`` and ``model_name`` say what the vector was made from; when
    they differ from the product's current hash or the configured model, the
    embedding is stale and the embed task will redo it.
    """

    product = models.OneToOneField(Product, on_delete=models.CASCADE, primary_key=True, related_name="embedding")
    # Half precision: half the memory and I/O of the index and the table at 1M products; the
    # model's vectors agree with torch to ~1e-2 anyway (see the `search` bench for the recall).
    vector = HalfVectorField(dimensions=settings.EMBEDDING_DIMENSIONS, null=True, blank=True)
    model_name = models.CharField(max_length=200, blank=True)
    content_hash = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=20, choices=EmbeddingStatus.choices, default=EmbeddingStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    embedded_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["product_id"]
        indexes = [
            # Build parameters by measurement (the `search` bench, docs/testing.md): at 100k,
            # ef_construction 64 builds in 0.5-0.7x the time of 128 (recall@10 at ef_search 200:
            # 0.96 vs 0.974). At 1M (a corpus in product families, as real embeddings come) m=16
            # levelled off at recall@10 0.944 (ef_search 300 and 400) while m=24 gives 0.948 at
            # ef_search 200, 0.966 at 300 and 0.97 at 400, for 1.9x the build time (1,206 s vs
            # 640 s on 2 cores) and an index 4% larger (1,163 vs 1,116 MiB).
            HnswIndex(
                name="embedding_vector_hnsw",
                fields=["vector"],
                m=24,
                ef_construction=64,
                opclasses=["halfvec_cosine_ops"],
            ),
            models.Index(fields=["product"], name="embedding_claimable_idx", condition=~Q(status="ready")),
        ]

    def __str__(self):
        return f"embedding of {self.product_id} ({self.status})"


class InteractionKind(models.TextChoices):
    VIEW = "view", "View"
    ADD_TO_CART = "add_to_cart", "Add to cart"
    SEARCH_CLICK = "search_click", "Search click"
    ORDER = "order", "Order"  # fed by orders, never by the tracking endpoints


class PopularityBucket(models.Model):
    """Counted interactions of one product (in one store, or none) and kind in one
    5-minute bucket. Written only by the aggregation and the order feed; no actor."""

    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="popularity_buckets")
    store = models.ForeignKey(Store, on_delete=models.CASCADE, null=True, blank=True, related_name="+")
    bucket = models.DateTimeField()
    kind = models.CharField(max_length=20, choices=InteractionKind.choices)
    count = models.IntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["product", "store", "bucket", "kind"], name="popularity_bucket_unique", nulls_distinct=False
            ),
        ]
        indexes = [models.Index(fields=["bucket"], name="popularity_bucket_time_idx")]

    def __str__(self):
        return f"{self.kind} of {self.product_id} at {self.bucket:%Y-%m-%d %H:%M}: {self.count}"


class PopularityScore(models.Model):
    """A product's time-decayed score in one store (``store`` empty: over all stores)."""

    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="popularity_scores")
    store = models.ForeignKey(Store, on_delete=models.CASCADE, null=True, blank=True, related_name="+")
    score = models.FloatField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["product", "store"], name="popularity_score_unique", nulls_distinct=False),
        ]
        indexes = [models.Index(fields=["store", "-score"], name="popularity_score_rank_idx")]

    def __str__(self):
        return f"{self.product_id} @ {self.store_id or 'all'}: {self.score:.2f}"


class PopularityStreamPosition(models.Model):
    """The last stream entry id whose counts are committed, per consumer group: written
    in the same transaction as the aggregates, so an entry is never counted twice."""

    group = models.CharField(max_length=100, primary_key=True)
    last_id = models.CharField(max_length=40, default="0-0")
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self):
        return f"{self.group}: {self.last_id}"


class PopularityOrder(models.Model):
    """What an order added to the ``order`` counts (plain ids: the catalog does not
    depend on orders), so feeding an order twice, or its cancellation, is exact."""

    order_id = models.BigIntegerField(primary_key=True)
    store_id = models.BigIntegerField(null=True)
    bucket = models.DateTimeField()
    product_ids = models.JSONField(default=list)
    counted = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self):
        return f"order {self.order_id} ({'counted' if self.counted else 'not counted'})"


class ImageStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    READY = "ready", "Ready"
    FAILED = "failed", "Failed"


class ProductImage(models.Model):
    """One image of a product, in the product's order (``position``).

    The original is stored as it came (``original_name`` in the default storage, named by
    its ``content_hash``); a URL ingest has only ``source_url`` until the task fetched it.
    The variants are made in the background (catalog/images.py); ``error`` says why an
    image failed.
    """

    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="images")
    position = models.PositiveIntegerField(default=0)
    source_url = models.URLField(max_length=2000, blank=True)
    original_name = models.CharField(max_length=300, blank=True)
    content_hash = models.CharField(max_length=64, blank=True)
    size = models.PositiveIntegerField(null=True, blank=True, help_text="Bytes of the original.")
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    format = models.CharField(max_length=10, blank=True, help_text="As Pillow decoded it (JPEG, PNG, WEBP, …).")
    status = models.CharField(max_length=20, choices=ImageStatus.choices, default=ImageStatus.PENDING)
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    processed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["product_id", "position", "id"]
        constraints = [
            # The same original twice on a product is one image.
            models.UniqueConstraint(
                fields=["product", "content_hash"],
                name="product_image_unique_original",
                condition=~Q(content_hash=""),
            ),
            models.CheckConstraint(condition=~Q(source_url="", original_name=""), name="product_image_has_a_source"),
        ]
        indexes = [models.Index(fields=["status"], name="product_image_status_idx", condition=~Q(status="ready"))]

    def __str__(self):
        return f"image {self.id} of product {self.product_id} ({self.status})"


class ProductImageVariant(models.Model):
    """One rendition of an image: ``name`` (small, medium, large) in one ``format``,
    stored under ``file_name`` (content-addressed: original hash + variant spec)."""

    image = models.ForeignKey(ProductImage, on_delete=models.CASCADE, related_name="variants")
    name = models.CharField(max_length=20)
    format = models.CharField(max_length=10)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    size = models.PositiveIntegerField(help_text="Bytes.")
    file_name = models.CharField(max_length=300)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["image_id", "width", "format"]
        constraints = [
            models.UniqueConstraint(fields=["image", "name", "format"], name="product_image_variant_unique"),
        ]

    def __str__(self):
        return f"{self.name}.{self.format} of image {self.image_id}"
