from django.conf import settings
from django.db import models


class ReportKind(models.TextChoices):
    SALES = "sales", "Sales by store and day"
    TOP_PRODUCTS = "top_products", "Top products by revenue and units"
    LOW_STOCK = "low_stock", "Stock-outs and low stock per store"
    NOTIFICATIONS = "notifications", "Notification delivery by channel and day"
    ODOO_SYNC = "odoo_sync", "Odoo sync status"


class ReportFormat(models.TextChoices):
    CSV = "csv", "CSV"
    XLSX = "xlsx", "Excel (xlsx)"


class ReportStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    READY = "ready", "Ready"
    FAILED = "failed", "Failed"


class ReportSchedule(models.Model):
    """A recurring report: beat runs it on its crontab (the django-celery-beat row
    ``periodic_task``, kept in step by services.schedule_save); every run is a
    Report of its own covering the ``period_days`` days before the run."""

    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=30, choices=ReportKind.choices)
    format = models.CharField(max_length=10, choices=ReportFormat.choices, default=ReportFormat.CSV)
    period_days = models.PositiveIntegerField(default=7, help_text="Days covered, ending the day before the run.")
    stores = models.ManyToManyField("catalog.Store", blank=True, related_name="+", help_text="None: every store.")
    category = models.CharField(max_length=100, blank=True)
    recipients = models.ManyToManyField(
        settings.AUTH_USER_MODEL, related_name="report_schedules", limit_choices_to={"is_staff": True}
    )
    crontab = models.ForeignKey("django_celery_beat.CrontabSchedule", on_delete=models.PROTECT, related_name="+")
    enabled = models.BooleanField(default=True)
    periodic_task = models.OneToOneField(
        "django_celery_beat.PeriodicTask", on_delete=models.SET_NULL, null=True, blank=True, editable=False
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+", editable=False
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self):
        return self.name


class Report(models.Model):
    """One generated (or to be generated) report file."""

    kind = models.CharField(max_length=30, choices=ReportKind.choices)
    format = models.CharField(max_length=10, choices=ReportFormat.choices)
    filters = models.JSONField(default=dict, blank=True, help_text="Validated filters (kinds.filters_clean).")
    status = models.CharField(max_length=20, choices=ReportStatus.choices, default=ReportStatus.PENDING)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="reports"
    )
    schedule = models.ForeignKey(ReportSchedule, on_delete=models.SET_NULL, null=True, blank=True, related_name="runs")
    # The beat tick a scheduled run belongs to (to the minute): a repeated tick makes no second report.
    scheduled_for = models.DateTimeField(null=True, blank=True)
    rows_written = models.PositiveBigIntegerField(default=0)
    rows_estimated = models.PositiveBigIntegerField(null=True, blank=True, help_text="The planner's estimate.")
    file_name = models.CharField(max_length=300, blank=True, help_text="Name in the default storage, once ready.")
    file_size = models.PositiveBigIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    notified_at = models.DateTimeField(null=True, blank=True, help_text="When the ready emails were queued.")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["schedule", "scheduled_for"], name="report_once_per_schedule_tick"),
        ]

    def __str__(self):
        return f"{self.get_kind_display()} #{self.id} ({self.status})"

    @property
    def download_filename(self) -> str:
        return f"{self.kind}-{self.id}.{self.format}"
