"""The admin's Reports page: the list (status, progress, download) and a request
form; recurring reports with their crontab. Both go through the services."""

from django import forms
from django.contrib import admin
from django.contrib.admin.widgets import AdminDateWidget
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from catalog.models import Store

from . import kinds, links, services
from .models import Report, ReportFormat, ReportKind, ReportSchedule, ReportStatus


def add_invalid(form: forms.Form, exc: kinds.ReportInvalid, *, rename: dict | None = None) -> None:
    """Show each bad field's message on the form's field (or above the form)."""
    for field, message in exc.errors.items():
        field = (rename or {}).get(field, field)
        form.add_error(
            field if field in form.fields else None, f"{field}: {message}" if field not in form.fields else message
        )


class ReportRequestForm(forms.Form):
    kind = forms.ChoiceField(choices=ReportKind.choices)
    format = forms.ChoiceField(choices=ReportFormat.choices)
    date_from = forms.DateField(required=False, widget=AdminDateWidget, help_text="Sales, top products, notifications.")
    date_to = forms.DateField(required=False, widget=AdminDateWidget, help_text="Included; at most 3 years on.")
    stores = forms.ModelMultipleChoiceField(Store.objects.all(), required=False, help_text="None: every store.")
    category = forms.CharField(required=False, max_length=100)
    limit = forms.IntegerField(required=False, help_text="Top products: rows (default 100).")
    threshold = forms.IntegerField(required=False, help_text="Low stock: at or below (default 5).")


@admin.register(Report)
class ReportAdmin(admin.ModelAdmin):
    list_display = ("id", "kind", "format", "status", "progress", "requested_by", "schedule", "created_at", "download")
    list_filter = ("status", "kind", "format")
    search_fields = ("id", "requested_by__username", "requested_by__email")
    readonly_fields = [f.name for f in Report._meta.fields] + ["download"]

    def add_view(self, request, form_url="", extra_context=None):
        """The request form: the service checks it and queues the generation."""
        form = ReportRequestForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = dict(form.cleaned_data)
            data["stores"] = [store.id for store in data["stores"]]
            try:
                report = services.report_request(
                    user=request.user, kind=data.pop("kind"), format=data.pop("format"), filters=data
                )
            except kinds.ReportInvalid as exc:
                add_invalid(form, exc)
            else:
                self.message_user(request, f"Report #{report.id} is queued; this list shows its progress.")
                return redirect("admin:reports_report_changelist")
        context = {
            **self.admin_site.each_context(request),
            "title": "Request a report",
            "form": form,
            "opts": self.model._meta,
            "media": self.media + form.media,
        }
        return TemplateResponse(request, "admin/reports/report/request.html", context)

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="progress")
    def progress(self, report):
        if report.status == ReportStatus.READY:
            return f"{report.rows_written} rows"
        if report.rows_estimated:
            return f"{report.rows_written} / ~{report.rows_estimated}"
        return f"{report.rows_written}" if report.rows_written else "—"

    @admin.display(description="download")
    def download(self, report):
        if report.status == ReportStatus.FAILED:
            return report.error[:120]
        if report.status != ReportStatus.READY:
            return "—"
        url = reverse("admin:reports_report_download", args=[report.id])
        return format_html('<a href="{}">{}</a>', url, report.download_filename)

    def get_urls(self):
        download = self.admin_site.admin_view(self.download_view)
        return [path("<int:report_id>/download/", download, name="reports_report_download"), *super().get_urls()]

    def download_view(self, request, report_id):
        """To a link signed for the staff member clicking (the download view checks it)."""
        return redirect(links.download_url(report_id=report_id, user_id=request.user.id))

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("requested_by", "schedule")


class ReportScheduleForm(forms.ModelForm):
    class Meta:
        model = ReportSchedule
        fields = ["name", "kind", "format", "period_days", "stores", "category", "recipients", "crontab", "enabled"]

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        filters = services.schedule_filters(
            kind=cleaned["kind"],
            period_days=cleaned["period_days"],
            store_ids=[store.id for store in cleaned.get("stores") or []],
            category=cleaned.get("category", ""),
            today=timezone.localdate(),
        )
        try:
            kinds.request_clean(kind=cleaned["kind"], format=cleaned["format"], filters=filters)
        except kinds.ReportInvalid as exc:
            add_invalid(self, exc, rename={"date_to": "period_days", "date_from": "period_days"})
        return cleaned


@admin.register(ReportSchedule)
class ReportScheduleAdmin(admin.ModelAdmin):
    form = ReportScheduleForm
    list_display = ("name", "kind", "format", "period_days", "crontab", "enabled", "last_run")
    list_filter = ("kind", "enabled")
    filter_horizontal = ("stores", "recipients")

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        services.schedule_save(schedule=form.instance)

    def delete_model(self, request, obj):
        services.schedule_delete(schedule=obj)

    def delete_queryset(self, request, queryset):
        for schedule in queryset:
            services.schedule_delete(schedule=schedule)

    @admin.display(description="last run")
    def last_run(self, schedule):
        report = schedule.runs.order_by("-created_at").first()
        if report is None:
            return "—"
        url = reverse("admin:reports_report_change", args=[report.id])
        return format_html('<a href="{}">#{} {}</a>', url, report.id, report.status)
