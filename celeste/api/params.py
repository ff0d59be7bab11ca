from django import forms
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
