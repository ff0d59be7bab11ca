from django.contrib import admin, messages

from . import services
from .errors import OrderConflict
from .models import Address, Order, OrderItem, Payment


class OrderItemInline(admin.TabularInline):
    model = OrderItem
    extra = 0
    can_delete = False
    readonly_fields = ("product", "product_name", "sku", "unit_price", "quantity", "line_total")

    def has_add_permission(self, request, obj=None):
        return False


class PaymentInline(admin.TabularInline):
    model = Payment
    extra = 0
    can_delete = False
    fields = ("provider_event_id", "event_type", "amount", "currency", "status", "error", "created_at")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


def _transition_action(name: str, label: str):
    def run(modeladmin, request, queryset):
        done, refused = 0, []
        for order_id in queryset.values_list("id", flat=True):
            try:
                services.TRANSITION_SERVICES[name](order_id=order_id)
                done += 1
            except OrderConflict as exc:
                refused.append(str(exc))
        if done:
            modeladmin.message_user(request, f"{label}: {done} order(s).", messages.SUCCESS)
        for reason in refused:
            modeladmin.message_user(request, reason, messages.ERROR)

    run.__name__ = f"transition_{name}"
    run.short_description = f"{label} selected orders"
    return run


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = ("number", "user", "store", "status", "total", "currency", "payment_error", "created_at")
    list_filter = ("status", "store", "created_at")
    search_fields = ("number", "user__username", "user__email")
    date_hierarchy = "created_at"
    list_select_related = ("user", "store")
    inlines = (OrderItemInline, PaymentInline)
    # Status, money and stock change only through the transition actions (services).
    readonly_fields = [f.name for f in Order._meta.fields]
    actions = [
        _transition_action("mark_paid", "Mark paid"),
        _transition_action("confirm", "Confirm"),
        _transition_action("ship", "Ship"),
        _transition_action("deliver", "Deliver"),
        _transition_action("cancel", "Cancel"),
    ]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # deleting would bypass the services (stock would not come back): cancel instead


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
class PaymentAdmin(admin.ModelAdmin):
    """Read-only: payments are what the provider told us."""

    list_display = ("provider_event_id", "order", "event_type", "amount", "currency", "status", "error", "created_at")
    list_filter = ("status", "event_type", "provider")
    search_fields = ("provider_event_id", "order__number")
    readonly_fields = [f.name for f in Payment._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
