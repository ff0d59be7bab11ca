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
    """A task waiting to be published. Written in the caller's transaction and
    deleted once the broker has it, so a rolled-back write enqueues nothing and
    a broker outage loses nothing."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    task_name = models.CharField(max_length=200)
    kwargs = models.JSONField(default=dict)
    publish_attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["created_at"]

    def __str__(self):
        return f"{self.task_name} {self.id}"


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
