from django.urls import path

from celeste.api.routers import Router

from .views import AddressViewSet, OrderViewSet, PaymentWebhookView

router = Router()
router.register("addresses", AddressViewSet, basename="address")
router.register("orders", OrderViewSet, basename="order")
urlpatterns = [
    path("payments/webhook", PaymentWebhookView.as_view(), name="payment-webhook"),
    path("payments/webhook/", PaymentWebhookView.as_view()),
    *router.urls,
]
