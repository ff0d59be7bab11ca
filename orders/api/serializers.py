from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from catalog.images import image_json
from catalog.models import Product, Store

from ..models import Address, Order, OrderItem, Payment

INCLUDES = ("products", "stores", "addresses")


class AddressSerializer(serializers.ModelSerializer):
    country = serializers.RegexField(
        r"^[A-Z]{2}$", error_messages={"invalid": "Use an ISO 3166-1 alpha-2 code, e.g. DE."}
    )

    class Meta:
        model = Address
        fields = [
            "id",
            "label",
            "recipient",
            "line1",
            "line2",
            "city",
            "postal_code",
            "country",
            "phone",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["created_at", "updated_at"]


class IncludedProductSerializer(serializers.ModelSerializer):
    images = serializers.SerializerMethodField()

    class Meta:
        model = Product
        fields = ["id", "sku", "name", "description", "category", "price", "currency", "active", "images"]

    # The same objects as a product's `images` (GET /products/{id}/): id, status, variants with URLs, ...
    @extend_schema_field({"type": "array", "items": {"type": "object", "additionalProperties": True}})
    def get_images(self, product) -> list[dict]:
        return [image_json(image) for image in product.images.all()]


class IncludedStoreSerializer(serializers.ModelSerializer):
    class Meta:
        model = Store
        fields = ["id", "code", "name", "city"]


def _includes(serializer) -> set[str]:
    return serializer.context.get("includes", set())


class OrderItemSerializer(serializers.ModelSerializer):
    class Meta:
        model = OrderItem
        fields = ["id", "product", "product_name", "sku", "unit_price", "quantity", "line_total"]

    def to_representation(self, item):
        data = super().to_representation(item)
        if "products" in _includes(self):
            data["product"] = IncludedProductSerializer(item.product).data
        return data


class OrderSerializer(serializers.ModelSerializer):
    """An order; ``context["includes"]`` embeds products, store and address in place of their ids."""

    items = OrderItemSerializer(many=True, read_only=True)

    class Meta:
        model = Order
        fields = [
            "id",
            "number",
            "user",
            "status",
            "store",
            "address",
            "currency",
            "subtotal",
            "total",
            "payment_error",
            "items",
            "created_at",
            "paid_at",
            "confirmed_at",
            "shipped_at",
            "delivered_at",
            "cancelled_at",
            "updated_at",
        ]
        read_only_fields = fields

    def to_representation(self, order):
        data = super().to_representation(order)
        includes = _includes(self)
        if "stores" in includes:
            data["store"] = IncludedStoreSerializer(order.store).data
        if "addresses" in includes:
            data["address"] = AddressSerializer(order.address).data
        return data


class PlaceOrderItemSerializer(serializers.Serializer):
    product = serializers.PrimaryKeyRelatedField(queryset=Product.objects.all())
    quantity = serializers.IntegerField(min_value=1, max_value=1000)

    def validate_product(self, product):
        if not product.active:
            raise serializers.ValidationError(f"Product {product.sku} is not for sale.")
        return product


class PlaceOrderSerializer(serializers.Serializer):
    store = serializers.PrimaryKeyRelatedField(queryset=Store.objects.filter(active=True))
    address = serializers.PrimaryKeyRelatedField(queryset=Address.objects.none())
    items = PlaceOrderItemSerializer(many=True, allow_empty=False, max_length=100)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Only the customer's own addresses exist for them (none without a request, e.g. schema generation).
        request = self.context.get("request")
        if request is not None and request.user.is_authenticated:
            self.fields["address"].queryset = Address.objects.filter(user=request.user)

    def validate_items(self, items):
        products = [item["product"].id for item in items]
        if len(products) != len(set(products)):
            raise serializers.ValidationError("Each product may appear only once; use quantity.")
        if len({item["product"].currency for item in items}) > 1:
            raise serializers.ValidationError("All products of an order must share one currency.")
        return items


class PaymentSerializer(serializers.ModelSerializer):
    class Meta:
        model = Payment
        fields = [
            "id",
            "order",
            "provider",
            "provider_event_id",
            "event_type",
            "amount",
            "currency",
            "status",
            "error",
            "created_at",
        ]
