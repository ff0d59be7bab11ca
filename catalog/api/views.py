from drf_spectacular.utils import extend_schema
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from .. import services
from ..embeddings import query_vector
from ..models import Product, StockLevel, Store
from ..selectors import product_search
from .filters import ProductFilter, StockLevelFilter
from .permissions import IsStaffOrReadOnly
from .serializers import (
    ProductSerializer,
    SearchQuerySerializer,
    SearchResultSerializer,
    StockLevelSerializer,
    StoreSerializer,
)


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
    queryset = Product.objects.select_related("embedding")
    serializer_class = ProductSerializer
    permission_classes = [IsStaffOrReadOnly]
    filterset_class = ProductFilter
    search_fields = ["name", "sku", "description"]
    ordering_fields = ["name", "price", "sku", "created_at", "updated_at"]

    def perform_create(self, serializer):
        product = services.product_create(**serializer.validated_data)
        # Re-read: with the switch on sync the embedding was made after commit.
        serializer.instance = self.get_queryset().get(id=product.id)

    def perform_update(self, serializer):
        product = services.product_update(product=serializer.instance, **serializer.validated_data)
        serializer.instance = self.get_queryset().get(id=product.id)

    def perform_destroy(self, instance):
        services.product_delete(product=instance)

    @extend_schema(
        parameters=[SearchQuerySerializer],
        responses=SearchResultSerializer,
        description="Semantic search: products nearest in meaning to `q`, best first. "
        "Products not embedded yet are not returned.",
    )
    @action(detail=False, methods=["get"], url_path="search", filter_backends=[], pagination_class=None)
    def search(self, request):
        params = SearchQuerySerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        query = params.validated_data
        hits = product_search(
            vector=query_vector(query["q"]),
            limit=query["limit"],
            store_id=query.get("store"),
            in_stock=query.get("in_stock"),
            category=query.get("category"),
        )
        return Response(SearchResultSerializer({"count": len(hits), "results": hits}).data)


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
