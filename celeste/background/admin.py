from django.contrib import admin, messages

from .models import FailedTask, OutboxMessage, TaskSwitch, WorkerHeartbeat
from .services import failed_task_discard, failed_task_retry


@admin.register(TaskSwitch)
class TaskSwitchAdmin(admin.ModelAdmin):
    list_display = ("task_name", "mode", "skipped_count", "note", "updated_at")
    list_editable = ("mode",)
    list_filter = ("mode",)
    search_fields = ("task_name",)
    readonly_fields = ("skipped_count", "created_at", "updated_at")


@admin.register(OutboxMessage)
class OutboxMessageAdmin(admin.ModelAdmin):
    """The job ledger: every job not finished yet. Read-only: the relay and the
    workers own the rows."""

    list_display = (
        "task_name",
        "state",
        "worker_id",
        "runs",
        "published_count",
        "created_at",
        "publish_attempts",
        "last_error",
    )
    list_filter = ("task_name", ("published_at", admin.EmptyFieldListFilter), ("worker_id", admin.EmptyFieldListFilter))
    search_fields = ("id", "task_name", "worker_id", "request_id")
    readonly_fields = [f.name for f in OutboxMessage._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(admin.ModelAdmin):
    """Live workers beat here; one silent past WORKER_DEAD_AFTER_SECONDS is dead."""

    list_display = ("worker_id", "hostname", "pid", "started_at", "last_seen_at")
    readonly_fields = [f.name for f in WorkerHeartbeat._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(FailedTask)
class FailedTaskAdmin(admin.ModelAdmin):
    list_display = ("task_name", "status", "error_summary", "attempts", "permanent", "created_at")
    list_filter = ("status", "task_name", "permanent")
    search_fields = ("task_name", "error", "task_id")
    readonly_fields = [f.name for f in FailedTask._meta.fields]
    actions = ("retry", "discard")
    date_hierarchy = "created_at"

    def has_add_permission(self, request):
        return False

    @admin.display(description="error")
    def error_summary(self, obj):
        return obj.error[:120]

    @admin.action(description="Retry selected jobs (re-enqueue with their arguments)")
    def retry(self, request, queryset):
        count = failed_task_retry(failed_task_ids=list(queryset.values_list("id", flat=True)))
        skipped = queryset.count() - count
        self.message_user(request, f"Re-enqueued {count} job(s).", messages.SUCCESS)
        if skipped > 0:
            self.message_user(request, f"{skipped} job(s) were not open and were left alone.", messages.WARNING)

    @admin.action(description="Discard selected jobs")
    def discard(self, request, queryset):
        count = failed_task_discard(failed_task_ids=list(queryset.values_list("id", flat=True)))
        self.message_user(request, f"Discarded {count} job(s).", messages.SUCCESS)
