from django.conf import settings
from django.db import models


class Channel(models.TextChoices):
    EMAIL = "email", "Email"
    PUSH = "push", "Push"
    IN_APP = "in_app", "In-app"


class NotificationEvent(models.TextChoices):
    ORDER_PAID = "order.paid", "Payment received"
    ORDER_CONFIRMED = "order.confirmed", "Order confirmed"
    ORDER_SHIPPED = "order.shipped", "Order shipped"
    ORDER_DELIVERED = "order.delivered", "Order delivered"
    ORDER_CANCELLED = "order.cancelled", "Order cancelled"
    REPORT_READY = "report.ready", "Report ready"


class Notification(models.Model):
    """What a user is told about an event; also the in-app record. One per
    (user, event, order): a repeated status event never notifies twice."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications")
    event = models.CharField(max_length=50, choices=NotificationEvent.choices)
    order = models.ForeignKey(
        "orders.Order", on_delete=models.CASCADE, null=True, blank=True, related_name="notifications"
    )
    title = models.CharField(max_length=200)
    body = models.TextField()
    data = models.JSONField(default=dict, blank=True)
    read_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["user", "event", "order"], name="notification_once_per_event"),
        ]
        indexes = [models.Index(fields=["user", "read_at"])]

    def __str__(self):
        return f"{self.event} → {self.user_id}"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"
    RATE_LIMITED = "rate_limited", "Rate limited"


class Delivery(models.Model):
    """One notification on one channel."""

    notification = models.ForeignKey(Notification, on_delete=models.CASCADE, related_name="deliveries")
    channel = models.CharField(max_length=20, choices=Channel.choices)
    status = models.CharField(max_length=20, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "deliveries"
        constraints = [
            models.UniqueConstraint(fields=["notification", "channel"], name="delivery_once_per_channel"),
        ]

    def __str__(self):
        return f"{self.channel} of {self.notification_id}: {self.status}"


class NotificationPreference(models.Model):
    """A channel a user switched on or off. No row means on."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notification_preferences"
    )
    channel = models.CharField(max_length=20, choices=Channel.choices)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["user_id", "channel"]
        constraints = [models.UniqueConstraint(fields=["user", "channel"], name="preference_once_per_channel")]

    def __str__(self):
        return f"{self.user_id} {self.channel}: {'on' if self.enabled else 'off'}"


class PushSubscription(models.Model):
    """A browser's Web Push subscription (RFC 8030 endpoint + RFC 8291 keys).

    Unique per (user, endpoint), not per endpoint: a user who registers an endpoint
    someone else already has gets their own row instead of taking theirs over."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="push_subscriptions")
    endpoint = models.URLField(max_length=1000)
    p256dh = models.CharField(max_length=200)
    auth = models.CharField(max_length=100)
    active = models.BooleanField(default=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["user", "endpoint"], name="push_subscription_once_per_user")]

    def __str__(self):
        return f"push {self.id} of {self.user_id}"


class CampaignAudience(models.TextChoices):
    ALL = "all", "All opted-in customers"
    STORES = "stores", "Customers who ordered from chosen stores recently"


class CampaignStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    SENDING = "sending", "Sending"
    SENT = "sent", "Sent"


class Campaign(models.Model):
    subject = models.CharField(max_length=200)
    body = models.TextField(help_text="A Django template. Context: {{ name }}, {{ unsubscribe_url }}.")
    audience = models.CharField(max_length=20, choices=CampaignAudience.choices, default=CampaignAudience.ALL)
    stores = models.ManyToManyField("catalog.Store", blank=True, related_name="campaigns")
    ordered_within_days = models.PositiveIntegerField(default=30)
    status = models.CharField(max_length=20, choices=CampaignStatus.choices, default=CampaignStatus.DRAFT)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return self.subject


class RecipientStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    SENDING = "sending", "Sending"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"


class CampaignRecipient(models.Model):
    """One user of a campaign: the unique row is what makes sending idempotent."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="recipients")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    status = models.CharField(max_length=20, choices=RecipientStatus.choices, default=RecipientStatus.QUEUED)
    error = models.TextField(blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["campaign", "user"], name="campaign_recipient_once")]
        indexes = [models.Index(fields=["campaign", "status"])]

    def __str__(self):
        return f"{self.campaign_id} → {self.user_id}: {self.status}"


class StreamKind(models.TextChoices):
    NOTIFICATION = "notification", "In-app notification"
    ORDER_STATUS = "order.status", "Order status change"


class StreamSequence(models.Model):
    """The last event id given to a user's stream. Taking the next one updates this
    row, whose lock is held until the writer commits: a user's events therefore
    commit in id order, without gaps, which is what lets a stream spot a missed
    publication and a reconnecting client replay by id. Kept when events expire, so
    ids never repeat."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="stream_sequence"
    )
    last_id = models.BigIntegerField(default=0)

    def __str__(self):
        return f"stream of {self.user_id}: {self.last_id}"


class StreamEvent(models.Model):
    """One event of a user's live stream (GET /api/v1/notifications/stream), kept for
    replay after a reconnect until STREAM_RETENTION_HOURS. ``event_id`` is the
    user's own sequence (SSE ``id:``)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="stream_events")
    event_id = models.BigIntegerField()
    kind = models.CharField(max_length=30, choices=StreamKind.choices)
    data = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["user_id", "event_id"]
        constraints = [models.UniqueConstraint(fields=["user", "event_id"], name="stream_event_once_per_id")]

    def __str__(self):
        return f"{self.kind} #{self.event_id} → {self.user_id}"
