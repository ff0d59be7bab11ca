from rest_framework import serializers

from .. import links
from ..models import Report, ReportFormat, ReportKind, ReportStatus


class ReportRequestSerializer(serializers.Serializer):
    """A report request. Which filters a kind takes, and the date range's limits, are
    checked by the service (kinds.request_clean), which names the field at fault."""

    kind = serializers.ChoiceField(choices=ReportKind.choices)
    format = serializers.ChoiceField(choices=ReportFormat.choices, default=ReportFormat.CSV)
    date_from = serializers.DateField(required=False, help_text="First day (sales, top_products, notifications).")
    date_to = serializers.DateField(required=False, help_text="Last day, included; at most 3 years after date_from.")
    stores = serializers.ListField(child=serializers.IntegerField(), required=False, help_text="Store ids.")
    category = serializers.CharField(required=False, max_length=100, help_text="Sales, top products, low stock.")
    limit = serializers.IntegerField(required=False, help_text="top_products: rows (default 100).")
    threshold = serializers.IntegerField(required=False, help_text="low_stock: at or below (default 5).")


class ReportSerializer(serializers.ModelSerializer):
    progress = serializers.SerializerMethodField(help_text="rows_written / rows_estimated, at most 1; null unknown.")
    download_url = serializers.SerializerMethodField(help_text="When ready: a link signed for you, expiring.")

    class Meta:
        model = Report
        fields = [
            "id",
            "kind",
            "format",
            "filters",
            "status",
            "rows_written",
            "rows_estimated",
            "progress",
            "error",
            "file_size",
            "download_url",
            "schedule",
            "created_at",
            "started_at",
            "finished_at",
        ]

    def get_progress(self, report) -> float | None:
        if report.status == ReportStatus.READY:
            return 1.0
        if not report.rows_estimated:
            return None
        return min(1.0, report.rows_written / report.rows_estimated)

    def get_download_url(self, report) -> str | None:
        if report.status != ReportStatus.READY:
            return None
        return links.download_url(report_id=report.id, user_id=self.context["request"].user.id)
