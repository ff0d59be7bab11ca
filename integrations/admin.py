from django.contrib import admin, messages

from orders.models import Order

from .models import InventorySyncState, OdooOrderLink
from .odoo import services


class OdooOrderLinkInline(admin.StackedInline):
    """The order page's "Odoo" box: sync status, the sale.order id, the last error."""

    model = OdooOrderLink
    verbose_name = verbose_name_plural = "Odoo sync"
    extra = 0
    can_delete = False
    fields = ("status", "odoo_id", "attempts", "error", "synced_at", "updated_at")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


def _attach_order_inline() -> None:
    # The orders app does not know about Odoo; we add our box to its admin page.
    order_admin = admin.site._registry.get(Order)
    if order_admin is not None and OdooOrderLinkInline not in order_admin.inlines:
        order_admin.inlines = (*order_admin.inlines, OdooOrderLinkInline)


_attach_order_inline()


@admin.register(OdooOrderLink)
class OdooOrderLinkAdmin(admin.ModelAdmin):
    list_display = ("order", "status", "odoo_id", "attempts", "error", "synced_at", "updated_at")
    list_filter = ("status",)
    search_fields = ("order__number",)
    list_select_related = ("order",)
    readonly_fields = [f.name for f in OdooOrderLink._meta.fields]
    actions = ("sync_again",)

    def has_add_permission(self, request):
        return False

    @admin.action(description="Sync selected orders to Odoo again")
    def sync_again(self, request, queryset):
        count = services.order_sync_requeue(order_ids=list(queryset.values_list("order_id", flat=True)))
        self.message_user(request, f"Queued {count} order(s) for Odoo sync.", messages.SUCCESS)


@admin.register(InventorySyncState)
class InventorySyncStateAdmin(admin.ModelAdmin):
    list_display = (
        "product",
        "store",
        "status",
        "dirty",
        "synced_quantity",
        "version",
        "synced_version",
        "attempts",
        "error",
        "synced_at",
    )
    list_filter = ("status", "dirty", "store")
    search_fields = ("product__sku", "product__name", "store__code")
    list_select_related = ("product", "store")
    readonly_fields = [f.name for f in InventorySyncState._meta.fields]
    actions = ("resend",)

    def has_add_permission(self, request):
        return False

    @admin.action(description="Re-send the current quantity to Odoo")
    def resend(self, request, queryset):
        pairs = list(queryset.values_list("product_id", "store_id"))
        services.inventory_mark_dirty(pairs=pairs)
        services.inventory_push_schedule()
        self.message_user(request, f"Queued {len(pairs)} pair(s) for an Odoo push.", messages.SUCCESS)
