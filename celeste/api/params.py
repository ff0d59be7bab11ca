from datetime import UTC

import django_filters
from django import forms
from django_filters.fields import IsoDateTimeField
from rest_framework.exceptions import ValidationError


class StrictBooleanField(forms.Field):
    """true/false/1/0/yes/no; anything else is a 400 rather than silently ignored."""

    def to_python(self, value):
        if value in (None, ""):
            return None
        text = str(value).strip().lower()
        if text in {"true", "1", "yes"}:
            return True
        if text in {"false", "0", "no"}:
            return False
        raise forms.ValidationError("Expected true or false.")


def boolean_param(request, name: str) -> bool | None:
    try:
        return StrictBooleanField(required=False).clean(request.query_params.get(name))
    except forms.ValidationError as exc:
        raise ValidationError({name: exc.messages}) from None


class UtcIsoDateTimeField(IsoDateTimeField):
    """An ISO 8601 datetime, converted to UTC. Python accepts offsets up to ±23:59 and
    Postgres only up to ±15:59 (a DataError, a 500); in UTC any valid instant is fine.
    An instant outside Python's years 1–9999 once in UTC is invalid (a 400)."""

    def to_python(self, value):
        parsed = super().to_python(value)
        if parsed is None or parsed.tzinfo is None:
            return parsed
        try:
            return parsed.astimezone(UTC)
        except OverflowError:
            raise forms.ValidationError("Out of range once converted to UTC.", code="invalid") from None


class UtcIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UtcIsoDateTimeField
