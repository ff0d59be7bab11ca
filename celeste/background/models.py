import uuid

from django.db import models


class TaskMode(models.TextChoices):
    BACKGROUND = "background", "Background (queue it)"
    SYNC = "sync", "Sync (run inline after commit)"
    OFF = "off", "Off (record and skip)"


class BreakerState(models.TextChoices):
    CLOSED = "closed", "Closed (normal)"
    OPEN = "open", "Open (on its fallback)"
    HALF_OPEN = "half_open", "Half-open (trial runs in background)"


class TaskSwitch(models.Model):
    """How one task type runs, and its automatic rollback breaker (breaker.py).
    No row means ``background`` without a breaker."""

    task_name = models.CharField(max_length=200, unique=True)
    mode = models.CharField(max_length=20, choices=TaskMode.choices, default=TaskMode.BACKGROUND)
    skipped_count = models.PositiveBigIntegerField(default=0, help_text="Enqueues skipped while off.")
    note = models.CharField(max_length=300, blank=True)
    breaker_enabled = models.BooleanField(
        default=False, help_text="Flip the switch to its fallback when the task fails too often."
    )
    breaker_error_rate = models.FloatField(
        default=0.5, help_text="Errors (failed or retried runs) / runs over the window that opens the breaker (0–1)."
    )
    breaker_min_runs = models.PositiveIntegerField(default=20, help_text="Runs in the window before it may open.")
    breaker_window_seconds = models.PositiveIntegerField(default=300)
    breaker_fallback = models.CharField(
        max_length=20,
        choices=[(TaskMode.SYNC, TaskMode.SYNC.label), (TaskMode.OFF, TaskMode.OFF.label)],
        default=TaskMode.SYNC,
        help_text="The mode while the breaker is open.",
    )
    breaker_cooldown_seconds = models.PositiveIntegerField(
        default=300, help_text="Open this long before trial runs go to the background again."
    )
    breaker_trial_runs = models.PositiveIntegerField(
        default=3, help_text="Successful trial runs (half-open) that close the breaker; one failure opens it again."
    )
    breaker_state = models.CharField(max_length=20, choices=BreakerState.choices, default=BreakerState.CLOSED)
    breaker_changed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["task_name"]

    def __str__(self):
        return f"{self.task_name}: {self.mode}"


class TaskSwitchChange(models.Model):
    """Every change of a switch: by a person (their username) or by the breaker."""

    switch = models.ForeignKey(TaskSwitch, on_delete=models.CASCADE, related_name="changes")
    changed_at = models.DateTimeField(auto_now_add=True, db_index=True)
    changed_by = models.CharField(max_length=150, help_text='A username, or "breaker".')
    from_mode = models.CharField(max_length=20, choices=TaskMode.choices)
    to_mode = models.CharField(max_length=20, choices=TaskMode.choices)
    reason = models.TextField(blank=True)
    figures = models.JSONField(default=dict, blank=True, help_text="What the breaker saw (runs, errors, rate).")

    class Meta:
        ordering = ["-changed_at", "-id"]

    def __str__(self):
        return f"{self.switch.task_name}: {self.from_mode} → {self.to_mode} by {self.changed_by}"


class QueueLimit(models.Model):
    """Staff's override of a queue's maximum depth (QUEUE_MAX_DEPTHS otherwise)."""

    queue = models.CharField(max_length=100, unique=True)
    max_depth = models.PositiveIntegerField(
        help_text="Past this many waiting messages, enqueue() applies each task's overflow policy."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["queue"]

    def __str__(self):
        return f"{self.queue}: {self.max_depth}"


class OutboxMessage(models.Model):
    """The job ledger: one row per background job, from the caller's transaction
    until the task reports it finished (done, failed into the inbox, or skipped
    on purpose). A rolled-back write enqueues nothing; a broker outage, a lost
    message or a killed worker loses nothing, because the relay republishes a
    row whose job is neither running on a live worker nor waiting in the queue.

    States: pending (``published_at`` empty) → published → claimed by a worker
    (``worker_id`` and ``worker_pid`` set, ``lease_until`` = when it must be done) → row deleted.
    A retry scheduled for later, or a job enqueued with a countdown, is unclaimed
    with ``lease_until`` = its ETA (+ JOB_UNCLAIMED_AFTER_SECONDS)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    task_name = models.CharField(max_length=200)
    kwargs = models.JSONField(default=dict)
    publish_attempts = models.PositiveIntegerField(default=0, help_text="Failed attempts to reach the broker.")
    last_error = models.TextField(blank=True)
    published_at = models.DateTimeField(null=True, blank=True)
    published_count = models.PositiveIntegerField(default=0, help_text="Times handed to the broker (>1: recovered).")
    worker_id = models.CharField(max_length=255, blank=True, help_text="The worker running it now.")
    # The worker's pool processes share its id: the claim names the process too, so two copies
    # of one message taken by two of them never both run.
    worker_pid = models.PositiveIntegerField(
        null=True, blank=True, help_text="The process of that worker running it (its pool child)."
    )
    lease_until = models.DateTimeField(null=True, blank=True)
    runs = models.PositiveIntegerField(default=0, help_text="Times a worker started it.")
    eta = models.DateTimeField(null=True, blank=True, help_text="Not to run before (enqueued with a countdown).")
    request_id = models.CharField(
        max_length=64, blank=True, help_text="The request (or the job started from it) that enqueued it."
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at"]

    def __str__(self):
        return f"{self.task_name} {self.id}"

    @property
    def state(self) -> str:
        if self.published_at is None:
            return "pending"
        return "running" if self.worker_id else "published"


class WorkerHeartbeat(models.Model):
    """A live Celery worker (its main process) beats every WORKER_HEARTBEAT_SECONDS.
    A worker silent for WORKER_DEAD_AFTER_SECONDS is dead: its jobs are republished."""

    worker_id = models.CharField(max_length=255, primary_key=True)
    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    last_seen_at = models.DateTimeField(db_index=True)
    # The worker's cumulative per-task counts since it started, written with each beat:
    # {task: {"succeeded", "failed", "retried", "runtime_buckets": {le: n}, "runtime_sum"}}.
    task_totals = models.JSONField(default=dict, blank=True)
    # What the task sampler (services.task_samples_record) has counted of them: the totals it
    # counted into ``sampled_minute``, and those counted into earlier minutes, so a second
    # run for the same minute recounts from the same baseline instead of from zero.
    sampled_totals = models.JSONField(default=dict, blank=True)
    baseline_totals = models.JSONField(default=dict, blank=True)
    sampled_minute = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-last_seen_at"]

    def __str__(self):
        return self.worker_id


class FailedTaskStatus(models.TextChoices):
    OPEN = "open", "Open"
    RETRIED = "retried", "Retried"
    DISCARDED = "discarded", "Discarded"


class FailureGroup(models.Model):
    """Failures of one task with the same error, like an issue tracker's issue: the
    fingerprint is the task and the error with its numbers and ids blanked, so a
    job that fails again after a retry joins the group it came from."""

    task_name = models.CharField(max_length=200)
    fingerprint = models.CharField(max_length=40)
    title = models.CharField(max_length=300, help_text="The error of the first failure, shortened.")
    count = models.PositiveIntegerField(default=0, help_text="Failures recorded into the group.")
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-last_seen"]
        constraints = [
            models.UniqueConstraint(fields=["task_name", "fingerprint"], name="background_failuregroup_once")
        ]

    def __str__(self):
        return f"{self.task_name}: {self.title}"


class FailedTask(models.Model):
    """The failed-task inbox: a job that ran out of retries or failed permanently."""

    task_name = models.CharField(max_length=200, db_index=True)
    task_id = models.CharField(max_length=255, blank=True)
    kwargs = models.JSONField(default=dict)
    error = models.TextField()
    traceback = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=1)
    permanent = models.BooleanField(default=False, help_text="Failed with an error that retrying cannot fix.")
    status = models.CharField(max_length=20, choices=FailedTaskStatus.choices, default=FailedTaskStatus.OPEN)
    group = models.ForeignKey(FailureGroup, on_delete=models.PROTECT, null=True, related_name="jobs")
    retry_job_id = models.CharField(
        max_length=255, blank=True, help_text="The job a retry enqueued (its task id, once it has run)."
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "-created_at"])]

    def __str__(self):
        return f"{self.task_name} ({self.status})"


class TaskSample(models.Model):
    """One task type's figures for one minute, summed over every worker (the task
    console's history): runs, failures and retries counted in that minute, the run
    time histogram of those runs, and what waited when the sample was taken."""

    minute = models.DateTimeField(help_text="Start of the minute (UTC) the sample was taken in.")
    task_name = models.CharField(max_length=200)
    runs = models.PositiveIntegerField(default=0, help_text="Runs that succeeded or failed for good.")
    failures = models.PositiveIntegerField(default=0)
    retries = models.PositiveIntegerField(default=0)
    # Prometheus-style cumulative buckets of this minute's runs: {"0.005": n, …, "+Inf": n}.
    runtime_buckets = models.JSONField(default=dict, blank=True)
    runtime_sum = models.FloatField(default=0)
    queue_length = models.PositiveIntegerField(default=0, help_text="Messages waiting in the task's queue.")
    outbox_backlog = models.PositiveIntegerField(default=0, help_text="Jobs of the task not finished yet.")
    inbox_open = models.PositiveIntegerField(default=0, help_text="Open failed-task inbox rows of the task.")

    class Meta:
        ordering = ["minute", "task_name"]
        constraints = [models.UniqueConstraint(fields=["minute", "task_name"], name="background_tasksample_minute")]
        indexes = [models.Index(fields=["minute"])]
        verbose_name_plural = "task console"

    def __str__(self):
        return f"{self.task_name} @ {self.minute:%Y-%m-%d %H:%M}"
