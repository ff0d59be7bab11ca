from django.urls import path

from celeste.api.routers import Router

from .views import NotificationViewSet, PushSubscriptionViewSet, UnsubscribeView

router = Router()
router.register("notifications", NotificationViewSet, basename="notification")
router.register("push/subscriptions", PushSubscriptionViewSet, basename="push-subscription")
urlpatterns = [
    path("notifications/unsubscribe", UnsubscribeView.as_view(), name="notifications-unsubscribe"),
    path("notifications/unsubscribe/", UnsubscribeView.as_view()),
    *router.urls,
]
