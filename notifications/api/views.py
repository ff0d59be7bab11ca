from django.conf import settings
from django.shortcuts import render
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import mixins, permissions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from celeste.api.params import boolean_param
from celeste.api.permissions import IsStaff

from .. import services, stream
from ..channels import InvalidPushSubscription
from ..models import Channel, Notification, PushSubscription
from ..unsubscribe import InvalidUnsubscribeToken, unsubscribe_token_user
from .serializers import (
    DeliveryRatesSerializer,
    NotificationSerializer,
    PreferenceSerializer,
    PushSubscriptionSerializer,
)


class NotificationViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """The signed-in user's notification center (another user's notification is a 404)."""

    serializer_class = NotificationSerializer
    permission_classes = [permissions.IsAuthenticated]
    filter_backends = []

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # schema generation has no user
            return Notification.objects.none()
        notifications = services.in_app_notifications(self.request.user)
        unread = boolean_param(self.request, "unread")
        if unread is not None:
            notifications = notifications.filter(read_at__isnull=unread)
        return notifications

    @extend_schema(parameters=[OpenApiParameter("unread", bool)])
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    @extend_schema(responses=inline_serializer("UnreadCount", {"unread": serializers.IntegerField()}))
    @action(detail=False, methods=["get"], url_path="unread-count")
    def unread_count(self, request):
        return Response({"unread": services.in_app_notifications(request.user).filter(read_at__isnull=True).count()})

    @extend_schema(request=None)
    @action(detail=True, methods=["post"])
    def read(self, request, pk=None):
        notification = services.notification_mark_read(notification=self.get_object())
        return Response(self.get_serializer(notification).data)

    @extend_schema(request=None, responses=inline_serializer("MarkedRead", {"marked": serializers.IntegerField()}))
    @action(detail=False, methods=["post"], url_path="read-all")
    def read_all(self, request):
        return Response({"marked": services.notifications_mark_all_read(user=request.user)})

    @extend_schema(request=PreferenceSerializer(many=True), responses=PreferenceSerializer(many=True))
    @action(detail=False, methods=["get", "put"], pagination_class=None)  # always the three channels, unpaginated
    def preferences(self, request):
        """Every channel with on/off (default on). PUT a list to change some."""
        if request.method == "PUT":
            changes = PreferenceSerializer(data=request.data, many=True)
            changes.is_valid(raise_exception=True)
            for change in changes.validated_data:
                services.preference_set(user_id=request.user.id, **change)
        return Response(
            [
                {"channel": channel, "enabled": services.channel_enabled(user_id=request.user.id, channel=channel)}
                for channel in Channel.values
            ]
        )

    @extend_schema(
        request=None,
        responses=inline_serializer(
            "StreamTicket", {"ticket": serializers.CharField(), "expires_in": serializers.IntegerField()}
        ),
    )
    @action(detail=False, methods=["post"], url_path="stream-ticket", pagination_class=None)
    def stream_ticket(self, request):
        """A ticket for ``GET /api/v1/notifications/stream?ticket=…`` (browsers' EventSource
        cannot send the token header): valid for ``expires_in`` seconds, once."""
        return Response(
            {
                "ticket": stream.stream_ticket_issue(user_id=request.user.id),
                "expires_in": settings.STREAM_TICKET_TTL_SECONDS,
            }
        )

    @extend_schema(
        parameters=[OpenApiParameter("hours", int, description="Window, 1–168 (default 1).")],
        responses=DeliveryRatesSerializer,
    )
    @action(
        detail=False, methods=["get"], url_path="delivery-rates", permission_classes=[IsStaff], pagination_class=None
    )
    def delivery_rates(self, request):
        """Staff: sent / attempted per channel over the last ``hours``."""
        window = serializers.IntegerField(min_value=1, max_value=168, default=1)
        try:
            hours = window.run_validation(request.query_params.get("hours", 1))
        except serializers.ValidationError as exc:
            raise serializers.ValidationError({"hours": exc.detail}) from None
        return Response(services.delivery_rates(hours=hours))


class PushSubscriptionViewSet(
    mixins.CreateModelMixin, mixins.ListModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet
):
    """Web Push subscriptions of the signed-in user. Unsubscribe = DELETE."""

    serializer_class = PushSubscriptionSerializer
    permission_classes = [permissions.IsAuthenticated]
    filter_backends = []

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return PushSubscription.objects.none()
        return PushSubscription.objects.filter(user=self.request.user, active=True)

    def perform_create(self, serializer):
        keys = serializer.validated_data["keys"]
        try:
            serializer.instance = services.push_subscription_save(
                user=self.request.user, endpoint=serializer.validated_data["endpoint"], **keys
            )
        except InvalidPushSubscription as exc:
            error = {exc.field: [str(exc)]}
            raise serializers.ValidationError(error if exc.field == "endpoint" else {"keys": error}) from None

    def perform_destroy(self, subscription):
        services.push_subscription_deactivate(subscription_id=subscription.id, reason="Unsubscribed by the user.")

    @extend_schema(responses=inline_serializer("VapidKey", {"public_key": serializers.CharField()}))
    @action(detail=False, methods=["get"], url_path="vapid-public-key", permission_classes=[permissions.AllowAny])
    def vapid_public_key(self, request):
        """The applicationServerKey a browser needs to subscribe."""
        if not settings.VAPID_PUBLIC_KEY:
            return Response({"detail": "Web Push is not configured."}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
        return Response({"public_key": settings.VAPID_PUBLIC_KEY})


@method_decorator(csrf_exempt, name="dispatch")
class UnsubscribeView(View):
    """The link in every email (and its List-Unsubscribe header), for people and
    mail clients, without login: the token is the authority.

    GET shows a confirmation form and changes nothing (link scanners and
    prefetchers follow links); POST unsubscribes, whether from that form or a mail
    client's RFC 8058 one-click POST of ``List-Unsubscribe=One-Click``. That POST
    carries no cookie or CSRF token, hence csrf_exempt. No page shows the address."""

    template_name = "notifications/unsubscribe.html"

    def get(self, request):
        try:
            unsubscribe_token_user(token=request.GET.get("token", ""))
        except InvalidUnsubscribeToken:
            return self._page(request, "invalid", status=400)
        return self._page(request, "confirm")

    def post(self, request):
        try:
            services.email_unsubscribe(token=request.GET.get("token", ""))
        except InvalidUnsubscribeToken:
            return self._page(request, "invalid", status=400)
        return self._page(request, "done")

    def _page(self, request, state: str, *, status: int = 200):
        response = render(request, self.template_name, {"state": state}, status=status)
        # The URL holds the token: keep it out of caches and of Referer headers.
        response["Cache-Control"] = "no-store"
        response["Referrer-Policy"] = "no-referrer"
        return response
