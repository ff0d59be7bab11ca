from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse

from celeste.admin import Item, ReadOnlyAdminMixin, action_hidden, confirmation_page, confirmed

from . import services
from .errors import OrderConflict
from .models import TRANSITIONS, Address, Order, OrderItem, OrderStatus, Payment

# Each transition: its service's name, its button's label, and the status it leads to.
TRANSITION_BUTTONS = [
    ("mark_paid", "Mark paid", OrderStatus.PAID),
    ("confirm", "Confirm", OrderStatus.CONFIRMED),
    ("ship", "Ship", OrderStatus.SHIPPED),
    ("deliver", "Deliver", OrderStatus.DELIVERED),
    ("cancel", "Cancel", OrderStatus.CANCELLED),
]
# Transitions that ask first (the stock goes back, the customer is told; no way back).
CONFIRM_FIRST = {"cancel"}


class OrderItemInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = OrderItem
    extra = 0
    readonly_fields = ("product", "product_name", "sku", "unit_price", "quantity", "line_total")


class PaymentInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = Payment
    extra = 0
    fields = ("provider_event_id", "event_type", "amount", "currency", "status", "error", "created_at")
    readonly_fields = fields


def _transition_run(modeladmin, request, name: str, label: str, order_ids) -> None:
    """Run one transition's service on each order, saying what was done and what refused."""
    done, refused = 0, []
    for order_id in order_ids:
        try:
            services.TRANSITION_SERVICES[name](order_id=order_id)
            done += 1
        except OrderConflict as exc:
            refused.append(str(exc))
    if done:
        modeladmin.message_user(request, f"{label}: {done} order(s).", messages.SUCCESS)
    for reason in refused:
        modeladmin.message_user(request, reason, messages.ERROR)


def _transition_confirmation(modeladmin, request, label: str, orders, **page):
    """The page a transition that cannot be undone shows first, listing the orders."""
    return confirmation_page(
        modeladmin,
        request,
        title=f"{label} {len(orders)} order(s)?",
        intro=[f"{label} cannot be undone; an order whose status does not allow it is left alone."],
        items=[
            Item(
                label=f"{order.number} ({order.status}, {order.total} {order.currency})",
                url=reverse("admin:orders_order_change", args=[order.id]),
            )
            for order in orders
        ],
        confirm_label=f"Yes, {label.lower()} {len(orders)} order(s)",
        **page,
    )


def _transition_action(name: str, label: str):
    def run(modeladmin, request, queryset):
        if name in CONFIRM_FIRST and not confirmed(request):
            orders = list(queryset.order_by("id"))
            return _transition_confirmation(modeladmin, request, label, orders, hidden=action_hidden(request, queryset))
        _transition_run(modeladmin, request, name, label, queryset.values_list("id", flat=True))
        return None

    run.__name__ = f"transition_{name}"
    run.short_description = f"{label} selected orders"
    return run


@admin.register(Order)
class OrderAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("number", "user", "store", "status", "total", "currency", "payment_error", "created_at")
    list_filter = ("status", "store", "created_at")
    search_fields = ("number", "user__username", "user__email")
    date_hierarchy = "created_at"
    list_select_related = ("user", "store")
    inlines = (OrderItemInline, PaymentInline)
    # Nothing is edited as a form (no Save button); status, money and stock change only
    # through the transitions (services), as list actions and as the page's buttons.
    # Not deleted either: that would bypass the services (stock would not come back).
    actions = [_transition_action(name, label) for name, label, _ in TRANSITION_BUTTONS]
    change_form_template = "admin/orders/order/change_form.html"
    transition_permission = "orders.change_order"

    def get_actions(self, request):
        # The mixin denies "change" to the form; the transitions need the permission itself.
        if not request.user.has_perm(self.transition_permission):
            return {}
        return super().get_actions(request)

    def get_urls(self):
        transition = self.admin_site.admin_view(self.transition_view)
        return [
            path("<int:object_id>/transition/<str:name>/", transition, name="orders_order_transition"),
            *super().get_urls(),
        ]

    def transition_view(self, request, object_id, name):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not request.user.has_perm(self.transition_permission):
            raise PermissionDenied
        labels = {key: label for key, label, _ in TRANSITION_BUTTONS}
        order = get_object_or_404(Order, id=object_id)
        page = reverse("admin:orders_order_change", args=[order.id])
        if name not in labels:
            self.message_user(request, f"Unknown transition {name!r}; nothing changed.", messages.ERROR)
            return HttpResponseRedirect(page)
        if name in CONFIRM_FIRST and not confirmed(request):
            return _transition_confirmation(self, request, labels[name], [order], cancel_url=page)
        _transition_run(self, request, name, labels[name], [order.id])
        return HttpResponseRedirect(page)

    def render_change_form(self, request, context, *args, obj=None, **kwargs):
        if obj is not None and request.user.has_perm(self.transition_permission):
            context["transitions"] = [
                (label, reverse("admin:orders_order_transition", args=[obj.id, name]), name)
                for name, label, to in TRANSITION_BUTTONS
                if to in TRANSITIONS[obj.status]
            ]
        return super().render_change_form(request, context, *args, obj=obj, **kwargs)


@admin.register(Address)
class AddressAdmin(admin.ModelAdmin):
    list_display = ("recipient", "user", "line1", "city", "country", "updated_at")
    search_fields = ("recipient", "user__username", "city", "postal_code")
    list_filter = ("country",)
    raw_id_fields = ("user",)

    def get_readonly_fields(self, request, obj=None):
        return ("user",) if obj else ()

    def save_model(self, request, obj, form, change):
        fields = {f: form.cleaned_data[f] for f in services.ADDRESS_FIELDS if f in form.cleaned_data}
        if change:
            services.address_update(address=obj, **fields)
        else:
            obj.pk = services.address_create(user=form.cleaned_data["user"], **fields).pk


@admin.register(Payment)
class PaymentAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Read-only: payments are what the provider told us."""

    list_display = ("provider_event_id", "order", "event_type", "amount", "currency", "status", "error", "created_at")
    list_filter = ("status", "event_type", "provider")
    search_fields = ("provider_event_id", "order__number")
