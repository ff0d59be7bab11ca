from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseNotAllowed
from django.template.response import TemplateResponse
from django.urls import path

from celeste.admin import ReadOnlyAdminMixin
from orders.models import Order

from .models import InventorySyncState, OdooOrderLink, SyncStatus
from .odoo import services
from .odoo.connection import connection_check, connection_settings


class OdooOrderLinkInline(ReadOnlyAdminMixin, admin.StackedInline):
    """The order page's "Odoo" box: sync status, the sale.order id, the last error."""

    model = OdooOrderLink
    verbose_name = verbose_name_plural = "Odoo sync"
    extra = 0
    can_delete = False
    fields = ("status", "odoo_id", "attempts", "error", "synced_at", "updated_at")
    readonly_fields = fields


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
    change_list_template = "admin/integrations/odooorderlink/change_list.html"

    def has_add_permission(self, request):
        return False

    def get_urls(self):
        view = self.admin_site.admin_view(self.connection_view)
        return [path("connection/", view, name="integrations_odoo_connection"), *super().get_urls()]

    def connection_view(self, request):
        """The Odoo settings (never the key) and, on POST, what a test of the connection found."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        if request.method not in ("GET", "POST"):
            return HttpResponseNotAllowed(["GET", "POST"])
        context = {
            **self.admin_site.each_context(request),
            "title": "Odoo connection",
            "opts": self.model._meta,
            "settings_rows": connection_settings(),
            "steps": connection_check() if request.method == "POST" else None,
        }
        return TemplateResponse(request, "admin/integrations/odoo_connection.html", context)

    @admin.action(description="Sync selected orders to Odoo again")
    def sync_again(self, request, queryset):
        count = services.order_sync_requeue(order_ids=list(queryset.values_list("order_id", flat=True)))
        self.message_user(request, f"Queued {count} order(s) for Odoo sync.", messages.SUCCESS)


@admin.register(InventorySyncState)
class InventorySyncStateAdmin(admin.ModelAdmin):
    list_display = (
        "product",
        "store",
        "sync_status",
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

    @admin.display(description="status", ordering="status")
    def sync_status(self, state):
        # A push that failed and will be retried leaves the pair pending with its error: that is a failure to staff.
        if state.status == SyncStatus.PENDING and state.error:
            return f"failed, retrying: {state.error[:200]}"
        if state.status == SyncStatus.FAILED:
            return f"failed: {state.error[:200]}"
        return state.get_status_display()

    @admin.action(description="Re-send the current quantity to Odoo")
    def resend(self, request, queryset):
        pairs = list(queryset.values_list("product_id", "store_id"))
        services.inventory_mark_dirty(pairs=pairs)
        services.inventory_push_schedule()
        self.message_user(request, f"Queued {len(pairs)} pair(s) for an Odoo push.", messages.SUCCESS)
