from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from catalog.images import image_json
from catalog.models import Product, Store

from ..models import Address, Order, OrderItem, Payment

INCLUDES = ("products", "stores", "addresses")

# Reading orders is the hot path (lists of 200 with every include, and the enriched-order cache):
# the serializers below declare the fields (schema, writes) and hand their reads to these plain
# functions, which format exactly as the declared fields would (tests/orders/test_api.py
# compares them with DRF's own to_representation). They read the lists that
# selectors.orders_with_relations loads (``item_list``, ``image_list``).
_DATETIME = serializers.DateTimeField()
_MONEY = serializers.DecimalField(max_digits=12, decimal_places=2)


def _datetime(value):
    return None if value is None else _DATETIME.to_representation(value)


def _money(value):
    return None if value is None else _MONEY.to_representation(value)


def _prefetched(instance, to_attr: str, relation: str):
    """The list orders_with_relations loaded into ``to_attr``, else the relation's rows (a query
    per call: an order read some other way still serializes, only slower)."""
    if hasattr(instance, to_attr):
        return getattr(instance, to_attr)
    return getattr(instance, relation).all()


def address_json(address: Address) -> dict:
    return {
        "id": address.id,
        "label": address.label,
        "recipient": address.recipient,
        "line1": address.line1,
        "line2": address.line2,
        "city": address.city,
        "postal_code": address.postal_code,
        "country": address.country,
        "phone": address.phone,
        "created_at": _datetime(address.created_at),
        "updated_at": _datetime(address.updated_at),
    }


def included_product_json(product: Product) -> dict:
    return {
        "id": product.id,
        "sku": product.sku,
        "name": product.name,
        "description": product.description,
        "category": product.category,
        "price": _money(product.price),
        "currency": product.currency,
        "active": product.active,
        "images": [image_json(image) for image in _prefetched(product, "image_list", "images")],
    }


def included_store_json(store: Store) -> dict:
    return {"id": store.id, "code": store.code, "name": store.name, "city": store.city}


def order_item_json(item: OrderItem, includes: set[str]) -> dict:
    return {
        "id": item.id,
        "product": included_product_json(item.product) if "products" in includes else item.product_id,
        "product_name": item.product_name,
        "sku": item.sku,
        "unit_price": _money(item.unit_price),
        "quantity": item.quantity,
        "line_total": _money(item.line_total),
    }


def order_json(order: Order, includes: set[str]) -> dict:
    """An order as the API shows it; ``includes`` embeds products, store and address."""
    return {
        "id": order.id,
        "number": order.number,
        "user": order.user_id,
        "status": order.status,
        "store": included_store_json(order.store) if "stores" in includes else order.store_id,
        "address": address_json(order.address) if "addresses" in includes else order.address_id,
        "currency": order.currency,
        "subtotal": _money(order.subtotal),
        "total": _money(order.total),
        "payment_error": order.payment_error,
        "items": [order_item_json(item, includes) for item in _prefetched(order, "item_list", "items")],
        "created_at": _datetime(order.created_at),
        "paid_at": _datetime(order.paid_at),
        "confirmed_at": _datetime(order.confirmed_at),
        "shipped_at": _datetime(order.shipped_at),
        "delivered_at": _datetime(order.delivered_at),
        "cancelled_at": _datetime(order.cancelled_at),
        "updated_at": _datetime(order.updated_at),
    }


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

    def to_representation(self, address):
        return address_json(address)


class IncludedProductSerializer(serializers.ModelSerializer):
    images = serializers.SerializerMethodField()

    class Meta:
        model = Product
        fields = ["id", "sku", "name", "description", "category", "price", "currency", "active", "images"]

    # The same objects as a product's `images` (GET /products/{id}/): id, status, variants with URLs, ...
    @extend_schema_field({"type": "array", "items": {"type": "object", "additionalProperties": True}})
    def get_images(self, product) -> list[dict]:
        return [image_json(image) for image in _prefetched(product, "image_list", "images")]

    def to_representation(self, product):
        return included_product_json(product)


class IncludedStoreSerializer(serializers.ModelSerializer):
    class Meta:
        model = Store
        fields = ["id", "code", "name", "city"]

    def to_representation(self, store):
        return included_store_json(store)


def _includes(serializer) -> set[str]:
    return serializer.context.get("includes", set())


class OrderItemSerializer(serializers.ModelSerializer):
    class Meta:
        model = OrderItem
        fields = ["id", "product", "product_name", "sku", "unit_price", "quantity", "line_total"]

    def to_representation(self, item):
        return order_item_json(item, _includes(self))


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
        return order_json(order, _includes(self))


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
