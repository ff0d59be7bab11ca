from django.conf import settings
from django.db.models import Prefetch, prefetch_related_objects
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

from .. import images, popularity, services
from ..embeddings import query_vector
from ..models import Product, ProductEmbedding, ProductImage, StockLevel, Store
from ..selectors import SearchMode, product_images_prefetch, product_search
from .filters import ProductFilter, StockLevelFilter
from .permissions import IsStaffOrReadOnly
from .serializers import (
    ImageIngestSerializer,
    ProductImageSerializer,
    ProductSerializer,
    SearchQuerySerializer,
    SearchResultSerializer,
    StockLevelSerializer,
    StoreSerializer,
    TrackEventsSerializer,
    TrackResultSerializer,
    TrackViewSerializer,
    TrendingQuerySerializer,
    TrendingResultSerializer,
)

# Room for the multipart boundaries and part headers around a file of the largest allowed size.
MULTIPART_OVERHEAD = 64 * 1024


def _actor(request) -> str:
    user = request.user
    return popularity.actor_hash(
        user_id=user.pk if user and user.is_authenticated else None,
        ip=request.META.get("REMOTE_ADDR", ""),
        user_agent=request.META.get("HTTP_USER_AGENT", ""),
    )


def _stores_check(store_ids: set[int]) -> set[int]:
    """The unknown ones among ``store_ids`` (one indexed read, none when no store is given)."""
    if not store_ids:
        return set()
    return store_ids - set(Store.objects.filter(id__in=store_ids).values_list("id", flat=True))


class StoreViewSet(viewsets.ModelViewSet):
    queryset = Store.objects.all()
    serializer_class = StoreSerializer
    permission_classes = [IsStaffOrReadOnly]
    filterset_fields = ["active", "code"]
    search_fields = ["name", "city", "code"]
    ordering_fields = ["name", "code", "created_at"]

    def perform_create(self, serializer):
        serializer.instance = services.store_create(**serializer.validated_data)

    def perform_update(self, serializer):
        serializer.instance = services.store_update(store=serializer.instance, **serializer.validated_data)

    def perform_destroy(self, instance):
        services.store_delete(store=instance)


class ProductViewSet(viewsets.ModelViewSet):
    # The embedding's status, not its vector: 384 numbers parsed per product were a fifth of a
    # product list's CPU time.
    queryset = (
        Product.objects.select_related("embedding")
        .defer("embedding__vector")
        .prefetch_related(product_images_prefetch())
    )
    serializer_class = ProductSerializer
    permission_classes = [IsStaffOrReadOnly]
    filterset_class = ProductFilter
    search_fields = ["name", "sku", "description"]
    ordering_fields = ["name", "price", "sku", "created_at", "updated_at", "popularity"]
    # Where tracked interactions go. One attribute so that the benchmark can serve this same
    # view with the synchronous design the stream replaced (bench/tracking_sync.py).
    track = staticmethod(popularity.popularity_track)

    def perform_create(self, serializer):
        try:
            product = services.product_create(**serializer.validated_data)
        except images.ImageRejected as exc:
            raise ValidationError({"image_urls": [str(exc)]}) from None
        # Re-read: with the switch on sync the embedding was made after commit.
        serializer.instance = self.get_queryset().get(id=product.id)

    def perform_update(self, serializer):
        product = services.product_update(product=serializer.instance, **serializer.validated_data)
        serializer.instance = self.get_queryset().get(id=product.id)

    def perform_destroy(self, instance):
        services.product_delete(product=instance)

    @extend_schema(
        request={"multipart/form-data": ImageIngestSerializer, "application/json": ImageIngestSerializer},
        responses={
            202: ProductImageSerializer,
            200: OpenApiResponse(ProductImageSerializer, description="The product has this image already."),
        },
        description="Add an image (staff): a multipart `file` (at most IMAGE_MAX_BYTES, 10 MB) or a `url` "
        "(http or https, fetched in the background). The content must be an image Pillow decodes (JPEG, PNG, "
        "GIF, WebP, AVIF, TIFF, BMP; not SVG). Answers 202 with the image `pending`: its variants are made in "
        "the background. The same original (or URL) twice is one image (200).",
    )
    @action(
        detail=True,
        methods=["post"],
        url_path="images",
        parser_classes=[MultiPartParser, FormParser, JSONParser],
        filter_backends=[],
        pagination_class=None,
    )
    def images(self, request, pk=None):
        product = self.get_object()
        # Refused before the body is parsed: Django would otherwise spool any size to a temp file.
        length = request.META.get("CONTENT_LENGTH") or ""
        if length.isdigit() and int(length) > settings.IMAGE_MAX_BYTES + MULTIPART_OVERHEAD:
            raise ValidationError({"file": [f"At most {settings.IMAGE_MAX_BYTES} bytes."]})
        params = ImageIngestSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        try:
            if "file" in params.validated_data:
                image, created = images.product_image_upload(
                    product=product, content=params.validated_data["file"].read()
                )
            else:
                image, created = images.product_image_add_url(product=product, url=params.validated_data["url"])
        except images.ImageRejected as exc:
            raise ValidationError({"file" if "file" in params.validated_data else "url": [str(exc)]}) from None
        image = ProductImage.objects.prefetch_related("variants").get(id=image.id)
        return Response(
            ProductImageSerializer(image).data, status=status.HTTP_202_ACCEPTED if created else status.HTTP_200_OK
        )

    @extend_schema(request=None, responses={204: None}, description="Delete one of the product's images (staff).")
    @action(
        detail=True,
        methods=["delete"],
        url_path=r"images/(?P<image_id>[0-9]+)",
        filter_backends=[],
        pagination_class=None,
    )
    def image_delete(self, request, pk=None, image_id=None):
        product = self.get_object()
        images.product_image_delete(image=get_object_or_404(ProductImage, product=product, id=image_id))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        parameters=[SearchQuerySerializer],
        responses=SearchResultSerializer,
        description="Search, best first. `hybrid` (the default) fuses a keyword arm (weighted words of name, "
        "category and description; misspelt names; SKU prefixes) with the semantic arm (nearest in meaning) by "
        "reciprocal rank; a product whose SKU is `q` comes first. The semantic arm only returns embedded "
        "products; the keyword arm also those not embedded yet.",
    )
    @action(detail=False, methods=["get"], url_path="search", filter_backends=[], pagination_class=None)
    def search(self, request):
        params = SearchQuerySerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        query = params.validated_data
        mode = query["mode"]
        hits = product_search(
            query=query["q"],
            # The keyword arm needs no model call.
            vector=query_vector(query["q"]) if mode != SearchMode.KEYWORD else None,
            mode=mode,
            limit=query["limit"],
            store_id=query.get("store"),
            in_stock=query.get("in_stock"),
            category=query.get("category"),
            sort=query["sort"],
        )
        # Each hit shows its embedding's status: one query for those the search did not load
        # (not one per product), without the vectors.
        prefetch_related_objects(
            [hit.product for hit in hits], Prefetch("embedding", queryset=ProductEmbedding.objects.defer("vector"))
        )
        return Response(SearchResultSerializer({"count": len(hits), "results": hits}).data)

    @extend_schema(
        request=TrackViewSerializer,
        responses={202: TrackResultSerializer},
        description="Record that the client viewed the product (signed in or not). Stored in a Redis Stream, "
        "counted once per client, product and kind per POPULARITY_DEDUP_WINDOW_SECONDS; an inactive product "
        "is accepted and not counted. 503 with Retry-After if the event could not be stored.",
    )
    @action(
        detail=True,
        methods=["post"],
        url_path="view",
        permission_classes=[AllowAny],
        filter_backends=[],
        pagination_class=None,
    )
    def track_view(self, request, pk=None):
        params = TrackViewSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        store_id = params.validated_data.get("store")
        try:
            product_id = int(pk)
        except (TypeError, ValueError):
            raise NotFound("No such product.") from None
        # A read on the primary key, no write: the request path only appends to Redis.
        active = Product.objects.filter(id=product_id).values_list("active", flat=True).first()
        if active is None:
            raise NotFound("No such product.")
        if store_id is not None and _stores_check({store_id}):
            raise ValidationError({"store": [f"Unknown store {store_id}."]})
        counted = 0
        if active:
            event = popularity.Event(product_id=product_id, kind="view", store_id=store_id)
            counted = self.track(actor=_actor(request), events=[event])
        return Response({"accepted": 1, "counted": counted}, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        request=TrackEventsSerializer,
        responses={202: TrackResultSerializer},
        description="Record up to 100 buffered interactions (`view`, `add_to_cart`, `search_click`). "
        "An unknown product, store or kind is a 400 naming the event's index; nothing is stored then.",
    )
    @action(
        detail=False,
        methods=["post"],
        url_path="events",
        permission_classes=[AllowAny],
        filter_backends=[],
        pagination_class=None,
    )
    def events(self, request):
        params = TrackEventsSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        events = params.validated_data["events"]
        products = dict(Product.objects.filter(id__in={e["product"] for e in events}).values_list("id", "active"))
        unknown_stores = _stores_check({e["store"] for e in events if e.get("store")})
        errors = {}
        for index, event in enumerate(events):
            if event["product"] not in products:
                errors[index] = {"product": [f"Unknown product {event['product']}."]}
            elif event.get("store") in unknown_stores:
                errors[index] = {"store": [f"Unknown store {event['store']}."]}
        if errors:
            raise ValidationError({"events": errors})
        tracked = [
            popularity.Event(product_id=e["product"], kind=e["kind"], store_id=e.get("store"))
            for e in events
            if products[e["product"]]
        ]
        counted = self.track(actor=_actor(request), events=tracked)
        return Response({"accepted": len(events), "counted": counted}, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        parameters=[TrendingQuerySerializer],
        responses=TrendingResultSerializer,
        description="The most popular active products (time-decayed score), best first, overall or in a "
        "store and/or category. Served from a cache the aggregation refreshes every few minutes.",
    )
    @action(detail=False, methods=["get"], url_path="trending", filter_backends=[], pagination_class=None)
    def trending(self, request):
        params = TrendingQuerySerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        query = params.validated_data
        items = popularity.trending(store_id=query.get("store"), category=query.get("category"), limit=query["limit"])
        return Response({"count": len(items), "results": items})


class StockLevelViewSet(viewsets.ModelViewSet):
    queryset = StockLevel.objects.select_related("product", "store")
    serializer_class = StockLevelSerializer
    permission_classes = [IsStaffOrReadOnly]
    filterset_class = StockLevelFilter
    ordering_fields = ["quantity", "updated_at"]

    def perform_create(self, serializer):
        serializer.instance = services.stock_level_set(**serializer.validated_data)

    def perform_update(self, serializer):
        level = serializer.instance
        quantity = serializer.validated_data.get("quantity", level.quantity)
        serializer.instance = services.stock_level_set(product=level.product, store=level.store, quantity=quantity)

    def perform_destroy(self, instance):
        services.stock_level_delete(stock_level=instance)
