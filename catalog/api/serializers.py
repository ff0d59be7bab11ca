from django.conf import settings
from rest_framework import serializers

from ..images import image_json
from ..models import ImageStatus, Product, StockLevel, Store
from ..selectors import SearchMode, embedding_status


class StoreSerializer(serializers.ModelSerializer):
    class Meta:
        model = Store
        fields = ["id", "code", "name", "city", "active", "created_at", "updated_at"]
        read_only_fields = ["created_at", "updated_at"]


class ImageVariantSerializer(serializers.Serializer):
    width = serializers.IntegerField()
    height = serializers.IntegerField()
    urls = serializers.DictField(
        child=serializers.CharField(),
        help_text="Format (avif, webp, jpeg; preferred first) to URL. On the CDN host when S3 is configured.",
    )


class ProductImageSerializer(serializers.Serializer):
    """Read-only: what catalog.images.image_json returns (the fields below document it)."""

    id = serializers.IntegerField()
    position = serializers.IntegerField()
    status = serializers.ChoiceField(choices=ImageStatus.choices)
    error = serializers.CharField(help_text="Why the image failed (empty otherwise).")
    width = serializers.IntegerField(allow_null=True, help_text="Of the original (null until it was fetched).")
    height = serializers.IntegerField(allow_null=True)
    format = serializers.CharField(help_text="Of the original, as decoded (JPEG, PNG, …).")
    source_url = serializers.CharField(help_text="The URL it was ingested from (empty for uploads).")
    variants = serializers.DictField(
        child=ImageVariantSerializer(), help_text="Variant name (small, medium, large) to its size and URLs."
    )

    def to_representation(self, image):
        return image_json(image)


class ImageIngestSerializer(serializers.Serializer):
    """Either a file (multipart) or a URL (JSON or form)."""

    file = serializers.FileField(required=False, help_text=f"At most {settings.IMAGE_MAX_BYTES} bytes.")
    url = serializers.URLField(required=False, max_length=2000, help_text="http(s), fetched in the background.")

    def validate(self, attrs):
        if ("file" in attrs) == ("url" in attrs):
            raise serializers.ValidationError({"detail": "Send either a file or a url."})
        upload = attrs.get("file")
        if upload is not None and upload.size > settings.IMAGE_MAX_BYTES:
            raise serializers.ValidationError({"file": [f"At most {settings.IMAGE_MAX_BYTES} bytes."]})
        return attrs


class ProductSerializer(serializers.ModelSerializer):
    price = serializers.DecimalField(max_digits=12, decimal_places=2, min_value=0)
    currency = serializers.ChoiceField(
        choices=settings.CURRENCIES,
        default=settings.DEFAULT_CURRENCY,
        # Say what to send instead, not only that this was wrong.
        error_messages={
            "invalid_choice": f'"{{input}}" is not an accepted currency: use one of {", ".join(settings.CURRENCIES)}.'
        },
    )
    embedding_status = serializers.SerializerMethodField()
    images = ProductImageSerializer(many=True, read_only=True)
    image_urls = serializers.ListField(
        child=serializers.URLField(max_length=2000),
        write_only=True,
        required=False,
        max_length=settings.IMAGE_MAX_PER_PRODUCT,
        help_text="On create: http(s) URLs of images to ingest in the background.",
    )

    class Meta:
        model = Product
        fields = [
            "id",
            "sku",
            "name",
            "description",
            "category",
            "price",
            "currency",
            "active",
            "embedding_status",
            "images",
            "image_urls",
            "popularity",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["popularity", "created_at", "updated_at"]

    def validate_image_urls(self, urls):
        if self.instance is not None:
            raise serializers.ValidationError("Only on create; add images with POST /products/{id}/images.")
        return urls

    def get_embedding_status(self, product) -> str:
        return embedding_status(product)


# StockLevel.quantity is a Postgres integer: a larger value would fail in the database (a 500).
MAX_STOCK_QUANTITY = 2**31 - 1


class StockLevelSerializer(serializers.ModelSerializer):
    quantity = serializers.IntegerField(min_value=0, max_value=MAX_STOCK_QUANTITY)

    class Meta:
        model = StockLevel
        fields = ["id", "product", "store", "quantity", "updated_at"]
        read_only_fields = ["updated_at"]

    def validate(self, attrs):
        if self.instance is not None:
            for field in ("product", "store"):
                if field in attrs and attrs[field] != getattr(self.instance, field):
                    raise serializers.ValidationError(
                        {field: "Cannot be changed; create a stock level for it instead."}
                    )
        return attrs


class SearchQuerySerializer(serializers.Serializer):
    q = serializers.CharField(max_length=500, trim_whitespace=True)
    mode = serializers.ChoiceField(
        choices=SearchMode.choices,
        default=SearchMode.HYBRID,
        help_text="`hybrid`: keyword and semantic arms fused by reciprocal rank, an exact SKU first; "
        "`semantic`: nearest in meaning; `keyword`: words, misspelt names and SKU prefixes.",
    )
    limit = serializers.IntegerField(min_value=1, max_value=100, default=20)
    store = serializers.IntegerField(required=False, min_value=1)
    in_stock = serializers.BooleanField(required=False, allow_null=True, default=None)
    category = serializers.CharField(required=False, max_length=100)
    sort = serializers.ChoiceField(
        choices=["relevance", "popularity"],
        default="relevance",
        help_text="`popularity`: among hits of (nearly) equal score, the most popular first.",
    )

    def validate_store(self, value):
        if not Store.objects.filter(id=value).exists():
            raise serializers.ValidationError(f"Unknown store {value}.")
        return value


class SearchHitSerializer(serializers.Serializer):
    score = serializers.FloatField()
    product = ProductSerializer()


class SearchResultSerializer(serializers.Serializer):
    """The answer of search (not paginated): hits best first."""

    count = serializers.IntegerField()
    results = SearchHitSerializer(many=True)


MAX_EVENTS = 100


class TrackViewSerializer(serializers.Serializer):
    store = serializers.IntegerField(required=False, allow_null=True, min_value=1)


class TrackEventSerializer(serializers.Serializer):
    product = serializers.IntegerField(min_value=1)
    kind = serializers.ChoiceField(choices=["view", "add_to_cart", "search_click"])
    store = serializers.IntegerField(required=False, allow_null=True, min_value=1)


class TrackEventsSerializer(serializers.Serializer):
    events = serializers.ListField(child=TrackEventSerializer(), allow_empty=False)

    def to_internal_value(self, data):
        # Refused before any event is validated: a huge batch costs nothing.
        events = data.get("events") if hasattr(data, "get") else None
        if isinstance(events, list) and len(events) > MAX_EVENTS:
            raise serializers.ValidationError(
                {"events": {MAX_EVENTS: [f"At most {MAX_EVENTS} events per request; this one has {len(events)}."]}}
            )
        return super().to_internal_value(data)


class TrackResultSerializer(serializers.Serializer):
    accepted = serializers.IntegerField(help_text="Events received.")
    counted = serializers.IntegerField(help_text="Events stored (not seen from this client within the window).")


class TrendingQuerySerializer(serializers.Serializer):
    store = serializers.IntegerField(required=False, min_value=1)
    category = serializers.CharField(required=False, max_length=100)
    limit = serializers.IntegerField(min_value=1, max_value=100, default=20)

    def validate_store(self, value):
        if not Store.objects.filter(id=value).exists():
            raise serializers.ValidationError(f"Unknown store {value}.")
        return value


class TrendingItemSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    sku = serializers.CharField()
    name = serializers.CharField()
    category = serializers.CharField()
    price = serializers.CharField()
    currency = serializers.CharField()
    score = serializers.FloatField()


class TrendingResultSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    results = TrendingItemSerializer(many=True)
