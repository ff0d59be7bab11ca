from django.urls import re_path

from celeste.api.routers import Router

from .views import NotificationViewSet, PushSubscriptionViewSet, UnsubscribeView

router = Router()
router.register("notifications", NotificationViewSet, basename="notification")
router.register("push/subscriptions", PushSubscriptionViewSet, basename="push-subscription")
urlpatterns = [
    re_path(r"^notifications/unsubscribe/?$", UnsubscribeView.as_view(), name="notifications-unsubscribe"),
    *router.urls,
]
