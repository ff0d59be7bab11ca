from django.urls import re_path

from celeste.api.routers import Router

from .views import AddressViewSet, OrderViewSet, PaymentWebhookView

router = Router()
router.register("addresses", AddressViewSet, basename="address")
router.register("orders", OrderViewSet, basename="order")
urlpatterns = [
    re_path(r"^payments/webhook/?$", PaymentWebhookView.as_view(), name="payment-webhook"),
    *router.urls,
]
