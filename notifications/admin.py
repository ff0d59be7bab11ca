from django import forms
from django.contrib import admin, messages
from django.db.models import Count, Q

from .campaigns import (
    CAMPAIGN_FIELDS,
    CampaignError,
    campaign_create,
    campaign_send_test,
    campaign_start,
    campaign_template,
    campaign_update,
)
from .models import (
    Campaign,
    CampaignRecipient,
    Delivery,
    Notification,
    NotificationPreference,
    PushSubscription,
    RecipientStatus,
    StreamEvent,
)


class DeliveryInline(admin.TabularInline):
    model = Delivery
    extra = 0
    can_delete = False
    readonly_fields = ("channel", "status", "attempts", "last_error", "sent_at", "updated_at")

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ("title", "user", "event", "order", "read_at", "created_at")
    list_filter = ("event", "created_at")
    search_fields = ("title", "user__username", "user__email", "order__number")
    raw_id_fields = ("user", "order")
    inlines = (DeliveryInline,)
    readonly_fields = ("user", "event", "order", "title", "body", "data", "read_at", "created_at")

    def has_add_permission(self, request):
        return False


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = ("notification", "channel", "status", "attempts", "last_error", "sent_at", "updated_at")
    list_filter = ("channel", "status")
    search_fields = ("notification__title", "notification__user__email")
    readonly_fields = [f.name for f in Delivery._meta.fields]

    def has_add_permission(self, request):
        return False


@admin.register(NotificationPreference)
class NotificationPreferenceAdmin(admin.ModelAdmin):
    list_display = ("user", "channel", "enabled", "updated_at")
    list_filter = ("channel", "enabled")
    search_fields = ("user__username", "user__email")
    raw_id_fields = ("user",)


@admin.register(PushSubscription)
class PushSubscriptionAdmin(admin.ModelAdmin):
    list_display = ("user", "active", "last_success_at", "last_error", "created_at")
    list_filter = ("active",)
    search_fields = ("user__username", "endpoint")
    raw_id_fields = ("user",)
    readonly_fields = ("endpoint", "p256dh", "auth", "last_success_at", "last_error")


class CampaignForm(forms.ModelForm):
    class Meta:
        model = Campaign
        fields = ["subject", "body", "audience", "stores", "ordered_within_days"]

    def clean_body(self):
        body = self.cleaned_data["body"]
        try:
            campaign_template(Campaign(body=body))
        except CampaignError as exc:
            raise forms.ValidationError(str(exc)) from None
        return body


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    form = CampaignForm
    list_display = ("subject", "audience", "status", "queued", "sent", "failed", "skipped", "started_at", "finished_at")
    list_filter = ("status", "audience")
    search_fields = ("subject",)
    filter_horizontal = ("stores",)
    actions = ("send_test_to_me", "send")

    def get_queryset(self, request):
        def count(*statuses):
            return Count("recipients", filter=Q(recipients__status__in=statuses))

        # "queued" on the list means not finished yet: waiting or being sent right now.
        return (
            super()
            .get_queryset(request)
            .annotate(
                queued_count=count(RecipientStatus.QUEUED, RecipientStatus.SENDING),
                sent_count=count(RecipientStatus.SENT),
                failed_count=count(RecipientStatus.FAILED),
                skipped_count=count(RecipientStatus.SKIPPED),
            )
        )

    @admin.display(description="queued", ordering="queued_count")
    def queued(self, campaign):
        return campaign.queued_count

    @admin.display(description="sent", ordering="sent_count")
    def sent(self, campaign):
        return campaign.sent_count

    @admin.display(description="failed", ordering="failed_count")
    def failed(self, campaign):
        return campaign.failed_count

    @admin.display(description="skipped", ordering="skipped_count")
    def skipped(self, campaign):
        return campaign.skipped_count

    def get_readonly_fields(self, request, obj=None):
        if obj and obj.status != "draft":
            return ["subject", "body", "audience", "stores", "ordered_within_days"]
        return []

    def save_model(self, request, obj, form, change):
        fields = {f: form.cleaned_data[f] for f in CAMPAIGN_FIELDS if f in form.cleaned_data}
        stores = form.cleaned_data.get("stores")
        if change:
            campaign_update(campaign=obj, stores=stores, **fields)
        else:
            obj.pk = campaign_create(stores=stores or (), created_by=request.user, **fields).pk

    def save_related(self, request, form, formsets, change):
        # The services saved the stores already (form.save_m2m would bypass them).
        for formset in formsets:
            self.save_formset(request, form, formset, change=change)

    @admin.action(description="Send a test to me")
    def send_test_to_me(self, request, queryset):
        for campaign in queryset:
            try:
                campaign_send_test(campaign=campaign, user=request.user)
            except CampaignError as exc:
                self.message_user(request, str(exc), messages.ERROR)
            except Exception as exc:  # SMTP down: tell staff rather than crash the page
                self.message_user(request, f"Sending failed: {exc}", messages.ERROR)
            else:
                self.message_user(request, f"Sent {campaign.subject!r} to {request.user.email}.", messages.SUCCESS)

    @admin.action(description="Send to the audience")
    def send(self, request, queryset):
        for campaign in queryset:
            try:
                campaign_start(campaign_id=campaign.id)
            except CampaignError as exc:
                self.message_user(request, str(exc), messages.ERROR)
            else:
                self.message_user(request, f"Sending {campaign.subject!r}; progress shows here.", messages.SUCCESS)


@admin.register(CampaignRecipient)
class CampaignRecipientAdmin(admin.ModelAdmin):
    list_display = ("campaign", "user", "status", "error", "sent_at")
    list_filter = ("status", "campaign")
    search_fields = ("user__email", "user__username")
    readonly_fields = [f.name for f in CampaignRecipient._meta.fields]

    def has_add_permission(self, request):
        return False


@admin.register(StreamEvent)
class StreamEventAdmin(admin.ModelAdmin):
    """What each user's live stream carried, kept for replay (read-only: the record)."""

    list_display = ("user", "event_id", "kind", "created_at")
    list_filter = ("kind", "created_at")
    search_fields = ("user__username", "user__email")
    raw_id_fields = ("user",)
    readonly_fields = ("user", "event_id", "kind", "data", "created_at")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
