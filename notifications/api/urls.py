from django.urls import re_path

from celeste.api.routers import Router

from ..live import notification_stream
from .views import NotificationViewSet, PushSubscriptionViewSet, UnsubscribeView

router = Router()
router.register("notifications", NotificationViewSet, basename="notification")
router.register("push/subscriptions", PushSubscriptionViewSet, basename="push-subscription")
urlpatterns = [
    # Before the router: "stream" would otherwise read as a notification id.
    re_path(r"^notifications/stream/?$", notification_stream, name="notifications-stream"),
    re_path(r"^notifications/unsubscribe/?$", UnsubscribeView.as_view(), name="notifications-unsubscribe"),
    *router.urls,
]
