from urllib.parse import urlencode

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import OuterRef, Subquery
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django_celery_beat.admin import PeriodicTaskAdmin as BeatPeriodicTaskAdmin
from django_celery_beat.models import PeriodicTask
from django_celery_results.models import TaskResult

from . import selectors
from .charts import line_chart
from .models import (
    FailedTask,
    OutboxMessage,
    QueueLimit,
    TaskMode,
    TaskSample,
    TaskSwitch,
    TaskSwitchChange,
    WorkerHeartbeat,
)
from .services import failed_task_discard, failed_task_retry, task_switch_set
from .tasks import relay_outbox


class TaskSwitchChangeInline(admin.TabularInline):
    model = TaskSwitchChange
    fields = ("changed_at", "changed_by", "from_mode", "to_mode", "reason", "figures")
    readonly_fields = fields
    extra = 0
    can_delete = False
    verbose_name_plural = "History (who changed the mode, when, why)"

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(TaskSwitch)
class TaskSwitchAdmin(admin.ModelAdmin):
    list_display = ("task_name", "mode", "breaker_enabled", "breaker_state", "skipped_count", "note", "updated_at")
    list_editable = ("mode",)
    list_filter = ("mode", "breaker_enabled", "breaker_state")
    search_fields = ("task_name",)
    readonly_fields = ("skipped_count", "breaker_state", "breaker_changed_at", "created_at", "updated_at")
    fieldsets = [
        (None, {"fields": ("task_name", "mode", "note", "skipped_count")}),
        (
            "Automatic rollback breaker",
            {
                "fields": (
                    "breaker_enabled",
                    ("breaker_error_rate", "breaker_min_runs", "breaker_window_seconds"),
                    ("breaker_fallback", "breaker_cooldown_seconds", "breaker_trial_runs"),
                    ("breaker_state", "breaker_changed_at"),
                )
            },
        ),
        (None, {"fields": ("created_at", "updated_at")}),
    ]
    inlines = [TaskSwitchChangeInline]

    def save_model(self, request, obj, form, change):
        # The mode goes through the service, which records who changed it; the rest is plain.
        mode = obj.mode
        before = TaskSwitch.objects.values_list("mode", flat=True).get(pk=obj.pk) if change else None
        obj.mode = before or mode
        super().save_model(request, obj, form, change)
        if mode != obj.mode:
            reason = obj.note or "changed in the admin"
            task_switch_set(task_name=obj.task_name, mode=mode, by=request.user.get_username(), reason=reason)
            obj.refresh_from_db()


@admin.register(QueueLimit)
class QueueLimitAdmin(admin.ModelAdmin):
    list_display = ("queue", "max_depth", "updated_at")


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


@admin.register(TaskSample)
class TaskConsoleAdmin(admin.ModelAdmin):
    """The task console ("Background tasks"): one page with every task type's switch
    (editable by staff allowed to change switches), queue, backlog, rates, durations,
    last failure and charts of the last hours. Its figures are the selectors' (the
    staff API serves the same); the samples themselves are not edited here."""

    switch_permission = "background.change_taskswitch"

    def has_view_permission(self, request, obj=None):
        # Whoever may see the switches may see the console.
        return super().has_view_permission(request, obj) or request.user.has_perm("background.view_taskswitch")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def get_urls(self):
        switch = self.admin_site.admin_view(self.switch_view)  # staff login and CSRF
        return [path("switch/", switch, name="background_tasksample_switch"), *super().get_urls()]

    def changelist_view(self, request, extra_context=None):
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            hours = int(request.GET.get("hours", 24))
        except ValueError:
            hours = 24
        hours = min(max(hours, 1), selectors.MAX_HOURS)
        console = selectors.task_console(hours=hours)
        inbox = reverse("admin:background_failedtask_changelist")
        rows = []
        for task in console["tasks"]:
            series = task["series"]
            failure = task["last_failure"]
            rows.append(
                {
                    **task,
                    "error_percent": None if task["error_rate"] is None else round(task["error_rate"] * 100, 1),
                    "inbox_url": f"{inbox}?{urlencode({'task_name__exact': task['task_name']})}",
                    "last_failure_url": failure and reverse("admin:background_failedtask_change", args=[failure["id"]]),
                    "is_relay": task["task_name"] == relay_outbox.name,
                    "runs_chart": line_chart(
                        [
                            ("runs", [point["runs"] for point in series], "#2f6fb0"),
                            ("failures", [point["failures"] for point in series], "#c0392b"),
                        ]
                    ),
                    "p95_chart": line_chart(
                        [("p95", [point["p95_seconds"] for point in series], "#8e44ad")], unit=" s"
                    ),
                }
            )
        context = {
            **self.admin_site.each_context(request),
            "title": "Background tasks",
            "opts": self.model._meta,
            "console": console,
            "rows": rows,
            "hours": hours,
            "hour_choices": [1, 6, 24, 72, 168],
            "modes": TaskMode.choices,
            "can_switch": request.user.has_perm(self.switch_permission),
            "switch_url": reverse("admin:background_tasksample_switch"),
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/background/task_console.html", context)

    def switch_view(self, request):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not request.user.has_perm(self.switch_permission):
            raise PermissionDenied
        console = reverse("admin:background_tasksample_changelist")
        task_name, mode = request.POST.get("task_name", ""), request.POST.get("mode", "")
        if task_name not in selectors.task_names() or mode not in TaskMode.values:
            self.message_user(request, "Unknown task or mode; nothing changed.", messages.ERROR)
            return HttpResponseRedirect(console)
        if task_name == relay_outbox.name and mode == TaskMode.OFF and request.POST.get("confirmed") != "yes":
            # The control plane's own task: say what off does (and does not) stop, and
            # ask once more, without JavaScript.
            context = {
                **self.admin_site.each_context(request),
                "title": "Switch the outbox relay off?",
                "opts": self.model._meta,
                "task_name": task_name,
                "mode": mode,
                "switch_url": reverse("admin:background_tasksample_switch"),
                "console_url": console,
            }
            return TemplateResponse(request, "admin/background/task_switch_confirm.html", context)
        task_switch_set(task_name=task_name, mode=mode, by=request.user.get_username(), reason="task console")
        self.message_user(request, f"{task_name} is now {mode}.", messages.SUCCESS)
        return HttpResponseRedirect(console)


# django-celery-beat's admin, with each periodic task's last run from its stored results.
admin.site.unregister(PeriodicTask)


@admin.register(PeriodicTask)
class PeriodicTaskAdmin(BeatPeriodicTaskAdmin):
    """Beside each periodic task: its last run's start, status and duration, from
    django-celery-results (beat names the row in ``periodic_task_name``; the start is
    stored because the worker tracks the periodic tasks' starts, see signals.py)."""

    list_display = (*BeatPeriodicTaskAdmin.list_display, "last_result_status", "last_result_duration")
    readonly_fields = (
        *BeatPeriodicTaskAdmin.readonly_fields,
        "last_result_started",
        "last_result_done",
        "last_result_status",
        "last_result_duration",
        "last_result_value",
    )
    fieldsets = (
        *BeatPeriodicTaskAdmin.fieldsets,
        (
            "Last run (stored result)",
            {
                "fields": (
                    "last_result_started",
                    "last_result_done",
                    "last_result_status",
                    "last_result_duration",
                    "last_result_value",
                ),
                "classes": ("extrapretty", "wide"),
            },
        ),
    )

    def get_queryset(self, request):
        latest = TaskResult.objects.filter(periodic_task_name=OuterRef("name")).order_by("-date_done")
        return (
            super()
            .get_queryset(request)
            .annotate(
                result_started=Subquery(latest.values("date_started")[:1]),
                result_done=Subquery(latest.values("date_done")[:1]),
                result_status=Subquery(latest.values("status")[:1]),
                result_value=Subquery(latest.values("result")[:1]),
            )
        )

    @admin.display(description="last result", ordering="result_status")
    def last_result_status(self, obj):
        return getattr(obj, "result_status", None) or "-"

    @admin.display(description="last duration")
    def last_result_duration(self, obj):
        started, done = getattr(obj, "result_started", None), getattr(obj, "result_done", None)
        if not (started and done):
            return "-"
        return f"{max((done - started).total_seconds(), 0):.2f} s"

    @admin.display(description="started")
    def last_result_started(self, obj):
        return getattr(obj, "result_started", None) or "-"

    @admin.display(description="done")
    def last_result_done(self, obj):
        return getattr(obj, "result_done", None) or "-"

    @admin.display(description="result")
    def last_result_value(self, obj):
        return (getattr(obj, "result_value", None) or "-")[:500]
