import json

from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, permissions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from celeste.api.permissions import IsStaff
from celeste.api.schema import ErrorDetailSerializer

from .. import services
from ..cache import count_lookup, enriched_order_forget, enriched_order_get
from ..models import Address, Order
from ..payments import (
    SIGNATURE_HEADER,
    EventError,
    SignatureError,
    payload_load,
    payment_event_process,
    signature_verify,
)
from ..selectors import order_cache_version, orders_with_relations
from .filters import OrderFilter
from .serializers import INCLUDES, AddressSerializer, OrderSerializer, PlaceOrderSerializer

INCLUDE_PARAMETER = OpenApiParameter(
    "include", str, description="Comma-separated: products, stores, addresses (embedded in place of ids)."
)


def parse_includes(request) -> set[str]:
    raw = request.query_params.get("include", "")
    wanted = {part.strip() for part in raw.split(",") if part.strip()}
    unknown = wanted - set(INCLUDES)
    if unknown:
        raise ValidationError({"include": f"Unknown include {sorted(unknown)}; allowed: {', '.join(INCLUDES)}."})
    return wanted


class AddressViewSet(viewsets.ModelViewSet):
    """The signed-in customer's own addresses."""

    serializer_class = AddressSerializer
    permission_classes = [permissions.IsAuthenticated]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation has no user
            return Address.objects.none()
        return Address.objects.filter(user=self.request.user)

    def perform_create(self, serializer):
        serializer.instance = services.address_create(user=self.request.user, **serializer.validated_data)

    def perform_update(self, serializer):
        serializer.instance = services.address_update(address=serializer.instance, **serializer.validated_data)


class OrderViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet):
    """Customers see and place their own orders (another's is a 404); staff see all
    and move orders through the status machine."""

    serializer_class = OrderSerializer
    permission_classes = [permissions.IsAuthenticated]
    filterset_class = OrderFilter
    ordering_fields = ["created_at", "total", "status"]
    search_fields = ["number"]

    def get_queryset(self):
        # A transition only finds the order (one the user may see) and answers with it reloaded
        # whole: loading its items, products and images first would be work thrown away.
        orders = (
            Order.objects.only("id", "user_id")
            if self.action in services.TRANSITION_SERVICES
            else orders_with_relations()
        )
        if getattr(self, "swagger_fake_view", False):
            return orders.none()
        return orders if self.request.user.is_staff else orders.filter(user=self.request.user)

    def get_serializer_context(self):
        context = super().get_serializer_context()
        if self.action in ("list", "retrieve"):
            context["includes"] = parse_includes(self.request)
        else:
            context["includes"] = set(INCLUDES)
        return context

    @extend_schema(parameters=[INCLUDE_PARAMETER])
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    @extend_schema(parameters=[INCLUDE_PARAMETER])
    def retrieve(self, request, *args, **kwargs):
        if parse_includes(request) == set(INCLUDES):
            cached = self._cached(kwargs["pk"])
            if cached is not None:
                if request.accepted_renderer.format == "json":
                    # Already the exact JSON: serve the bytes as they are.
                    return HttpResponse(cached, content_type="application/json")
                return Response(json.loads(cached))
        return super().retrieve(request, *args, **kwargs)

    def _cached(self, pk) -> bytes | None:
        """The pre-built enriched order's JSON, if it exists and is still current."""
        if not str(pk).isdigit():
            return None
        version = order_cache_version(int(pk))
        if version is None or (version[0] != self.request.user.id and not self.request.user.is_staff):
            raise NotFound()
        cached = enriched_order_get(int(pk))
        current = cached is not None and cached[0] == version[1]
        if cached is not None and not current:
            enriched_order_forget(int(pk))  # made before a change whose invalidation it escaped
        count_lookup(hit=current)
        return cached[1] if current else None

    @extend_schema(request=PlaceOrderSerializer, responses={201: OrderSerializer})
    def create(self, request, *args, **kwargs):
        placing = PlaceOrderSerializer(data=request.data, context={"request": request})
        placing.is_valid(raise_exception=True)
        data = placing.validated_data
        order = services.order_place(
            user=request.user,
            store=data["store"],
            address=data["address"],
            items=[(item["product"], item["quantity"]) for item in data["items"]],
            max_open_unpaid=settings.ORDER_MAX_OPEN_UNPAID,
        )
        order = orders_with_relations().get(id=order.id)
        return Response(self.get_serializer(order).data, status=status.HTTP_201_CREATED)

    def _transition(self, name: str):
        order = self.get_object()
        services.TRANSITION_SERVICES[name](order_id=order.id)
        return Response(self.get_serializer(orders_with_relations().get(id=order.id)).data)

    @extend_schema(request=None, responses=OrderSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        return self._transition("cancel")

    @extend_schema(request=None, responses=OrderSerializer)
    @action(detail=True, methods=["post"], url_path="mark-paid", permission_classes=[IsStaff])
    def mark_paid(self, request, pk=None):
        return self._transition("mark_paid")

    @extend_schema(request=None, responses=OrderSerializer)
    @action(detail=True, methods=["post"], permission_classes=[IsStaff])
    def confirm(self, request, pk=None):
        return self._transition("confirm")

    @extend_schema(request=None, responses=OrderSerializer)
    @action(detail=True, methods=["post"], permission_classes=[IsStaff])
    def ship(self, request, pk=None):
        return self._transition("ship")

    @extend_schema(request=None, responses=OrderSerializer)
    @action(detail=True, methods=["post"], permission_classes=[IsStaff])
    def deliver(self, request, pk=None):
        return self._transition("deliver")


class WebhookResultSerializer(serializers.Serializer):
    received = serializers.BooleanField()
    duplicate = serializers.BooleanField()
    outcome = serializers.CharField()
    detail = serializers.CharField(allow_blank=True)


class PaymentWebhookView(APIView):
    """The payment provider's signed event callback (see orders/payments.py).

    Not throttled: the provider retries an event until it gets a 2xx, from a few
    addresses, so a per-address or per-user limit would drop real payments. A forged
    request costs one HMAC and no database work before its 401."""

    authentication_classes = []
    permission_classes = [permissions.AllowAny]
    throttle_classes = []

    @extend_schema(
        request={"application/json": {"type": "object", "description": "The provider's event, signed as raw bytes."}},
        responses={200: WebhookResultSerializer, 400: ErrorDetailSerializer, 401: ErrorDetailSerializer},
        parameters=[
            OpenApiParameter(
                SIGNATURE_HEADER,
                str,
                OpenApiParameter.HEADER,
                description="t=<unix seconds>,v1=<hex HMAC-SHA256 of '{t}.{raw body}'>[,v1=…]",
            )
        ],
        description="Signed by the payment provider (see docs/api.md). A missing or wrong signature is a 401, "
        "a signed but malformed event a 400 naming the field; never throttled.",
    )
    def post(self, request):
        body = request.body  # the raw bytes, exactly as signed
        try:
            signature_verify(
                body=body,
                header=request.headers.get(SIGNATURE_HEADER, ""),
                secrets=settings.PAYMENT_WEBHOOK_SECRETS,
                tolerance=settings.PAYMENT_WEBHOOK_TOLERANCE_SECONDS,
            )
        except SignatureError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_401_UNAUTHORIZED)
        try:
            payment, created = payment_event_process(payload=payload_load(body))
        except EventError as exc:  # nothing stored: the transaction rolled back
            return Response({"detail": f"Malformed event: {exc}"}, status=status.HTTP_400_BAD_REQUEST)
        return Response(
            {"received": True, "duplicate": not created, "outcome": payment.status, "detail": payment.error}
        )
