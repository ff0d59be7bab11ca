"""The staff's admin site (Celeste's header, "View site" → the API docs, the failed-job
count on the home page) and what every app's admin shares."""

from dataclasses import dataclass

from django.contrib import admin
from django.contrib.admin.apps import AdminConfig
from django.template.response import TemplateResponse
from django.urls import reverse


class ReadOnlyAdminMixin:
    """For rows the system owns (the ledger, payments, deliveries): staff see them,
    nobody adds, edits or deletes them here, and the page has no Save button.
    Works for ModelAdmin and inlines alike (inlines pass ``obj`` to add)."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@dataclass
class Item:
    """One row a confirmation page lists (what the action will touch)."""

    label: str
    url: str = ""
    note: str = ""


def confirmed(request) -> bool:
    return request.method == "POST" and request.POST.get("confirmed") == "yes"


def confirmation_page(
    modeladmin,
    request,
    *,
    title: str,
    confirm_label: str,
    intro=(),
    items=(),
    warnings=(),
    hidden=(),
    form_url: str = "",
    cancel_url: str = "",
    can_confirm: bool = True,
):
    """The page every harmful admin action shows first. It posts ``hidden`` back
    with ``confirmed=yes`` to ``form_url`` (for an action: the changelist, with the
    action's name and the selected ids, which Django's action form reads again)."""
    opts = modeladmin.model._meta
    changelist = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": title,
        "opts": opts,
        "intro": intro,
        "items": items,
        "warnings": warnings,
        "hidden": hidden,
        "form_url": form_url or request.get_full_path(),
        "cancel_url": cancel_url or changelist,
        "confirm_label": confirm_label,
        "can_confirm": can_confirm,
    }
    return TemplateResponse(request, "admin/celeste_confirm.html", context)


def action_hidden(request, queryset) -> list[tuple[str, str]]:
    """What an action's confirmation posts back so Django runs the action again."""
    ids = [str(pk) for pk in queryset.values_list("pk", flat=True)]
    return [("action", request.POST["action"]), *(("_selected_action", pk) for pk in ids)]


class CelesteAdminSite(admin.AdminSite):
    site_header = "Celeste administration"
    site_title = "Celeste admin"
    index_title = "Celeste"
    index_template = "admin/celeste_index.html"

    @property
    def site_url(self):
        # Somewhere real: the API's own help (Swagger UI), not the bare host.
        return reverse("swagger-ui")

    def index(self, request, extra_context=None):
        from celeste.background.selectors import inbox_open_total

        context = {"failed_open": inbox_open_total()}
        if "background.view_failedtask" in request.user.get_all_permissions() or request.user.is_superuser:
            context["failed_url"] = reverse("admin:background_failuregroup_changelist") + "?status=open"
        return super().index(request, {**context, **(extra_context or {})})


class CelesteAdminConfig(AdminConfig):
    default_site = "celeste.admin.CelesteAdminSite"
