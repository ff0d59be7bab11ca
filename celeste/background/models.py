import uuid

from django.db import models


class TaskMode(models.TextChoices):
    BACKGROUND = "background", "Background (queue it)"
    SYNC = "sync", "Sync (run inline after commit)"
    OFF = "off", "Off (record and skip)"


class TaskSwitch(models.Model):
    """How one task type runs. No row means ``background``."""

    task_name = models.CharField(max_length=200, unique=True)
    mode = models.CharField(max_length=20, choices=TaskMode.choices, default=TaskMode.BACKGROUND)
    skipped_count = models.PositiveBigIntegerField(default=0, help_text="Enqueues skipped while off.")
    note = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["task_name"]

    def __str__(self):
        return f"{self.task_name}: {self.mode}"


class OutboxMessage(models.Model):
    """The job ledger: one row per background job, from the caller's transaction
    until the task reports it finished (done, failed into the inbox, or skipped
    on purpose). A rolled-back write enqueues nothing; a broker outage, a lost
    message or a killed worker loses nothing, because the relay republishes a
    row whose job is neither running on a live worker nor waiting in the queue.

    States: pending (``published_at`` empty) → published → claimed by a worker
    (``worker_id`` set, ``lease_until`` = when it must be done) → row deleted.
    A retry scheduled for later is unclaimed with ``lease_until`` = its ETA."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    task_name = models.CharField(max_length=200)
    kwargs = models.JSONField(default=dict)
    publish_attempts = models.PositiveIntegerField(default=0, help_text="Failed attempts to reach the broker.")
    last_error = models.TextField(blank=True)
    published_at = models.DateTimeField(null=True, blank=True)
    published_count = models.PositiveIntegerField(default=0, help_text="Times handed to the broker (>1: recovered).")
    worker_id = models.CharField(max_length=255, blank=True, help_text="The worker running it now.")
    lease_until = models.DateTimeField(null=True, blank=True)
    runs = models.PositiveIntegerField(default=0, help_text="Times a worker started it.")
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
