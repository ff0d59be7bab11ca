import json
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, OuterRef, Q, Subquery
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, path, reverse
from django.utils.html import format_html, format_html_join
from django_celery_beat.admin import PeriodicTaskAdmin as BeatPeriodicTaskAdmin
from django_celery_beat.admin import PeriodicTaskForm as BeatPeriodicTaskForm
from django_celery_beat.models import PeriodicTask
from django_celery_results.models import TaskResult

from celeste.admin import Item, ReadOnlyAdminMixin, action_hidden, confirmation_page, confirmed
from celeste.celery import app as celery_app

from . import selectors
from .charts import line_chart
from .models import (
    FailedTask,
    FailedTaskStatus,
    FailureGroup,
    OutboxMessage,
    QueueLimit,
    TaskMode,
    TaskSample,
    TaskSwitch,
    TaskSwitchChange,
    WorkerHeartbeat,
)
from .schedules import task_description
from .services import failed_task_discard, failed_task_retry, task_switch_set
from .tasks import relay_outbox


class TaskSwitchChangeInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = TaskSwitchChange
    fields = ("changed_at", "changed_by", "from_mode", "to_mode", "reason", "figures")
    readonly_fields = fields
    extra = 0
    verbose_name_plural = "History (who changed the mode, when, why)"


RELAY_OFF_WARNING = (
    "The outbox relay is the control plane's own task: it publishes jobs whose publishing failed "
    "(Redis was down, a process died after its commit) and republishes the jobs of dead workers. "
    "Off skips relay jobs enqueued through the outbox (a Retry of the relay from the inbox); beat's ticks "
    "and every worker's heartbeat still run it. To stop beat's relay, disable the \"Outbox relay\" periodic task."
)


def relay_off_confirmation(modeladmin, request, **page):
    """What switching the outbox relay off stops (and does not), asked once more."""
    return confirmation_page(
        modeladmin,
        request,
        title="Switch the outbox relay off?",
        intro=[RELAY_OFF_WARNING],
        warnings=["Switch it back to background once you are done."],
        confirm_label="Yes, switch it off",
        **page,
    )


@admin.register(TaskSwitch)
class TaskSwitchAdmin(admin.ModelAdmin):
    # No list_editable mode: a change of mode is made on the switch's page (or the task
    # console), where the task's description and, for the relay, a warning come first.
    list_display = ("task_name", "mode", "breaker_enabled", "breaker_state", "skipped_count", "note", "updated_at")
    list_filter = ("mode", "breaker_enabled", "breaker_state")
    search_fields = ("task_name",)
    readonly_fields = (
        "description",
        "when_off",
        "skipped_count",
        "breaker_state",
        "breaker_changed_at",
        "created_at",
        "updated_at",
    )
    fieldsets = [
        (None, {"fields": ("task_name", "description", "when_off", "mode", "note", "skipped_count")}),
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

    @staticmethod
    def _task(obj):
        return celery_app.tasks.get(obj.task_name) if obj and obj.task_name else None

    @admin.display(description="what the task does")
    def description(self, obj):
        task = self._task(obj)
        if task is None:
            return "Not a registered task."
        return task_description(task) or "(no description)"

    @admin.display(description="what off means")
    def when_off(self, obj):
        task = self._task(obj)
        return task.when_off if task is not None else "-"

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        switching_relay_off = (
            request.method == "POST"
            and request.POST.get("task_name") == relay_outbox.name
            and request.POST.get("mode") == TaskMode.OFF
            and not TaskSwitch.objects.filter(task_name=relay_outbox.name, mode=TaskMode.OFF).exists()
        )
        if switching_relay_off and not confirmed(request):
            hidden = [(k, v) for k, values in request.POST.lists() if k != "csrfmiddlewaretoken" for v in values]
            return relay_off_confirmation(self, request, hidden=hidden)
        return super().changeform_view(request, object_id, form_url, extra_context)

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
class OutboxMessageAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """The job ledger: every job not finished yet. Read-only: the relay and the
    workers own the rows."""

    list_display = (
        "task_name",
        "state",
        "worker_id",
        "worker_pid",
        "runs",
        "published_count",
        "created_at",
        "publish_attempts",
        "last_error",
    )
    list_filter = ("task_name", ("published_at", admin.EmptyFieldListFilter), ("worker_id", admin.EmptyFieldListFilter))
    search_fields = ("id", "task_name", "worker_id", "request_id")


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Live workers beat here; one silent past WORKER_DEAD_AFTER_SECONDS is dead."""

    list_display = ("worker_id", "hostname", "pid", "started_at", "last_seen_at")


# --- the failed-task inbox, grouped like an issue tracker ----------------------------


def _object_links(kwargs: dict) -> list[tuple[str, str, str]]:
    """(argument, value, admin URL) for each argument naming an object staff can open:
    ``order_id`` → the order's page, ``product_ids`` → each product's. Found through
    the admin registry, so the inbox knows no domain app."""
    by_name = {model._meta.model_name: model for model in admin.site._registry}
    links = []
    for key, value in sorted(kwargs.items()):
        name, _, suffix = key.rpartition("_")
        model = by_name.get(name) if suffix in ("id", "ids") else None
        for pk in (value if isinstance(value, list) else [value]) if model else []:
            try:
                url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_change", args=[pk])
            except NoReverseMatch:
                continue
            links.append((key, pk, url))
    return links


def _jobs_items(jobs) -> list[Item]:
    return [
        Item(
            label=f"#{job.id} {job.task_name}({', '.join(f'{k}={v}' for k, v in sorted(job.kwargs.items()))})",
            url=reverse("admin:background_failedtask_change", args=[job.id]),
            note=job.error[:160],
        )
        for job in jobs
    ]


class InboxActions:
    """Retry and Discard, the same for a job and a group, from a list or a page.
    Discarding asks first, listing the jobs it closes; retrying is harmless (the
    tasks are idempotent) and runs at once."""

    change_permission = "background.change_failedtask"

    def _check(self, request):
        if not request.user.has_perm(self.change_permission):
            raise PermissionDenied

    def _retry(self, request, job_ids):
        self._check(request)
        count = failed_task_retry(failed_task_ids=job_ids)
        self.message_user(request, f"Re-enqueued {count} job(s).", messages.SUCCESS)
        if len(job_ids) > count:
            left = len(job_ids) - count
            self.message_user(request, f"{left} job(s) were not open and were left alone.", messages.WARNING)

    def _discard(self, request, job_ids, *, hidden, form_url="", cancel_url=""):
        """None once done, else the confirmation page."""
        self._check(request)
        jobs = list(FailedTask.objects.filter(id__in=job_ids, status=FailedTaskStatus.OPEN).order_by("id"))
        if not confirmed(request):
            return confirmation_page(
                self,
                request,
                title="Discard these failed jobs?",
                intro=[f"{len(jobs)} open job(s) will be closed without running again:"],
                items=_jobs_items(jobs),
                hidden=hidden,
                form_url=form_url,
                cancel_url=cancel_url,
                confirm_label=f"Yes, discard {len(jobs)} job(s)",
                can_confirm=bool(jobs),
            )
        count = failed_task_discard(failed_task_ids=[job.id for job in jobs])
        self.message_user(request, f"Discarded {count} job(s).", messages.SUCCESS)
        return None

    # The buttons of a job's or a group's page: the open jobs it stands for (_job_ids).
    def _job_ids(self, obj) -> list[int]:
        raise NotImplementedError

    def _page(self, obj) -> str:
        return reverse(f"admin:background_{self.model._meta.model_name}_change", args=[obj.pk])

    def get_urls(self):
        name, wrap = self.model._meta.model_name, self.admin_site.admin_view
        return [
            path("<int:object_id>/retry/", wrap(self.retry_view), name=f"background_{name}_retry"),
            path("<int:object_id>/discard/", wrap(self.discard_view), name=f"background_{name}_discard"),
            *super().get_urls(),
        ]

    def retry_view(self, request, object_id):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        obj = get_object_or_404(self.model, pk=object_id)
        self._retry(request, self._job_ids(obj))
        return HttpResponseRedirect(self._page(obj))

    def discard_view(self, request, object_id):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        obj = get_object_or_404(self.model, pk=object_id)
        page = self._page(obj)
        return self._discard(request, self._job_ids(obj), hidden=(), cancel_url=page) or HttpResponseRedirect(page)

    def render_change_form(self, request, context, *args, obj=None, **kwargs):
        if obj is not None:
            name = self.model._meta.model_name
            context["inbox_buttons"] = {
                "open": self._job_ids(obj),
                "retry_url": reverse(f"admin:background_{name}_retry", args=[obj.pk]),
                "discard_url": reverse(f"admin:background_{name}_discard", args=[obj.pk]),
                "can_act": request.user.has_perm(self.change_permission),
            }
        return super().render_change_form(request, context, *args, obj=obj, **kwargs)


class FailedJobInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = FailedTask
    fields = ("job", "status", "attempts", "created_at", "retried_as")
    readonly_fields = fields
    extra = 0
    show_change_link = True
    verbose_name_plural = "Jobs (newest first)"

    @admin.display(description="job")
    def job(self, obj):
        args = ", ".join(f"{k}={v}" for k, v in sorted(obj.kwargs.items()))
        return f"#{obj.id} ({args})"

    @admin.display(description="retried as")
    def retried_as(self, obj):
        return _retried_as(obj)


def _retried_as(job):
    """The new attempt a retry enqueued: its own inbox row if it failed again, else its state."""
    if not job.retry_job_id:
        return "-"
    again = FailedTask.objects.filter(task_id=job.retry_job_id).values_list("id", flat=True).first()
    if again:
        url = reverse("admin:background_failedtask_change", args=[again])
        return format_html('<a href="{}">job #{} (failed again)</a>', url, again)
    if OutboxMessage.objects.filter(id=job.retry_job_id).exists():
        url = reverse("admin:background_outboxmessage_change", args=[job.retry_job_id])
        return format_html('<a href="{}">{} (waiting or running)</a>', url, job.retry_job_id)
    return f"{job.retry_job_id} (finished)"


class GroupStatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [("open", "Open (has open jobs)"), ("resolved", "Resolved")]

    def queryset(self, request, queryset):
        if self.value() == "open":
            return queryset.filter(open_count__gt=0)
        if self.value() == "resolved":
            return queryset.filter(open_count=0)
        return queryset


@admin.register(FailureGroup)
class FailureGroupAdmin(InboxActions, ReadOnlyAdminMixin, admin.ModelAdmin):
    """The inbox as staff read it: one row per task and error fingerprint."""

    list_display = ("title", "task_name", "status", "open_count", "count", "first_seen", "last_seen")
    list_filter = (GroupStatusFilter, "task_name")
    search_fields = ("task_name", "title")
    fields = ("task_name", "title", "status", "open_count", "count", "first_seen", "last_seen", "fingerprint")
    readonly_fields = fields
    inlines = [FailedJobInline]
    actions = ("retry_open", "discard_open")
    change_form_template = "admin/background/inbox_change_form.html"

    def get_queryset(self, request):
        open_jobs = Count("jobs", filter=Q(jobs__status=FailedTaskStatus.OPEN))
        return super().get_queryset(request).annotate(open_count=open_jobs)

    @admin.display(description="status")
    def status(self, group):
        return "open" if group.open_count else "resolved"

    @admin.display(description="open", ordering="open_count")
    def open_count(self, group):
        return group.open_count

    def _open_ids(self, groups) -> list[int]:
        jobs = FailedTask.objects.filter(group__in=groups, status=FailedTaskStatus.OPEN)
        return list(jobs.values_list("id", flat=True))

    def _job_ids(self, group) -> list[int]:
        return self._open_ids([group])

    @admin.action(description="Retry the open jobs of selected groups")
    def retry_open(self, request, queryset):
        self._retry(request, self._open_ids(queryset))

    @admin.action(description="Discard the open jobs of selected groups")
    def discard_open(self, request, queryset):
        return self._discard(request, self._open_ids(queryset), hidden=action_hidden(request, queryset))


@admin.register(FailedTask)
class FailedTaskAdmin(InboxActions, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("task_name", "status", "error_summary", "group_link", "attempts", "permanent", "created_at")
    list_filter = ("status", "task_name", "permanent")
    search_fields = ("task_name", "error", "task_id")
    list_select_related = ("group",)
    fields = (
        "task_name",
        "status",
        "group_link",
        "arguments",
        "error",
        "traceback_block",
        "attempts",
        "permanent",
        "task_id",
        "retried_as",
        "created_at",
        "resolved_at",
    )
    readonly_fields = fields
    actions = ("retry", "discard")
    date_hierarchy = "created_at"
    change_form_template = "admin/background/inbox_change_form.html"

    @admin.display(description="error")
    def error_summary(self, obj):
        return obj.error[:120]

    @admin.display(description="group")
    def group_link(self, obj):
        if obj.group_id is None:
            return "-"
        url = reverse("admin:background_failuregroup_change", args=[obj.group_id])
        return format_html('<a href="{}">{} failure(s) like this</a>', url, obj.group.count)

    @admin.display(description="arguments")
    def arguments(self, obj):
        links = format_html_join(" ", '<a href="{2}">{0}={1}</a>', _object_links(obj.kwargs))
        return format_html("<code>{}</code><br>{}", json.dumps(obj.kwargs, sort_keys=True), links)

    @admin.display(description="traceback")
    def traceback_block(self, obj):
        return format_html('<pre class="celeste-traceback">{}</pre>', obj.traceback or "-")

    @admin.display(description="retried as")
    def retried_as(self, obj):
        return _retried_as(obj)

    @admin.action(description="Retry selected jobs (re-enqueue with their arguments)")
    def retry(self, request, queryset):
        self._retry(request, list(queryset.values_list("id", flat=True)))

    @admin.action(description="Discard selected jobs")
    def discard(self, request, queryset):
        job_ids = list(queryset.values_list("id", flat=True))
        return self._discard(request, job_ids, hidden=action_hidden(request, queryset))

    def _job_ids(self, job) -> list[int]:
        return [job.id] if job.status == FailedTaskStatus.OPEN else []


@admin.register(TaskSample)
class TaskConsoleAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """The task console ("Background tasks"): one page with every task type's switch
    (editable by staff allowed to change switches), queue, backlog, rates, durations,
    last failure and charts of the last hours. Its figures are the selectors' (the
    staff API serves the same); the samples themselves are not edited here."""

    switch_permission = "background.change_taskswitch"

    def has_view_permission(self, request, obj=None):
        # Whoever may see the switches may see the console.
        return super().has_view_permission(request, obj) or request.user.has_perm("background.view_taskswitch")

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
        if task_name == relay_outbox.name and mode == TaskMode.OFF and not confirmed(request):
            return relay_off_confirmation(
                self,
                request,
                hidden=[("task_name", task_name), ("mode", mode)],
                form_url=reverse("admin:background_tasksample_switch"),
                cancel_url=console,
            )
        task_switch_set(task_name=task_name, mode=mode, by=request.user.get_username(), reason="task console")
        self.message_user(request, f"{task_name} is now {mode}.", messages.SUCCESS)
        return HttpResponseRedirect(console)


# django-celery-beat's admin, with each periodic task's last run from its stored results.
admin.site.unregister(PeriodicTask)


class PeriodicTaskForm(BeatPeriodicTaskForm):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # django-celery-beat leaves "Task (registered)" empty on an existing row; pick its task.
        if self.instance.pk and self.instance.task in celery_app.tasks:
            self.fields["regtask"].initial = self.instance.task


@admin.register(PeriodicTask)
class PeriodicTaskAdmin(BeatPeriodicTaskAdmin):
    """Beside each periodic task: its last run's start, status and duration, from
    django-celery-results (beat names the row in ``periodic_task_name``; the start is
    stored because the worker tracks the periodic tasks' starts, see signals.py)."""

    form = PeriodicTaskForm
    list_display = (
        *BeatPeriodicTaskAdmin.list_display,
        "description",
        "last_result_status",
        "last_result_duration",
    )
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
