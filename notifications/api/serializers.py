from rest_framework import serializers

from ..models import Channel, Notification, PushSubscription


class NotificationSerializer(serializers.ModelSerializer):
    read = serializers.SerializerMethodField()

    class Meta:
        model = Notification
        fields = ["id", "event", "order", "title", "body", "data", "read", "read_at", "created_at"]

    def get_read(self, notification) -> bool:
        return notification.read_at is not None


class PreferenceSerializer(serializers.Serializer):
    channel = serializers.ChoiceField(choices=Channel.choices)
    enabled = serializers.BooleanField()


class ChannelRateSerializer(serializers.Serializer):
    attempted = serializers.IntegerField()
    sent = serializers.IntegerField()
    rate = serializers.FloatField(allow_null=True, help_text="sent / attempted; null when nothing was attempted.")


class DeliveryRatesSerializer(serializers.Serializer):
    """The answer of delivery-rates (for the schema): one entry per channel."""

    email = ChannelRateSerializer()
    push = ChannelRateSerializer()
    in_app = ChannelRateSerializer()


class PushKeysSerializer(serializers.Serializer):
    # The keys themselves (a P-256 point, a 16-byte secret) are checked by the service.
    p256dh = serializers.CharField(max_length=200)
    auth = serializers.CharField(max_length=100)


class PushSubscriptionSerializer(serializers.ModelSerializer):
    endpoint = serializers.URLField(max_length=1000)
    keys = PushKeysSerializer(write_only=True)

    class Meta:
        model = PushSubscription
        fields = ["id", "endpoint", "keys", "active", "last_success_at", "created_at"]
        read_only_fields = ["active", "last_success_at", "created_at"]
