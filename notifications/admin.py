from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from celeste.admin import Item, ReadOnlyAdminMixin, action_hidden, confirmation_page, confirmed
from orders.models import Order

from .campaigns import (
    CAMPAIGN_FIELDS,
    CampaignError,
    campaign_audience_summary,
    campaign_create,
    campaign_progress_report,
    campaign_send_test,
    campaign_start,
    campaign_template,
    campaign_update,
)
from .models import (
    Campaign,
    CampaignRecipient,
    CampaignStatus,
    Delivery,
    Notification,
    NotificationPreference,
    PushSubscription,
    RecipientStatus,
    StreamEvent,
)


class DeliveryInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = Delivery
    extra = 0
    readonly_fields = ("channel", "status", "attempts", "last_error", "sent_at", "updated_at")


class OrderNotificationInline(ReadOnlyAdminMixin, admin.TabularInline):
    """The order page's notifications, each with its deliveries (channel, status, error)."""

    model = Notification
    extra = 0
    show_change_link = True
    fields = ("title", "event", "created_at", "read_at", "deliveries")
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("deliveries")

    @admin.display(description="deliveries")
    def deliveries(self, notification):
        rows = [
            (d.channel, d.status, f" ({d.last_error[:80]})" if d.last_error else "")
            for d in notification.deliveries.all()
        ]
        return format_html_join(format_html("<br>"), "{}: {}{}", rows) or "-"


def _attach_order_inline() -> None:
    # The orders app does not know about notifications; we add our box to its admin page.
    order_admin = admin.site._registry.get(Order)
    if order_admin is not None and OrderNotificationInline not in order_admin.inlines:
        order_admin.inlines = (*order_admin.inlines, OrderNotificationInline)


_attach_order_inline()


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
class DeliveryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("notification", "channel", "status", "attempts", "last_error", "sent_at", "updated_at")
    list_filter = ("channel", "status")
    search_fields = ("notification__title", "notification__user__email")


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
    change_form_template = "admin/notifications/campaign/change_form.html"
    # Seconds between reloads of a campaign's page while it is sending.
    refresh_seconds = 5

    def get_actions(self, request):
        # Deleted from its own page only, and only as a draft: a started campaign keeps its history.
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def has_delete_permission(self, request, obj=None):
        if obj is not None and obj.status != CampaignStatus.DRAFT:
            return False
        return super().has_delete_permission(request, obj)

    @admin.display(description="progress")
    def progress(self, campaign):
        report = campaign_progress_report(campaign)
        finish = report["finish_at"]
        return format_html(
            '<span id="campaign-progress">{}% done of {}: queued {}, sent {}, failed {}, skipped {}{}{}</span>',
            report["percent"],
            report["total"],
            report["queued"],
            report["sent"],
            report["failed"],
            report["skipped"],
            f"; {report['per_minute']} per minute" if report["per_minute"] else "",
            f"; estimated finish {finish:%H:%M:%S} UTC" if finish else "",
        )

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
        progress = ["status", "started_at", "finished_at", "progress"] if obj else []
        if obj and obj.status != CampaignStatus.DRAFT:
            return ["subject", "body", "audience", "stores", "ordered_within_days", *progress]
        return progress

    def render_change_form(self, request, context, *args, obj=None, **kwargs):
        if obj is not None:
            context["campaign_send_url"] = obj.status == CampaignStatus.DRAFT and reverse(
                "admin:notifications_campaign_send", args=[obj.id]
            )
            context["refresh_seconds"] = self.refresh_seconds if obj.status == CampaignStatus.SENDING else None
        return super().render_change_form(request, context, *args, obj=obj, **kwargs)

    def get_urls(self):
        send = self.admin_site.admin_view(self.send_view)
        return [path("<int:object_id>/send/", send, name="notifications_campaign_send"), *super().get_urls()]

    def send_view(self, request, object_id):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_change_permission(request):
            raise PermissionDenied
        campaign = get_object_or_404(Campaign, id=object_id)
        page = reverse("admin:notifications_campaign_change", args=[campaign.id])
        return self._send(request, [campaign], hidden=(), cancel_url=page) or HttpResponseRedirect(page)

    def _send(self, request, campaigns, *, hidden, cancel_url=""):
        """Start the campaigns once confirmed; before that, the page saying who gets them."""
        if not confirmed(request):
            items, intro = [], []
            for campaign in campaigns:
                if campaign.status != CampaignStatus.DRAFT:
                    items.append(Item(label=campaign.subject, note=f"already {campaign.status}: left alone"))
                    continue
                summary = campaign_audience_summary(campaign)
                left_out = "; ".join(f"{count} left out: {why}" for why, count in summary["left_out"].items() if count)
                items.append(
                    Item(
                        label=f"{campaign.subject}: {summary['recipients']} recipient(s)",
                        url=reverse("admin:notifications_campaign_change", args=[campaign.id]),
                        note=left_out or "nobody left out",
                    )
                )
            drafts = [c for c in campaigns if c.status == CampaignStatus.DRAFT]
            intro.append("Sending emails every recipient listed; it cannot be undone or sent again.")
            return confirmation_page(
                self,
                request,
                title="Send to the audience?",
                intro=intro,
                items=items,
                hidden=hidden,
                cancel_url=cancel_url,
                confirm_label=f"Yes, send {len(drafts)} campaign(s)",
                can_confirm=bool(drafts),
            )
        for campaign in campaigns:
            try:
                campaign_start(campaign_id=campaign.id)
            except CampaignError as exc:
                self.message_user(request, str(exc), messages.ERROR)
            else:
                self.message_user(request, f"Sending {campaign.subject!r}; progress shows here.", messages.SUCCESS)
        return None

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
        return self._send(request, list(queryset), hidden=action_hidden(request, queryset))


@admin.register(CampaignRecipient)
class CampaignRecipientAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("campaign", "user", "status", "error", "sent_at")
    list_filter = ("status", "campaign")
    search_fields = ("user__email", "user__username")


@admin.register(StreamEvent)
class StreamEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """What each user's live stream carried, kept for replay (read-only: the record)."""

    list_display = ("user", "event_id", "kind", "created_at")
    list_filter = ("kind", "created_at")
    search_fields = ("user__username", "user__email")
    raw_id_fields = ("user",)
